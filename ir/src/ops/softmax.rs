//! `nn.softmax`: normalized exponentials along one axis.
//!
//! Syntax: `%p = nn.softmax %s {axis = -1} : tensor<4xTxTxf32>` (`axis` defaults to -1).
//!
//! Math: `y_i = exp(x_i - m) / Σ_j exp(x_j - m)` with `m = max_j x_j` along `axis`. Computed in f64 and
//! rounded once to the element type (float only). The result has the operand's type.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, require_float};
use crate::attr::{AttrKind, AttrSpec};
use crate::shape::normalize_axis;
use crate::tensor::Data;
use crate::types::TensorType;
use bitnet_numerics::exp;

/// `nn.softmax`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.softmax",
    operands: Arity::Exactly(1),
    results: 1,
    attrs: &[AttrSpec::opt("axis", AttrKind::Int)],
};

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    require_float("the operand", &x)?;
    normalize_axis(cx.attrs.int_or("axis", -1), x.rank())?;
    Ok(vec![x])
}

/// Splits `shape` around `axis` into (outer, len, inner) element counts.
pub(crate) fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    let axis = normalize_axis(cx.attrs.int_or("axis", -1), x.shape.len())?;
    let (outer, len, inner) = split_axis(&x.shape, axis);
    let v = x.data.to_f64();
    let mut out = vec![0f64; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| o * len * inner + k * inner + i;
            let m = (0..len).map(|k| v[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..len).map(|k| exp(v[at(k)] - m)).sum();
            for k in 0..len {
                out[at(k)] = exp(v[at(k)] - m) / sum;
            }
        }
    }
    one(&x.shape, Data::from_f64(x.elem(), out))
}

/// Gradient rule: `gx = y ⊙ (g − Σ_k g_k y_k)` along the axis, with `y` recomputed in f64.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let x = cx.input(0)?;
    let axis = normalize_axis(cx.attrs.int_or("axis", -1), x.shape.len())?;
    let (outer, len, inner) = split_axis(&x.shape, axis);
    let v = x.data.to_f64();
    let g = cx.cotangent(0)?;
    let mut gx = vec![0f64; v.len()];
    let mut y = vec![0f64; len];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| o * len * inner + k * inner + i;
            let m = (0..len).map(|k| v[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..len).map(|k| exp(v[at(k)] - m)).sum();
            for (k, yk) in y.iter_mut().enumerate() {
                *yk = exp(v[at(k)] - m) / sum;
            }
            let dot: f64 = (0..len).map(|k| g[at(k)] * y[k]).sum();
            for (k, yk) in y.iter().enumerate() {
                gx[at(k)] = yk * (g[at(k)] - dot);
            }
        }
    }
    Ok(vec![Some(gx)])
}
