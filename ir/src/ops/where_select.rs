//! `nn.where`: elementwise select.
//!
//! Syntax: `%y = nn.where %cond, %a, %b : tensor<TxTxf32>`.
//!
//! Math: `y = cond ? a : b`, all three numpy-broadcast together. `cond` is bool; `a` and `b` have the
//! same element type, which the result keeps.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, result_shape};
use crate::shape::{broadcast, broadcast_index_map};
use crate::types::{ElemType, TensorType};

/// `nn.where`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.where",
    operands: Arity::Exactly(3),
    results: 1,
    attrs: &[],
};

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let c = operand(cx, 0)?;
    let a = operand(cx, 1)?;
    let b = operand(cx, 2)?;
    if c.elem != ElemType::Bool {
        return Err(format!("the condition must be bool, found {c}"));
    }
    if a.elem != b.elem {
        return Err(format!(
            "the two branches differ in element type: {a} and {b}"
        ));
    }
    let dims = broadcast(&broadcast(&c.dims, &a.dims)?, &b.dims)?;
    Ok(vec![TensorType::new(dims, a.elem)])
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let (c, a, b) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let shape = result_shape(cx, 0)?;
    let cond = c.data.to_i64();
    let mc = broadcast_index_map(shape, &c.shape);
    let ma = broadcast_index_map(shape, &a.shape);
    let mb = broadcast_index_map(shape, &b.shape);
    // Select from the concatenation [a; b]: index i of a, or len(a) + j of b.
    let both = crate::tensor::Data::concat(&[&a.data, &b.data]).ok_or("branch types differ")?;
    let n = a.numel();
    let idx: Vec<usize> = (0..mc.len())
        .map(|k| if cond[mc[k]] != 0 { ma[k] } else { n + mb[k] })
        .collect();
    one(shape, both.take(&idx))
}

/// Gradient rule: `g` goes to `a` where the condition holds and to `b` elsewhere (each summed to its
/// own shape); none for the condition.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    use super::grad::{if_float, unbroadcast};
    let (c, a, b) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let out = cx.output(0)?;
    let g = cx.cotangent(0)?;
    let cond = c.data.to_i64();
    let mc = crate::shape::broadcast_index_map(&out.shape, &c.shape);
    let (mut ga, mut gb) = (vec![0f64; g.len()], vec![0f64; g.len()]);
    for (k, &gv) in g.iter().enumerate() {
        if cond[mc[k]] != 0 {
            ga[k] = gv;
        } else {
            gb[k] = gv;
        }
    }
    Ok(vec![
        None,
        if_float(a, unbroadcast(&ga, &out.shape, &a.shape)),
        if_float(b, unbroadcast(&gb, &out.shape, &b.shape)),
    ])
}
