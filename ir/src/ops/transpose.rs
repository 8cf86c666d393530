//! `nn.transpose`: permute axes.
//!
//! Syntax: `%y = nn.transpose %x {perm = [1, 0, 2]} : tensor<4xTx32xf32>`.
//!
//! Math: `y[i_0, …, i_{n-1}] = x[j]` with `j[perm[k]] = i_k`, i.e. result axis k is operand axis
//! `perm[k]`. `perm` must be a permutation of `0..rank`.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, result_shape};
use crate::attr::{AttrKind, AttrSpec};
use crate::shape::for_each_index;
use crate::tensor::strides;
use crate::types::TensorType;

/// `nn.transpose`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.transpose",
    operands: Arity::Exactly(1),
    results: 1,
    attrs: &[AttrSpec::req("perm", AttrKind::Ints)],
};

fn perm_of(perm: &[i64], rank: usize) -> Result<Vec<usize>, String> {
    let mut seen = vec![false; rank];
    if perm.len() != rank {
        return Err(format!(
            "perm {perm:?} has {} entries but the operand has rank {rank}",
            perm.len()
        ));
    }
    perm.iter()
        .map(|&p| {
            let i = usize::try_from(p).ok().filter(|&i| i < rank && !seen[i]);
            match i {
                Some(i) => {
                    seen[i] = true;
                    Ok(i)
                }
                None => Err(format!("perm {perm:?} is not a permutation of 0..{rank}")),
            }
        })
        .collect()
}

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    let perm = perm_of(cx.attrs.ints("perm").unwrap_or(&[]), x.rank())?;
    Ok(vec![TensorType::new(
        perm.iter().map(|&p| x.dims[p].clone()).collect(),
        x.elem,
    )])
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    let perm = perm_of(cx.attrs.ints("perm").unwrap_or(&[]), x.shape.len())?;
    let out_shape = result_shape(cx, 0)?;
    let xs = strides(&x.shape);
    let mut idx = Vec::with_capacity(x.numel());
    for_each_index(out_shape, |i| {
        idx.push(i.iter().zip(&perm).map(|(&v, &p)| v * xs[p]).sum())
    });
    one(out_shape, x.data.take(&idx))
}
