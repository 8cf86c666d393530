//! `nn.concat`: join tensors along one axis.
//!
//! Syntax: `%y = nn.concat %a, %b {axis = -1} : tensor<Tx64xf32>`.
//!
//! Math: the operands are laid end to end along `axis`; every other dimension must be equal, and so
//! must the element types. The result's `axis` dimension is the sum, so with two or more operands
//! that axis must be static in each.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, result_shape};
use crate::attr::{AttrKind, AttrSpec};
use crate::shape::normalize_axis;
use crate::tensor::Data;
use crate::types::{Dim, TensorType};

/// `nn.concat`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.concat",
    operands: Arity::AtLeast(1),
    results: 1,
    attrs: &[AttrSpec::req("axis", AttrKind::Int)],
};

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let first = cx.operands.first().ok_or("needs at least one operand")?;
    let axis = normalize_axis(cx.attrs.int_or("axis", 0), first.rank())?;
    if cx.operands.len() == 1 {
        return Ok(vec![first.clone()]);
    }
    let mut total = 0u64;
    for (k, t) in cx.operands.iter().enumerate() {
        if t.elem != first.elem || t.rank() != first.rank() {
            return Err(format!(
                "operand {k} ({t}) does not match operand 0 ({first})"
            ));
        }
        for (i, (a, b)) in t.dims.iter().zip(&first.dims).enumerate() {
            if i != axis && a != b {
                return Err(format!(
                    "operand {k} ({t}) differs from operand 0 ({first}) in axis {i}"
                ));
            }
        }
        match &t.dims[axis] {
            Dim::Static(n) => total = total.checked_add(*n).ok_or("concatenated size overflows")?,
            Dim::Sym(s) => {
                return Err(format!(
                    "cannot concatenate along the symbolic dimension {s}"
                ));
            }
        }
    }
    let mut dims = first.dims.clone();
    dims[axis] = Dim::Static(total);
    Ok(vec![TensorType::new(dims, first.elem)])
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let first = cx.input(0)?;
    let axis = normalize_axis(cx.attrs.int_or("axis", 0), first.shape.len())?;
    let outer: usize = first.shape[..axis].iter().product();
    let mut pieces: Vec<Data> = Vec::new();
    for o in 0..outer {
        for t in cx.inputs {
            let chunk: usize = t.shape[axis..].iter().product();
            let idx: Vec<usize> = (o * chunk..(o + 1) * chunk).collect();
            pieces.push(t.data.take(&idx));
        }
    }
    let refs: Vec<&Data> = pieces.iter().collect();
    let data = match Data::concat(&refs) {
        Some(d) => d,
        None => first.data.take(&[]),
    };
    one(result_shape(cx, 0)?, data)
}

/// Gradient rule: each operand gets its own window of the cotangent (a data-movement rule).
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let all: Vec<usize> = (0..cx.inputs.len()).collect();
    super::grad::vjp_data_movement(super::OpKind::Concat, cx, &all)
}
