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
/// `Iterator::sum` over them does. The loops run four rows at a time so each row of `y` streams once
/// per four rows of `x`, and each row's sums advance across `n` together; on a CPU with AVX-512 the
/// same loops are compiled for it (wider vectors, the same separate multiply and add per element, no
/// fused multiply-add), so every result is the same bits.
pub fn gemm(x: &[f64], y: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![-0.0f64; m * n];
    if m == 0 || k == 0 || n == 0 {
        return out;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, the only feature `gemm_avx512` is compiled for.
        unsafe { gemm_avx512(x, y, k, n, &mut out) };
        return out;
    }
    gemm_rows(x, y, k, n, &mut out);
    out
}

/// `gemm_rows` compiled for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gemm_avx512(x: &[f64], y: &[f64], k: usize, n: usize, out: &mut [f64]) {
    gemm_rows(x, y, k, n, out);
}

/// `out += x · y` for `k, n > 0`, four rows of `x` at a time, each sum in order of `k`.
#[inline(always)]
fn gemm_rows(x: &[f64], y: &[f64], k: usize, n: usize, out: &mut [f64]) {
    for (xb, ob) in x.chunks(4 * k).zip(out.chunks_mut(4 * n)) {
        for (kk, yr) in y.chunks_exact(n).enumerate().take(k) {
            for (xr, orow) in xb.chunks_exact(k).zip(ob.chunks_exact_mut(n)) {
                let xv = xr[kk];
                for (o, &yv) in orow.iter_mut().zip(yr) {
                    *o += xv * yv;
                }
            }
        }
    }
}

/// The transpose of a row-major `[rows, cols]` matrix, in 16 × 16 tiles so both sides stay in cache.
fn transposed(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    const TILE: usize = 16;
    let mut t = vec![0f64; x.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    t[c * rows + r] = x[r * cols + c];
                }
            }
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

#[cfg(test)]
mod tests {
    use super::{gemm, gemm_rows};

    /// Each result summed in order of `k` from −0.0, one product at a time.
    fn naive(x: &[f64], y: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(m * n);
        for i in 0..m {
            for j in 0..n {
                out.push((0..k).fold(-0.0, |acc, kk| acc + x[i * k + kk] * y[kk * n + j]));
            }
        }
        out
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The blocked loops (with AVX-512 where the CPU has it, and without) give the naive sums'
    /// bits at shapes that leave partial row blocks and vector tails, on values whose products round.
    #[test]
    fn gemm_is_the_in_order_sum_bit_for_bit() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (4, 3, 16),
            (5, 17, 9),
            (9, 2, 33),
            (13, 64, 70),
        ] {
            let x: Vec<f64> = (0..m * k).map(|_| next() / 3.0).collect();
            let y: Vec<f64> = (0..k * n).map(|_| next() * 1e-3 + 1e-9).collect();
            let want = bits(&naive(&x, &y, m, k, n));
            assert_eq!(bits(&gemm(&x, &y, m, k, n)), want, "{m}x{k}x{n}");
            let mut portable = vec![-0.0; m * n];
            gemm_rows(&x, &y, k, n, &mut portable);
            assert_eq!(bits(&portable), want, "{m}x{k}x{n} without AVX-512");
        }
        assert_eq!(bits(&gemm(&[], &[], 2, 0, 3)), bits(&[-0.0; 6]));
    }

    /// The tiled transpose moves every element to its place, at sizes around the tile.
    #[test]
    fn transposed_tiles_move_every_element() {
        for (rows, cols) in [(1, 1), (3, 40), (16, 16), (17, 33), (64, 5)] {
            let x: Vec<f64> = (0..rows * cols).map(|v| v as f64).collect();
            let t = super::transposed(&x, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        x[r * cols + c],
                        "{rows}x{cols} at ({r}, {c})"
                    );
                }
            }
        }
    }
}
