//! `nn.stop_gradient`: the identity, through which no gradient flows (torch's `.detach()`).
//!
//! Syntax: `%y = nn.stop_gradient %x : tensor<Tx256xf32>`.
//!
//! Math: `y = x` (any element type, same type). Its gradient rule returns none, which is how a graph
//! states the straight-through estimator of quantization-aware training exactly as BitNet's recipe
//! writes it: `x + stop_gradient(quant(x) − x)` computes `quant(x)` forward and passes the gradient
//! of `x` unchanged backward. Inference ignores it (the passes fold it away; backends treat it as a
//! view).

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, operand};
use crate::types::TensorType;

/// `nn.stop_gradient`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.stop_gradient",
    operands: Arity::Exactly(1),
    results: 1,
    attrs: &[],
};

/// Type rule: the operand's type.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    Ok(vec![operand(cx, 0)?])
}

/// Reference evaluation: a copy of the operand.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    Ok(vec![cx.input(0)?.clone()])
}

/// Gradient rule: none flows through.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    cx.input(0)?;
    Ok(vec![None])
}
