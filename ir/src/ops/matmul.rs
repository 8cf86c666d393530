//! `nn.matmul`: batched matrix product with numpy broadcasting of the batch axes.
//!
//! Syntax: `%y = nn.matmul %a, %b : tensor<Tx256xf32>`.
//!
//! Math: `y[..., m, n] = Σ_k a[..., m, k] · b[..., k, n]`; both operands have rank ≥ 2, the batch axes
//! (all but the last two) broadcast. Float only; products are summed in f64 and rounded once, so the
//! result does not depend on summation order. Weights of a linear layer are `[in, out]` here (ONNX
//! MatMul); `[out, in]` weights go through `nn.transpose` first.

use super::{
    Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, require_float, result_shape,
};
use crate::shape::{broadcast, broadcast_concrete, broadcast_index_map};
use crate::tensor::Data;
use crate::types::TensorType;

/// `nn.matmul`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.matmul",
    operands: Arity::Exactly(2),
    results: 1,
    attrs: &[],
};

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let a = operand(cx, 0)?;
    let b = operand(cx, 1)?;
    require_float("the left operand", &a)?;
    if a.elem != b.elem {
        return Err(format!("operand element types differ: {a} and {b}"));
    }
    if a.rank() < 2 || b.rank() < 2 {
        return Err(format!("both operands need rank >= 2, found {a} and {b}"));
    }
    let (ra, rb) = (a.rank(), b.rank());
    if a.dims[ra - 1] != b.dims[rb - 2] {
        return Err(format!(
            "contraction sizes differ: {a} has {} columns but {b} has {} rows",
            a.dims[ra - 1],
            b.dims[rb - 2]
        ));
    }
    let mut dims = broadcast(&a.dims[..ra - 2], &b.dims[..rb - 2])?;
    dims.push(a.dims[ra - 2].clone());
    dims.push(b.dims[rb - 1].clone());
    Ok(vec![TensorType::new(dims, a.elem)])
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    let batch = broadcast_concrete(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
    let ia = broadcast_index_map(&batch, &a.shape[..ra - 2]);
    let ib = broadcast_index_map(&batch, &b.shape[..rb - 2]);
    let (x, y) = (a.data.to_f64(), b.data.to_f64());
    let mut out = Vec::with_capacity(ia.len() * m * n);
    for (&ba, &bb) in ia.iter().zip(&ib) {
        let xa = &x[ba * m * k..(ba + 1) * m * k];
        let yb = &y[bb * k * n..(bb + 1) * k * n];
        out.extend(gemm(xa, yb, m, k, n));
    }
    one(result_shape(cx, 0)?, Data::from_f64(a.elem(), out))
}

/// `x [m, k] · y [k, n]` in f64. Each result sums its products in order of `k` from −0.0, exactly as
/// `Iterator::sum` over them does; the loops run row by row so the inner one streams both operands.
pub fn gemm(x: &[f64], y: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![-0.0f64; m * n];
    for (xr, orow) in x.chunks_exact(k.max(1)).zip(out.chunks_exact_mut(n.max(1))) {
        for (&xv, yr) in xr.iter().zip(y.chunks_exact(n.max(1))) {
            for (o, &yv) in orow.iter_mut().zip(yr) {
                *o += xv * yv;
            }
        }
    }
    out
}

/// The transpose of a row-major `[rows, cols]` matrix.
fn transposed(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0f64; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

/// Gradient rule: `ga = g · bᵀ`, `gb = aᵀ · g` per batch, each summed over the batch axes its
/// operand was broadcast along.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let g = cx.cotangent(0)?;
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    let batch = broadcast_concrete(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
    let ia = broadcast_index_map(&batch, &a.shape[..ra - 2]);
    let ib = broadcast_index_map(&batch, &b.shape[..rb - 2]);
    let (x, y) = (a.data.to_f64(), b.data.to_f64());
    let mut ga = vec![0f64; x.len()];
    let mut gb = vec![0f64; y.len()];
    for (o, (&ba, &bb)) in ia.iter().zip(&ib).enumerate() {
        let go = &g[o * m * n..(o + 1) * m * n];
        let xa = &x[ba * m * k..(ba + 1) * m * k];
        let yb = &y[bb * k * n..(bb + 1) * k * n];
        let da = gemm(go, &transposed(yb, k, n), m, n, k);
        let db = gemm(&transposed(xa, m, k), go, k, m, n);
        for (d, v) in ga[ba * m * k..(ba + 1) * m * k].iter_mut().zip(da) {
            *d += v;
        }
        for (d, v) in gb[bb * k * n..(bb + 1) * k * n].iter_mut().zip(db) {
            *d += v;
        }
    }
    Ok(vec![Some(ga), Some(gb)])
}
