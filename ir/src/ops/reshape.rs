//! Shape ops that do not reorder elements, and broadcast: `nn.reshape`, `nn.unsqueeze`, `nn.squeeze`,
//! `nn.expand`.
//!
//! Syntax:
//! - `%y = nn.reshape %x : tensor<Tx4x32xf32>`: the target shape is the declared result type; it must
//!   hold the same number of elements (same static product, same symbols).
//! - `%y = nn.unsqueeze %x {axes = [0]} : ...`: inserts size-1 axes at `axes` (positions in the result).
//! - `%y = nn.squeeze %x {axes = [0]} : ...`: removes size-1 axes (all static 1s if `axes` is absent).
//! - `%y = nn.expand %x : tensor<4x9x32xf32>`: numpy-broadcasts `x` to the declared result shape.
//!
//! Math: reshape, unsqueeze and squeeze keep the row-major element order; expand repeats along
//! broadcast axes. Element types are unchanged.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, declared, one, operand, result_shape};
use crate::attr::{AttrKind, AttrSpec};
use crate::shape::{broadcast, broadcast_index_map, normalize_axes, same_numel};
use crate::types::{Dim, TensorType};

/// `nn.reshape`.
pub const RESHAPE: OpSpec = OpSpec {
    name: "nn.reshape",
    operands: Arity::Exactly(1),
    results: 1,
    attrs: &[],
};
/// `nn.unsqueeze`.
pub const UNSQUEEZE: OpSpec = OpSpec {
    name: "nn.unsqueeze",
    operands: Arity::Exactly(1),
    results: 1,
    attrs: &[AttrSpec::req("axes", AttrKind::Ints)],
};
/// `nn.squeeze`.
pub const SQUEEZE: OpSpec = OpSpec {
    name: "nn.squeeze",
    operands: Arity::Exactly(1),
    results: 1,
    attrs: &[AttrSpec::opt("axes", AttrKind::Ints)],
};
/// `nn.expand`.
pub const EXPAND: OpSpec = OpSpec {
    name: "nn.expand",
    operands: Arity::Exactly(1),
    results: 1,
    attrs: &[],
};

/// Type rule of `nn.reshape`.
pub fn infer_reshape(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    let y = declared(cx, 0)?;
    if y.elem != x.elem {
        return Err(format!(
            "reshape cannot change the element type ({x} to {y})"
        ));
    }
    if !same_numel(&x.dims, &y.dims) {
        return Err(format!(
            "cannot reshape {x} to {y}: the element counts differ"
        ));
    }
    Ok(vec![y])
}

/// Type rule of `nn.unsqueeze`.
pub fn infer_unsqueeze(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    let axes = cx.attrs.ints("axes").unwrap_or(&[]);
    let rank = x.rank() + axes.len();
    let axes = normalize_axes(axes, rank).map_err(|m| {
        format!(
            "{m} (the result's rank, {} + {} new axes)",
            x.rank(),
            axes.len()
        )
    })?;
    let mut rest = x.dims.iter();
    let dims = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                Dim::Static(1)
            } else {
                rest.next().cloned().unwrap_or(Dim::Static(1))
            }
        })
        .collect();
    Ok(vec![TensorType::new(dims, x.elem)])
}

/// Type rule of `nn.squeeze`.
pub fn infer_squeeze(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    let axes = match cx.attrs.ints("axes") {
        Some(a) => normalize_axes(a, x.rank())?,
        None => (0..x.rank()).filter(|&i| x.dims[i].is_one()).collect(),
    };
    for &a in &axes {
        if !x.dims[a].is_one() {
            return Err(format!(
                "cannot squeeze axis {a} of {x}: its size is {}, not 1",
                x.dims[a]
            ));
        }
    }
    let dims = x
        .dims
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| d.clone())
        .collect();
    Ok(vec![TensorType::new(dims, x.elem)])
}

/// Type rule of `nn.expand`.
pub fn infer_expand(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    let y = declared(cx, 0)?;
    if y.elem != x.elem {
        return Err(format!(
            "expand cannot change the element type ({x} to {y})"
        ));
    }
    if x.rank() > y.rank() || broadcast(&x.dims, &y.dims)? != y.dims {
        return Err(format!("{x} does not broadcast to {y}"));
    }
    Ok(vec![y])
}

/// Reference evaluation of reshape, unsqueeze and squeeze: same elements, new shape.
pub fn eval_view(cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    one(result_shape(cx, 0)?, x.data.clone())
}

/// Reference evaluation of `nn.expand`.
pub fn eval_expand(cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    let shape = result_shape(cx, 0)?;
    one(shape, x.data.take(&broadcast_index_map(shape, &x.shape)))
}
