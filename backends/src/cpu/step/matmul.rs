//! `nn.matmul` of two 2-D f32 operands, and the cotangent of either operand (`g·bᵀ`, `aᵀ·g`).
//!
//! Bit for bit the op's `eval` and gradient rule: each result is summed in f64 in order of the
//! contraction index from −0.0 and rounded once to f32. The operands are f32, so each product is
//! exact in f64 and a fused multiply-add rounds exactly as the interpreter's separate multiply and
//! add: the AVX-512 path uses it; the portable one does not. A cotangent, as the rule returns it, is
//! added to +0.0 (so a −0.0 sum is +0.0).

use super::elementwise::check;

/// `y = a·b` for `a: [m, k]`, `b: [k, n]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matmul {
    m: usize,
    k: usize,
    n: usize,
}

impl Matmul {
    /// The kernel for operands of shapes `a` and `b` (2-D only).
    pub fn lower(a: &[usize], b: &[usize]) -> Option<Matmul> {
        match (a, b) {
            ([m, k], [k2, n]) if k == k2 => Some(Matmul {
                m: *m,
                k: *k,
                n: *n,
            }),
            _ => None,
        }
    }

    /// `a·b`.
    pub fn run(&self, a: &[f32], b: &[f32]) -> Result<Vec<f32>, String> {
        let Matmul { m, k, n } = *self;
        check(a, m * k, "the left operand")?;
        check(b, k * n, "the right operand")?;
        Ok(gemm(a, b, m, k, n).into_iter().map(|v| v as f32).collect())
    }
}

/// The cotangent of operand `wrt` of `a·b` (`a: [m, k]`, `b: [k, n]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatmulGrad {
    wrt: usize,
    m: usize,
    k: usize,
    n: usize,
}

impl MatmulGrad {
    /// The kernel for operand `wrt` of a matmul of `a` and `b` (2-D only).
    pub fn lower(wrt: usize, a: &[usize], b: &[usize]) -> Option<MatmulGrad> {
        let Matmul { m, k, n } = Matmul::lower(a, b)?;
        (wrt < 2).then_some(MatmulGrad { wrt, m, k, n })
    }

    /// `g·bᵀ` (operand 0) or `aᵀ·g` (operand 1), from the operands and the result's cotangent `g`;
    /// `bt`, when given, is `bᵀ` already (`[n, k]`).
    pub fn run(
        &self,
        a: &[f32],
        b: &[f32],
        g: &[f32],
        bt: Option<&[f32]>,
    ) -> Result<Vec<f32>, String> {
        let MatmulGrad { wrt, m, k, n } = *self;
        check(a, m * k, "the left operand")?;
        check(b, k * n, "the right operand")?;
        check(g, m * n, "the cotangent")?;
        let sums = if wrt == 0 {
            match bt {
                Some(bt) => {
                    check(bt, n * k, "the right operand's transpose")?;
                    gemm(g, bt, m, n, k)
                }
                None => gemm(g, &transposed(b, k, n), m, n, k),
            }
        } else {
            gemm(&transposed(a, m, k), g, k, m, n)
        };
        Ok(sums.into_iter().map(|v| (0.0 + v) as f32).collect())
    }
}

/// `x` (`rows × cols`) transposed, in 16 × 16 tiles.
pub(super) fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 16;
    let mut t = vec![0f32; x.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    if let (Some(d), Some(&v)) = (t.get_mut(c * rows + r), x.get(r * cols + c)) {
                        *d = v;
                    }
                }
            }
        }
    }
    t
}

