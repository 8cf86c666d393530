//! `bit.silu_mul`: the SiLU-gated MLP activation (Llama's `silu(gate) · up`) in one elementwise op.
//!
//! Syntax: `%h = bit.silu_mul %g, %u : tensor<Tx6912xf32>`.
//!
//! Math: exactly `nn.mul(nn.silu(g), u)` with its roundings, so fusing never changes a result:
//! `s = g·σ(g)` computed in f64 from the f32 gate (σ as `nn.sigmoid` computes it, see
//! `unary::sigmoid`) and rounded to f32, then `h = s · u` computed in f64 and rounded once to f32,
//! which is the IEEE f32 product.
//! Type rule: `g` and `u` are f32 tensors of the same shape; the result has that type.

use super::unary::silu;
use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand};
use crate::tensor::Data;
use crate::types::{ElemType, TensorType};

/// `bit.silu_mul`.
pub const SPEC: OpSpec = OpSpec {
    name: "bit.silu_mul",
    operands: Arity::Exactly(2),
    results: 1,
    attrs: &[],
};

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let g = operand(cx, 0)?;
    let u = operand(cx, 1)?;
    if g.elem != ElemType::F32 || u.elem != ElemType::F32 {
        return Err(format!(
            "the gate and the up operand must be f32, found {g} and {u}"
        ));
    }
    if g.dims != u.dims {
        return Err(format!(
            "the gate and the up operand must have the same shape, found {g} and {u}"
        ));
    }
    Ok(vec![g])
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let g = cx.input(0)?;
    let u = cx.input(1)?;
    // The gate's silu, rounded to f32 as the unfused `nn.silu` stores it.
    let s = Data::from_f64(
        ElemType::F32,
        g.data.to_f64().into_iter().map(silu).collect(),
    )
    .to_f64();
    let v: Vec<f64> = s.iter().zip(u.data.to_f64()).map(|(s, u)| s * u).collect();
    one(&g.shape, Data::from_f64(ElemType::F32, v))
}

/// Gradient rule, as `nn.mul(nn.silu(g), u)`: `gg = go·u·σ(g)·(1 + g·(1 − σ(g)))`,
/// `gu = go·g·σ(g)`.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let (g, u) = (cx.input(0)?, cx.input(1)?);
    let go = cx.cotangent(0)?;
    let (gv, uv) = (g.data.to_f64(), u.data.to_f64());
    let mut dg = Vec::with_capacity(go.len());
    let mut du = Vec::with_capacity(go.len());
    for ((&x, &y), &gk) in gv.iter().zip(&uv).zip(go.iter()) {
        let s = super::unary::sigmoid(x);
        dg.push(gk * y * s * (1.0 + x * (1.0 - s)));
        du.push(gk * silu(x));
    }
    Ok(vec![Some(dg), Some(du)])
}
