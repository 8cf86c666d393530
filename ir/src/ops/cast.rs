//! `nn.cast`: convert elements to another type.
//!
//! Syntax: `%y = nn.cast %x {to = i8} : tensor<Tx128xi8>`.
//!
//! Math: float → float rounds to nearest even; float → integer truncates toward zero and saturates to
//! the target range (NaN → 0), so a cast to i8 after a clip to [-128, 127] is exact; integer → integer
//! wraps (two's complement, as ONNX and numpy); anything → bool is `x != 0`; bool → number is 0 or 1;
//! ternary → number is its value. Casting *to* ternary is not allowed: ternary values come from weights.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand};
use crate::attr::{AttrKind, AttrSpec};
use crate::tensor::Data;
use crate::types::{ElemType, TensorType};

/// `nn.cast`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.cast",
    operands: Arity::Exactly(1),
    results: 1,
    attrs: &[AttrSpec::req("to", AttrKind::Type)],
};

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    let to = cx.attrs.elem_type("to").ok_or("missing `to`")?;
    if to == ElemType::Ternary {
        return Err("cannot cast to ternary (ternary tensors come from `nn.weight`)".into());
    }
    Ok(vec![x.with_elem(to)])
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    let to = cx.attrs.elem_type("to").ok_or("missing `to`")?;
    let data = if x.elem().is_float() {
        Data::from_f64(to, x.data.to_f64())
    } else {
        Data::from_i64(to, x.data.to_i64())
    };
    one(&x.shape, data)
}

/// Gradient rule: a float-to-float cast passes the cotangent through (the rounding is the identity
/// almost everywhere); no gradient crosses a cast from or to an integer or boolean type.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let x = cx.input(0)?;
    let to = cx.attrs.elem_type("to").ok_or("missing `to`")?;
    if !(x.elem().is_float() && to.is_float()) {
        return Ok(vec![None]);
    }
    Ok(vec![Some(cx.cotangent(0)?.into_owned())])
}
