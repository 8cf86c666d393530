//! 2-D transposes on f32 (`nn.transpose` with `perm = [1, 0]`, and the cotangent of one, which is
//! its cotangent transposed back): the elements moved, in 16 × 16 tiles.

use super::elementwise::check;
use bitnet_ir::attr::Attrs;

/// The transpose of a `rows × cols` matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transpose {
    rows: usize,
    cols: usize,
}

impl Transpose {
    /// The kernel for `nn.transpose` with `attrs` of a `shape` operand (2-D, `perm = [1, 0]`).
    pub fn lower(attrs: &Attrs, shape: &[usize]) -> Option<Transpose> {
        match (attrs.ints("perm")?, shape) {
            ([1, 0], [rows, cols]) => Some(Transpose::lower_2d(*rows, *cols)),
            _ => None,
        }
    }

    /// The kernel transposing a `rows × cols` matrix.
    pub fn lower_2d(rows: usize, cols: usize) -> Transpose {
        Transpose { rows, cols }
    }

    /// `x` transposed.
    pub fn run(&self, x: &[f32]) -> Result<Vec<f32>, String> {
        check(x, self.rows * self.cols, "the operand")?;
        Ok(transposed(x, self.rows, self.cols))
    }
}

/// `x` (`rows × cols`, exactly that long) transposed: 8 × 8 blocks in AVX registers where the CPU
/// has AVX2, the rest (and every element elsewhere) in 16 × 16 tiles.
pub(super) fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; x.len()];
    if rows == 0 || cols == 0 || x.len() != rows * cols {
        return t;
    }
    let (r8, c8) = blocks(x, rows, cols, &mut t);
    tiles(x, rows, cols, &mut t, 0..r8, c8..cols);
    tiles(x, rows, cols, &mut t, r8..rows, 0..cols);
    t
}

/// Moves what the CPU's vector blocks cover into `t`: rows `0..r8` and columns `0..c8`, returned.
fn blocks(x: &[f32], rows: usize, cols: usize, t: &mut [f32]) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let (r8, c8) = (rows - rows % 8, cols - cols % 8);
        // SAFETY: the CPU has AVX2; `x` and `t` hold `rows × cols` values (checked by the caller).
        unsafe { blocks_avx2(x, rows, cols, t, r8, c8) };
        return (r8, c8);
    }
    let _ = (x, rows, cols, t);
    (0, 0)
}

/// The elements of rows `rs` and columns `cs` of `x` moved into `t`, in 16 × 16 tiles.
fn tiles(
    x: &[f32],
    rows: usize,
    cols: usize,
    t: &mut [f32],
    rs: std::ops::Range<usize>,
    cs: std::ops::Range<usize>,
) {
    const TILE: usize = 16;
    for r0 in rs.clone().step_by(TILE) {
        for c0 in cs.clone().step_by(TILE) {
            let c1 = (c0 + TILE).min(cs.end);
            for r in r0..(r0 + TILE).min(rs.end) {
                for (c, &v) in (c0..c1).zip(&x[r * cols + c0..r * cols + c1]) {
                    t[c * rows + r] = v;
                }
            }
        }
    }
}

/// Rows `0..r8` and columns `0..c8` (multiples of 8) of `x` moved into `t`, 8 × 8 at a time.
///
/// # Safety
/// The CPU has AVX2; `x` and `t` hold `rows × cols` values, `r8 ≤ rows`, `c8 ≤ cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn blocks_avx2(x: &[f32], rows: usize, cols: usize, t: &mut [f32], r8: usize, c8: usize) {
    use std::arch::x86_64::*;
    for r0 in (0..r8).step_by(8) {
        for c0 in (0..c8).step_by(8) {
            // SAFETY: rows r0..r0 + 8 ≤ r8 and columns c0..c0 + 8 ≤ c8 lie inside `x`.
            let block: [__m256; 8] = std::array::from_fn(|i| unsafe {
                _mm256_loadu_ps(x.as_ptr().add((r0 + i) * cols + c0))
            });
            for (c, v) in bitnet_runtime::native::attention::transpose8(block)
                .into_iter()
                .enumerate()
            {
                // SAFETY: row c0 + c < cols of `t` (`cols × rows`), its columns r0..r0 + 8 ≤ rows.
                unsafe { _mm256_storeu_ps(t.as_mut_ptr().add((c0 + c) * rows + r0), v) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_ir::OpKind;
    use bitnet_ir::attr::Attr;
    use bitnet_ir::ops::EvalCtx;
    use bitnet_ir::tensor::{Data, Tensor};
    use bitnet_ir::weights::NoWeights;

    #[test]
    fn transposes_are_eval_bit_for_bit() {
        for (rows, cols) in [(1, 1), (3, 40), (16, 16), (17, 33)] {
            let x: Vec<f32> = (0..rows * cols).map(|v| v as f32 - 0.5).collect();
            let t = Tensor {
                shape: vec![rows, cols],
                data: Data::F32(x.clone()),
            };
            let attrs = Attrs::new().with("perm", Attr::Ints(vec![1, 0]));
            let shapes = vec![vec![cols, rows]];
            let want = OpKind::Transpose
                .eval(&EvalCtx {
                    inputs: &[&t],
                    attrs: &attrs,
                    result_shapes: &shapes,
                    result_elems: &[bitnet_ir::ElemType::F32],
                    weights: &NoWeights,
                })
                .unwrap()
                .remove(0)
                .data
                .to_f32();
            let got = Transpose::lower(&attrs, &[rows, cols])
                .unwrap()
                .run(&x)
                .unwrap();
            assert_eq!(got, want, "{rows}x{cols}");
        }
    }
}
