//! `nn.clip`: clamp every element into `[min, max]`.
//!
//! Syntax: `%y = nn.clip %x {max = 127.0, min = -128.0} : tensor<Tx128xf32>`; either bound may be
//! absent (no bound on that side).
//!
//! Math: `y = min(max(x, min), max)`; NaN stays NaN. Floats and integers (bounds convert to the element
//! type by truncation). The result has the operand's type.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand};
use crate::attr::{AttrKind, AttrSpec};
use crate::tensor::Data;
use crate::types::TensorType;

/// `nn.clip`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.clip",
    operands: Arity::Exactly(1),
    results: 1,
    attrs: &[
        AttrSpec::opt("min", AttrKind::Float),
        AttrSpec::opt("max", AttrKind::Float),
    ],
};

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    if !(x.elem.is_float() || x.elem.is_int()) {
        return Err(format!("the operand must be numeric, found {x}"));
    }
    if let (Some(lo), Some(hi)) = (cx.attrs.float("min"), cx.attrs.float("max"))
        && lo > hi
    {
        return Err(format!("min ({lo:?}) is greater than max ({hi:?})"));
    }
    Ok(vec![x])
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    let lo = cx.attrs.float("min");
    let hi = cx.attrs.float("max");
    let elem = x.elem();
    let data = if elem.is_float() {
        let v = x
            .data
            .to_f64()
            .into_iter()
            .map(|v| {
                if v.is_nan() {
                    return v;
                }
                let v = lo.map_or(v, |l| v.max(l));
                hi.map_or(v, |h| v.min(h))
            })
            .collect();
        Data::from_f64(elem, v)
    } else {
        // Bounds outside the element type's range saturate to it, so the result never wraps.
        let (tmin, tmax) = crate::types::int_range(elem);
        let fit = |v: f64| (v as i64).clamp(tmin, tmax);
        let (lo, hi) = (lo.map(fit), hi.map(fit));
        let v = x
            .data
            .to_i64()
            .into_iter()
            .map(|v| {
                let v = lo.map_or(v, |l| v.max(l));
                hi.map_or(v, |h| v.min(h))
            })
            .collect();
        Data::from_i64(elem, v)
    };
    one(&x.shape, data)
}

/// Gradient rule: `g` where `min ≤ x ≤ max` (bounds included, as torch's clamp), 0 outside; none for
/// integers.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let x = cx.input(0)?;
    if !x.elem().is_float() {
        return Ok(vec![None]);
    }
    let (lo, hi) = (cx.attrs.float("min"), cx.attrs.float("max"));
    let g = cx.cotangent(0)?;
    let gx = x
        .data
        .to_f64()
        .iter()
        .zip(g.iter())
        .map(|(&v, &gv)| {
            let inside = lo.is_none_or(|l| v >= l) && hi.is_none_or(|h| v <= h);
            if inside { gv } else { 0.0 }
        })
        .collect();
    Ok(vec![Some(gx)])
}
