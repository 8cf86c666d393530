//! `nn.matmul` of two 2-D f32 operands, and the cotangent of either operand (`g·bᵀ`, `aᵀ·g`).
//!
//! Bit for bit the op's `eval` and gradient rule: each result is summed in f64 in order of the
//! contraction index from −0.0 and rounded once to f32. The operands are f32, so each product is
//! exact in f64 and a fused multiply-add rounds exactly as the interpreter's separate multiply and
//! add: the AVX-512 block kernel uses it; the portable one and the edges do not. A transposed
//! operand is read in place (`View`), never copied. A cotangent, as the rule returns it, is
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
        Ok(gemm(View::plain(a, m, k), View::plain(b, k, n), |v| {
            v as f32
        }))
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
        let round = |v: f64| (0.0 + v) as f32;
        Ok(if wrt == 0 {
            let bt = match bt {
                Some(bt) => {
                    check(bt, n * k, "the right operand's transpose")?;
                    View::plain(bt, n, k)
                }
                None => View::transpose_of(b, k, n),
            };
            gemm(View::plain(g, m, n), bt, round)
        } else {
            gemm(View::transpose_of(a, m, k), View::plain(g, m, n), round)
        })
    }
}

/// A 2-D f32 operand read where it lies: element `(r, c)` of the `rows × cols` matrix is
/// `data[r * row_stride + c * col_stride]`, so a transpose is a view, never a copy.
#[derive(Clone, Copy, Debug)]
pub(super) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    /// `data` as a row-major `rows × cols` matrix.
    pub(super) fn plain(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of the row-major `rows × cols` matrix `data` (a `cols × rows` view).
    pub(super) fn transpose_of(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View {
            data,
            rows: cols,
            cols: rows,
            row_stride: 1,
            col_stride: cols,
        }
    }

    /// Element `(r, c)` widened to f64 (0 outside the data, which `gemm`'s callers rule out).
    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> f64 {
        self.data
            .get(r * self.row_stride + c * self.col_stride)
            .map_or(0.0, |&v| f64::from(v))
    }
}

/// Rows of `x` and columns of `y` one block of the gemm computes, its sums held in registers
/// (6 × 32 f64: twenty-four 512-bit registers, with four more for a row of `y`).
const BLOCK_ROWS: usize = 6;
const BLOCK_COLS: usize = 32;
/// 8-lane f64 vectors in a block's row.
#[cfg(target_arch = "x86_64")]
const ROW_VECTORS: usize = BLOCK_COLS / 8;

/// `x·y` (`x: [m, k]`, `y: [k, n]`, views whose data hold every element), each sum in f64 in
/// order of `k` from −0.0, given as `round` of it.
///
/// `x` is widened to f64 and packed once, in groups of 6 rows interleaved by `k` (the last group
/// padded with zero rows). `y` goes one panel of 32 columns at a time: read where it lies when its
/// rows are contiguous, else (a transposed view, or the last panel, padded with zero columns)
/// copied into a panel first. Each 6 × 32 block of sums then stays in registers over the whole of
/// `k`, every group of rows reusing the panel while it is in cache; the padding's sums are dropped.
fn gemm<T: Copy + Default>(x: View, y: View, round: impl Fn(f64) -> T) -> Vec<T> {
    let (m, k, n) = (x.rows, x.cols, y.cols);
    let mut out = vec![T::default(); m * n];
    if k == 0 {
        out.fill(round(-0.0));
    }
    if m == 0 || k == 0 || n == 0 {
        return out;
    }
    let block = block_kernel();
    let groups = m.div_ceil(BLOCK_ROWS);
    let mut xp = vec![0f64; groups * BLOCK_ROWS * k];
    pack_rows(&x, &mut xp);
    let mut copy = Vec::new();
    for j0 in (0..n).step_by(BLOCK_COLS) {
        let width = BLOCK_COLS.min(n - j0);
        let in_place = y.col_stride == 1 && width == BLOCK_COLS;
        let (panel, stride) = if in_place {
            let start = j0;
            let end = (k - 1) * y.row_stride + j0 + BLOCK_COLS;
            match y.data.get(start..end) {
                Some(p) => (p, y.row_stride),
                None => return out,
            }
        } else {
            copy.resize(k * BLOCK_COLS, 0f32);
            pack_panel(&y, j0, width, &mut copy);
            (&copy[..], BLOCK_COLS)
        };
        for (g, group) in xp.chunks_exact(BLOCK_ROWS * k).enumerate() {
            let sums = block(group, panel, stride);
            for (r, row) in sums.iter().enumerate() {
                let at = (g * BLOCK_ROWS + r) * n + j0;
                if let Some(d) = out.get_mut(at..at + width) {
                    d.iter_mut().zip(row).for_each(|(d, &v)| *d = round(v));
                }
            }
        }
    }
    out
}

