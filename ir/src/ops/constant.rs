//! Constants: `nn.constant` (a small literal printed inline) and `nn.weight` (a reference to a named
//! tensor in the weight store, so IR text never holds megabytes).
//!
//! Syntax:
//! - `%c = nn.constant {value = [1.0, 2.0]} : tensor<2xf32>`: `value` holds every element in row-major
//!   order, or one element that fills the whole (static) shape.
//! - `%w = nn.weight {name = "model.layers.0.mlp.up_proj.weight"} : tensor<6912x2560xternary>`: the
//!   store converts what it holds to the declared type (f16/bf16 widen to f32; i8 {-1,0,1} becomes
//!   ternary); a packed ternary weight is `tensor<NxKxternary>`, 2-bit codes in storage.
//!
//! Both results must have a static shape.

use super::{
    Arity, EvalCtx, EvalResult, InferCtx, OpSpec, declared, one, result_elem, result_shape,
};
use crate::attr::{Attr, AttrKind, AttrSpec};
use crate::tensor::{Data, checked_numel};
use crate::types::TensorType;

/// `nn.constant`.
pub const CONSTANT: OpSpec = OpSpec {
    name: "nn.constant",
    operands: Arity::Exactly(0),
    results: 1,
    attrs: &[AttrSpec::req("value", AttrKind::Numbers)],
};

/// `nn.weight`.
pub const WEIGHT: OpSpec = OpSpec {
    name: "nn.weight",
    operands: Arity::Exactly(0),
    results: 1,
    attrs: &[AttrSpec::req("name", AttrKind::Str)],
};

fn static_numel(ty: &TensorType) -> Result<u64, String> {
    let shape = ty
        .static_shape()
        .ok_or_else(|| format!("the result needs a static shape, found {ty}"))?;
    shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("{ty} has too many elements"))
}

fn value_len(attr: Option<&Attr>) -> usize {
    match attr {
        Some(Attr::Ints(v)) => v.len(),
        Some(Attr::Floats(v)) => v.len(),
        _ => 0,
    }
}

/// Type rule of `nn.constant`.
pub fn infer_constant(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let ty = declared(cx, 0)?;
    let n = static_numel(&ty)?;
    let given = value_len(cx.attrs.get("value"));
    if given as u64 != n && given != 1 {
        return Err(format!("value has {given} elements but {ty} holds {n}"));
    }
    if let Some(Attr::Floats(_)) = cx.attrs.get("value")
        && !ty.elem.is_float()
    {
        return Err(format!("float values for a constant of type {ty}"));
    }
    if let Some(Attr::Ints(v)) = cx.attrs.get("value") {
        let (lo, hi) = crate::types::int_range(ty.elem);
        if let Some(bad) = v.iter().find(|x| !(lo..=hi).contains(*x)) {
            return Err(format!(
                "the value {bad} does not fit in {} (range {lo}..={hi})",
                ty.elem
            ));
        }
    }
    Ok(vec![ty])
}

/// Type rule of `nn.weight`.
pub fn infer_weight(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let ty = declared(cx, 0)?;
    static_numel(&ty)?;
    if cx.attrs.str("name").is_some_and(str::is_empty) {
        return Err("the weight name is empty".into());
    }
    Ok(vec![ty])
}

/// Reference evaluation of `nn.constant`.
pub fn eval_constant(cx: &EvalCtx) -> EvalResult {
    let shape = result_shape(cx, 0)?;
    let elem = result_elem(cx, 0)?;
    let n = checked_numel(shape).ok_or("constant too large")?;
    let data = match cx.attrs.get("value") {
        Some(Attr::Floats(v)) => {
            // Each literal rounds once, from its f64 text value to the element type.
            let vals: Vec<f64> = if v.len() == 1 {
                vec![v[0]; n]
            } else {
                v.clone()
            };
            Data::from_f64(elem, vals)
        }
        Some(Attr::Ints(v)) => {
            let vals: Vec<i64> = if v.len() == 1 {
                vec![v[0]; n]
            } else {
                v.clone()
            };
            Data::from_i64(elem, vals)
        }
        _ => return Err("missing `value`".into()),
    };
    one(shape, data)
}

/// Reference evaluation of `nn.weight`.
pub fn eval_weight(cx: &EvalCtx) -> EvalResult {
    let shape = result_shape(cx, 0)?;
    let elem = result_elem(cx, 0)?;
    let name = cx.attrs.str("name").ok_or("missing `name`")?;
    let t = cx
        .weights
        .load(name, elem, shape)
        .map_err(|e| e.to_string())?;
    if t.shape != shape || t.elem() != elem {
        return Err(format!(
            "the weight store returned {} for weight \"{name}\", declared {elem} {shape:?}",
            t.ty()
        ));
    }
    Ok(vec![t])
}

/// Gradient rule of `nn.constant`: it has no operands (a literal is not trained).
pub fn vjp_constant(_cx: &super::VjpCtx) -> super::VjpResult {
    Ok(Vec::new())
}

/// Gradient rule of `nn.weight`: it has no operands; the cotangent of its result is the gradient of
/// the named weight, which the reverse sweep (`autodiff`) collects by name.
pub fn vjp_weight(_cx: &super::VjpCtx) -> super::VjpResult {
    Ok(Vec::new())
}
