//! Indexing ops: `nn.gather` (ONNX Gather) and `nn.embedding` (rows of a table).
//!
//! Syntax: `%y = nn.gather %data, %idx {axis = 0} : ...`; `%h = nn.embedding %table, %ids : tensor<Tx2560xf32>`.
//!
//! Math: gather: `y[a.., i.., b..] = data[a.., idx[i..], b..]` along `axis` (the result shape is
//! `data.shape[..axis] ++ idx.shape ++ data.shape[axis+1..]`); negative indices count from the end.
//! embedding: `y[i.., :] = table[ids[i..], :]` for a rank-2 table (ids must be in `0..vocab`). Indices are i32 or i64; an index out
//! of range is an error at run time, never a wrap.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, result_shape};
use crate::attr::{AttrKind, AttrSpec};
use crate::shape::normalize_axis;
use crate::types::{ElemType, TensorType};

/// `nn.gather`.
pub const GATHER: OpSpec = OpSpec {
    name: "nn.gather",
    operands: Arity::Exactly(2),
    results: 1,
    attrs: &[AttrSpec::opt("axis", AttrKind::Int)],
};
/// `nn.embedding`.
pub const EMBEDDING: OpSpec = OpSpec {
    name: "nn.embedding",
    operands: Arity::Exactly(2),
    results: 1,
    attrs: &[],
};

fn check_indices(t: &TensorType) -> Result<(), String> {
    if matches!(t.elem, ElemType::I32 | ElemType::I64) {
        Ok(())
    } else {
        Err(format!("indices must be i32 or i64, found {t}"))
    }
}

/// Type rule of `nn.gather`.
pub fn infer_gather(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let data = operand(cx, 0)?;
    let idx = operand(cx, 1)?;
    check_indices(&idx)?;
    let axis = normalize_axis(cx.attrs.int_or("axis", 0), data.rank())?;
    let mut dims = data.dims[..axis].to_vec();
    dims.extend(idx.dims.iter().cloned());
    dims.extend(data.dims[axis + 1..].iter().cloned());
    Ok(vec![TensorType::new(dims, data.elem)])
}

/// Type rule of `nn.embedding`.
pub fn infer_embedding(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let table = operand(cx, 0)?;
    let ids = operand(cx, 1)?;
    check_indices(&ids)?;
    if table.rank() != 2 {
        return Err(format!(
            "the table must have rank 2 ([vocab, hidden]), found {table}"
        ));
    }
    let mut dims = ids.dims.clone();
    dims.push(table.dims[1].clone());
    if !table.elem.is_float() {
        return Err(format!(
            "the table must have a float element type, found {table}"
        ));
    }
    Ok(vec![TensorType::new(dims, table.elem)])
}

fn gather(cx: &EvalCtx, axis: i64, allow_negative: bool) -> EvalResult {
    let data = cx.input(0)?;
    let idx = cx.input(1)?;
    let axis = normalize_axis(axis, data.shape.len())?;
    let outer: usize = data.shape[..axis].iter().product();
    let n = data.shape[axis];
    let inner: usize = data.shape[axis + 1..].iter().product();
    let ids = idx.data.to_i64();
    let mut pos = Vec::with_capacity(outer * ids.len() * inner);
    for o in 0..outer {
        for &raw in &ids {
            if !allow_negative && (raw < 0 || raw >= n as i64) {
                return Err(format!("token id {raw} is outside the vocabulary (0..{n})"));
            }
            let i = if raw < 0 { raw + n as i64 } else { raw };
            if i < 0 || i >= n as i64 {
                return Err(format!(
                    "index {raw} is out of range for an axis of size {n}"
                ));
            }
            let base = (o * n + i as usize) * inner;
            pos.extend(base..base + inner);
        }
    }
    one(result_shape(cx, 0)?, data.data.take(&pos))
}

/// Reference evaluation of `nn.gather`.
pub fn eval_gather(cx: &EvalCtx) -> EvalResult {
    gather(cx, cx.attrs.int_or("axis", 0), true)
}

/// Reference evaluation of `nn.embedding`.
pub fn eval_embedding(cx: &EvalCtx) -> EvalResult {
    gather(cx, 0, false)
}

/// Gradient rule of `nn.gather`: scatter-add into the data (a row picked twice gets both
/// cotangents); none for the indices.
pub fn vjp_gather(cx: &super::VjpCtx) -> super::VjpResult {
    super::grad::vjp_data_movement(super::OpKind::Gather, cx, &[0])
}

/// Gradient rule of `nn.embedding`: each token's cotangent added into its table row; none for the
/// token ids.
pub fn vjp_embedding(cx: &super::VjpCtx) -> super::VjpResult {
    super::grad::vjp_data_movement(super::OpKind::Embedding, cx, &[0])
}