/// `x`'s rows widened, in groups of 6: row `6g + r`'s element `kk` at `g·6k + kk·6 + r`; rows past
/// the last stay zero. Reads along whichever axis `x` stores contiguously.
fn pack_rows(x: &View, xp: &mut [f64]) {
    let k = x.cols;
    for i in 0..x.rows {
        let (g, r) = (i / BLOCK_ROWS, i % BLOCK_ROWS);
        let Some(group) = xp.get_mut(g * BLOCK_ROWS * k..(g + 1) * BLOCK_ROWS * k) else {
            return;
        };
        if x.col_stride == 1 {
            let Some(src) = x.data.get(i * x.row_stride..i * x.row_stride + k) else {
                return;
            };
            for (lanes, &v) in group.chunks_exact_mut(BLOCK_ROWS).zip(src) {
                lanes[r] = f64::from(v);
            }
        } else {
            for (kk, lanes) in group.chunks_exact_mut(BLOCK_ROWS).enumerate() {
                lanes[r] = x.at(i, kk);
            }
        }
    }
}

/// Columns `j0..j0 + width` of `y` into a `k × 32` panel, the rest of each row zero. Reads along
/// whichever axis `y` stores contiguously.
fn pack_panel(y: &View, j0: usize, width: usize, panel: &mut [f32]) {
    if width < BLOCK_COLS {
        panel.fill(0.0);
    }
    for c in 0..width {
        for (kk, lanes) in panel.chunks_exact_mut(BLOCK_COLS).enumerate() {
            let at = kk * y.row_stride + (j0 + c) * y.col_stride;
            lanes[c] = y.data.get(at).copied().unwrap_or(0.0);
        }
    }
}

/// The sums of one 6 × 32 block: `xs` holds `k × 6` packed values of `x`, `ys` the 32 columns of
/// `y`'s rows `0..k`, row `kk` starting at `kk·stride` (so `ys` holds `(k − 1)·stride + 32`).
type Block = fn(&[f64], &[f32], usize) -> [[f64; BLOCK_COLS]; BLOCK_ROWS];

/// The fastest block kernel this CPU runs: all give the same bits (products of f32 values are
/// exact in f64, so a fused multiply-add rounds as a separate multiply and add).
fn block_kernel() -> Block {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return |xs, ys, stride| {
            // SAFETY: the CPU has AVX-512F, the feature `block_avx512` is compiled for.
            unsafe { block_avx512(xs, ys, stride) }
        };
    }
    block_portable
}

/// A block summed one lane at a time, in order of `k`, multiplying and adding separately.
fn block_portable(xs: &[f64], ys: &[f32], stride: usize) -> [[f64; BLOCK_COLS]; BLOCK_ROWS] {
    let mut acc = [[-0.0f64; BLOCK_COLS]; BLOCK_ROWS];
    for (kk, xk) in xs.chunks_exact(BLOCK_ROWS).enumerate() {
        let Some(yk) = ys.get(kk * stride..kk * stride + BLOCK_COLS) else {
            break;
        };
        for (row, &p) in acc.iter_mut().zip(xk) {
            for (a, &q) in row.iter_mut().zip(yk) {
                *a += p * f64::from(q);
            }
        }
    }
    acc
}

