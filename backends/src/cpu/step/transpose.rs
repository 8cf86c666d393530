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

/// `x` (`rows × cols`, exactly that long) transposed, in 16 × 16 tiles.
pub(super) fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 16;
    let mut t = vec![0f32; x.len()];
    if rows == 0 || cols == 0 || x.len() != rows * cols {
        return t;
    }
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for r in r0..(r0 + TILE).min(rows) {
                for (c, &v) in (c0..c1).zip(&x[r * cols + c0..r * cols + c1]) {
                    t[c * rows + r] = v;
                }
            }
        }
    }
    t
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
