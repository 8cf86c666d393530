//! One ONNX node as the converters see it: its op type, input handles (absent optional inputs are
//! `None`), output names and typed access to its attributes with the ONNX defaults.

use super::proto::{AttributeProto, TensorProto};
use super::values::H;

/// A node being converted.
pub(crate) struct NodeCx<'n> {
    /// The op type (`MatMul`).
    pub op: &'n str,
    /// Input handles; `None` for an empty name (an omitted optional input).
    pub inputs: Vec<Option<H>>,
    /// Output names (empty for an omitted optional output).
    pub outputs: &'n [String],
    /// The attributes.
    pub attrs: &'n [AttributeProto],
}

impl NodeCx<'_> {
    /// Required input `i`.
    pub fn input(&self, i: usize) -> Result<H, String> {
        self.opt_input(i)
            .ok_or_else(|| format!("input {i} is missing ({} needs it)", self.op))
    }

    /// Optional input `i`.
    pub fn opt_input(&self, i: usize) -> Option<H> {
        self.inputs.get(i).copied().flatten()
    }

    /// True if output `i` is requested (present with a non-empty name).
    pub fn wants_output(&self, i: usize) -> bool {
        self.outputs.get(i).is_some_and(|n| !n.is_empty())
    }

    /// The attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attrs.iter().find(|a| a.name() == name)
    }

    /// An integer attribute, or `default`.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).and_then(|a| a.i).unwrap_or(default)
    }

    /// A float attribute, or `default`.
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).and_then(|a| a.f).unwrap_or(default)
    }

    /// An integer-list attribute, if present.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    /// A tensor attribute, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorProto> {
        self.attr(name).and_then(|a| a.t.as_ref())
    }

    /// A required integer attribute.
    pub fn required_int(&self, name: &str) -> Result<i64, String> {
        self.attr(name)
            .and_then(|a| a.i)
            .ok_or_else(|| format!("the `{name}` attribute is missing"))
    }
}