/// A block with its 24 sums in zmm registers: per `k`, four widening loads of `y`, six broadcasts
/// of `x` and 24 fused multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn block_avx512(xs: &[f64], ys: &[f32], stride: usize) -> [[f64; BLOCK_COLS]; BLOCK_ROWS] {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_pd(-0.0); BLOCK_ROWS * ROW_VECTORS];
    let k = xs.len() / BLOCK_ROWS;
    let mut sums = [[0f64; BLOCK_COLS]; BLOCK_ROWS];
    if k == 0 || ys.len() < (k - 1) * stride + BLOCK_COLS {
        return sums;
    }
    for (kk, xk) in xs.chunks_exact(BLOCK_ROWS).enumerate() {
        // SAFETY: row `kk < k` of `ys` starts at `kk·stride` and holds 32 f32 (checked above), so
        // the four 8-lane loads stay inside `ys`.
        let q = unsafe {
            let row = ys.as_ptr().add(kk * stride);
            [
                _mm512_cvtps_pd(_mm256_loadu_ps(row)),
                _mm512_cvtps_pd(_mm256_loadu_ps(row.add(8))),
                _mm512_cvtps_pd(_mm256_loadu_ps(row.add(16))),
                _mm512_cvtps_pd(_mm256_loadu_ps(row.add(24))),
            ]
        };
        for (r, &p) in xk.iter().enumerate() {
            let p = _mm512_set1_pd(p);
            for (c, &q) in q.iter().enumerate() {
                acc[r * ROW_VECTORS + c] = _mm512_fmadd_pd(p, q, acc[r * ROW_VECTORS + c]);
            }
        }
    }
    for (r, row) in sums.iter_mut().enumerate() {
        for (c, lanes) in row.chunks_exact_mut(8).enumerate() {
            // SAFETY: `lanes` holds 8 f64.
            unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), acc[r * ROW_VECTORS + c]) };
        }
    }
    sums
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
            (12, 40, 35),
            (6, 64, 96),
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
                let bt = crate::cpu::step::transpose::transposed(&bf, k, n);
                let given = kernel.run(&af, &bf, &gf, Some(&bt)).unwrap();
                assert_eq!(bits(&given), bits(&got), "{m}x{k}x{n} wrt {wrt}, bᵀ given");
                let want: Vec<f32> = want.as_ref().unwrap().iter().map(|&v| v as f32).collect();
                assert_eq!(bits(&got), bits(&want), "{m}x{k}x{n} wrt {wrt}");
            }
        }
        assert!(Matmul::lower(&[2, 3, 4], &[4, 5]).is_none());
    }

    #[test]
    fn every_block_kernel_view_and_edge_gives_the_sequential_sums() {
        use crate::cpu::step::transpose::transposed;
        let b = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (m, k, n) in [(13, 19, 71), (4, 1, 32), (8, 40, 96)] {
            let (x, y) = (
                tensor(&[m, k], 5).data.to_f32(),
                tensor(&[k, n], 6).data.to_f32(),
            );
            let mut want = vec![-0.0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    for kk in 0..k {
                        want[i * n + j] += f64::from(x[i * k + kk]) * f64::from(y[kk * n + j]);
                    }
                }
            }
            let plain = gemm(View::plain(&x, m, k), View::plain(&y, k, n), |v| v);
            assert_eq!(b(&plain), b(&want), "{m}x{k}x{n}");
            let (xt, yt) = (transposed(&x, m, k), transposed(&y, k, n));
            let viewed = gemm(
                View::transpose_of(&xt, k, m),
                View::transpose_of(&yt, n, k),
                |v| v,
            );
            assert_eq!(b(&viewed), b(&want), "{m}x{k}x{n}, transposed views");
        }
        let k = 23;
        let xs: Vec<f64> = tensor(&[k, BLOCK_ROWS], 7).data.to_f64();
        let ys: Vec<f32> = tensor(&[k, BLOCK_COLS + 5], 8).data.to_f32();
        let stride = BLOCK_COLS + 5;
        let (portable, chosen) = (
            block_portable(&xs, &ys, stride),
            block_kernel()(&xs, &ys, stride),
        );
        assert_eq!(b(portable.as_flattened()), b(chosen.as_flattened()));
    }
}