/// `x·y` (`x: [m, k]`, `y: [k, n]`, both with exactly those lengths), each sum in f64 in order of
/// `k` from −0.0.
fn gemm(x: &[f32], y: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![-0.0f64; m * n];
    if m == 0 || k == 0 || n == 0 {
        return out;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU has AVX-512F and FMA, the features `gemm_avx512` is compiled for.
        unsafe { gemm_avx512(x, y, k, n, &mut out) };
        return out;
    }
    gemm_rows(x, y, k, n, &mut out, |acc, p, q| acc + p * q);
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn gemm_avx512(x: &[f32], y: &[f32], k: usize, n: usize, out: &mut [f64]) {
    // Exact products, so the fused form rounds as the separate one does.
    gemm_rows(x, y, k, n, out, |acc, p, q| p.mul_add(q, acc));
}

/// Rows of `x` and columns of `y` one block of the gemm computes, its sums held in registers
/// (4 × 32 f64: sixteen 512-bit registers).
const BLOCK_ROWS: usize = 4;
const BLOCK_COLS: usize = 32;

/// `out += x·y`, each sum in order of `k`, with `madd(acc, p, q)` the accumulation `acc + p·q`:
/// blocks of 4 rows × 32 columns whose sums stay in registers over the whole of `k`, and the
/// edges one element at a time (the same order).
#[inline(always)]
fn gemm_rows(
    x: &[f32],
    y: &[f32],
    k: usize,
    n: usize,
    out: &mut [f64],
    madd: impl Fn(f64, f64, f64) -> f64 + Copy,
) {
    let m = out.len() / n;
    let full_rows = m - m % BLOCK_ROWS;
    let full_cols = n - n % BLOCK_COLS;
    for i0 in (0..full_rows).step_by(BLOCK_ROWS) {
        for j0 in (0..full_cols).step_by(BLOCK_COLS) {
            let mut acc = [[0f64; BLOCK_COLS]; BLOCK_ROWS];
            for (r, row) in acc.iter_mut().enumerate() {
                row.copy_from_slice(&out[(i0 + r) * n + j0..(i0 + r) * n + j0 + BLOCK_COLS]);
            }
            for kk in 0..k {
                let mut yv = [0f64; BLOCK_COLS];
                for (d, &s) in yv.iter_mut().zip(&y[kk * n + j0..kk * n + j0 + BLOCK_COLS]) {
                    *d = f64::from(s);
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let xv = f64::from(x[(i0 + r) * k + kk]);
                    for (a, &q) in row.iter_mut().zip(&yv) {
                        *a = madd(*a, xv, q);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                out[(i0 + r) * n + j0..(i0 + r) * n + j0 + BLOCK_COLS].copy_from_slice(row);
            }
        }
        gemm_edge(x, y, k, n, out, i0..i0 + BLOCK_ROWS, full_cols..n, madd);
    }
    gemm_edge(x, y, k, n, out, full_rows..m, 0..n, madd);
}

/// `out += x·y` over the rows `rows` and columns `cols`, one element at a time in order of `k`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemm_edge(
    x: &[f32],
    y: &[f32],
    k: usize,
    n: usize,
    out: &mut [f64],
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    madd: impl Fn(f64, f64, f64) -> f64,
) {
    for i in rows {
        for j in cols.clone() {
            let mut acc = out[i * n + j];
            for kk in 0..k {
                acc = madd(acc, f64::from(x[i * k + kk]), f64::from(y[kk * n + j]));
            }
            out[i * n + j] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_ir::OpKind;
    use bitnet_ir::attr::Attrs;
    use bitnet_ir::ops::{EvalCtx, VjpCtx};
    use bitnet_ir::tensor::{Data, Tensor};
    use bitnet_ir::weights::NoWeights;

    fn tensor(shape: &[usize], seed: u64) -> Tensor {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(7);
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                if i % 11 == 0 {
                    -0.0
                } else {
                    ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * 3.7
                }
            })
            .collect();
        Tensor {
            shape: shape.to_vec(),
            data: Data::F32(v),
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn matmul_and_its_cotangents_are_the_interpreters_bit_for_bit() {
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (4, 3, 16),
            (5, 17, 9),
            (9, 33, 2),
            (2, 0, 3),
            (8, 7, 64),
            (13, 19, 71),
        ] {
            let (a, b) = (tensor(&[m, k], 1), tensor(&[k, n], 2));
            let g = tensor(&[m, n], 3);
            let shapes = vec![vec![m, n]];
            let attrs = Attrs::new();
            let y = OpKind::MatMul
                .eval(&EvalCtx {
                    inputs: &[&a, &b],
                    attrs: &attrs,
                    result_shapes: &shapes,
                    result_elems: &[bitnet_ir::ElemType::F32],
                    weights: &NoWeights,
                })
                .unwrap()
                .remove(0);
            let (af, bf, gf) = (a.data.to_f32(), b.data.to_f32(), g.data.to_f32());
            let got = Matmul::lower(&a.shape, &b.shape)
                .unwrap()
                .run(&af, &bf)
                .unwrap();
            assert_eq!(bits(&got), bits(&y.data.to_f32()), "{m}x{k}x{n}");
            let g64 = g.data.to_f64();
            let rule = OpKind::MatMul
                .vjp(&VjpCtx {
                    inputs: &[&a, &b],
                    outputs: &[&y],
                    cotangents: &[Some(&g64)],
                    attrs: &attrs,
                })
                .unwrap();
            for (wrt, want) in rule.iter().enumerate() {
                let kernel = MatmulGrad::lower(wrt, &a.shape, &b.shape).unwrap();
                let got = kernel.run(&af, &bf, &gf, None).unwrap();
                let bt = transposed(&bf, k, n);
                let given = kernel.run(&af, &bf, &gf, Some(&bt)).unwrap();
                assert_eq!(bits(&given), bits(&got), "{m}x{k}x{n} wrt {wrt}, bᵀ given");
                let want: Vec<f32> = want.as_ref().unwrap().iter().map(|&v| v as f32).collect();
                assert_eq!(bits(&got), bits(&want), "{m}x{k}x{n} wrt {wrt}");
            }
        }
        assert!(Matmul::lower(&[2, 3, 4], &[4, 5]).is_none());
    }

    #[test]
    fn the_portable_gemm_is_the_fused_one_bit_for_bit() {
        let (m, k, n) = (13, 19, 71);
        let (x, y) = (
            tensor(&[m, k], 5).data.to_f32(),
            tensor(&[k, n], 6).data.to_f32(),
        );
        let mut separate = vec![-0.0f64; m * n];
        gemm_rows(&x, &y, k, n, &mut separate, |acc, p, q| acc + p * q);
        let mut fused = vec![-0.0f64; m * n];
        gemm_rows(&x, &y, k, n, &mut fused, |acc, p, q| p.mul_add(q, acc));
        let b = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(b(&separate), b(&fused));
        assert_eq!(b(&separate), b(&gemm(&x, &y, m, k, n)));
    }
}
