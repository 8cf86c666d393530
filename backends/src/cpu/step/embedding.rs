//! `nn.embedding` of an f32 table `[V, H]` by i64 token ids `[T]`, and the cotangent of the table.
//!
//! Bit for bit the op's `eval` and gradient rule: rows copied; each token's cotangent added into
//! its row in f64 from +0.0 in token order (a row picked twice gets both), rounded once.

use super::elementwise::check;

/// Rows of a `rows × width` table gathered for `t` tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embedding {
    rows: usize,
    width: usize,
    t: usize,
}

impl Embedding {
    /// The kernel for a table of shape `[V, H]` and ids of shape `[T]`.
    pub fn lower(table: &[usize], ids: &[usize]) -> Option<Embedding> {
        match (table, ids) {
            (&[rows, width], &[t]) => Some(Embedding { rows, width, t }),
            _ => None,
        }
    }

    /// The row of each id, as the op checks it.
    fn row(&self, raw: i64) -> Result<usize, String> {
        usize::try_from(raw)
            .ok()
            .filter(|&r| r < self.rows)
            .ok_or_else(|| {
                format!(
                    "token id {raw} is outside the vocabulary (0..{})",
                    self.rows
                )
            })
    }

    /// The rows of `table` for `ids`.
    pub fn run(&self, table: &[f32], ids: &[i64]) -> Result<Vec<f32>, String> {
        check(table, self.rows * self.width, "the table")?;
        let mut out = Vec::with_capacity(self.t * self.width);
        for &id in ids.iter().take(self.t) {
            let r = self.row(id)?;
            out.extend_from_slice(&table[r * self.width..(r + 1) * self.width]);
        }
        Ok(out)
    }

    /// The table's cotangent from the output's `g`.
    pub fn grad(&self, ids: &[i64], g: &[f32]) -> Result<Vec<f32>, String> {
        check(g, self.t * self.width, "the cotangent")?;
        let mut acc = vec![0f64; self.rows * self.width];
        for (&id, grow) in ids.iter().zip(g.chunks(self.width.max(1))) {
            let r = self.row(id)?;
            for (a, &v) in acc[r * self.width..(r + 1) * self.width]
                .iter_mut()
                .zip(grow)
            {
                *a += f64::from(v);
            }
        }
        Ok(acc.into_iter().map(|v| v as f32).collect())
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

    #[test]
    fn embedding_and_its_cotangent_are_the_ops_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (rows, width) = (7, 5);
        let table: Vec<f32> = (0..rows * width).map(|i| i as f32 * 0.3 - 4.0).collect();
        let ids: Vec<i64> = vec![3, 0, 3, 6, 3];
        let g: Vec<f32> = (0..ids.len() * width)
            .map(|i| (i as f32 * 1.7).sin() / 3.0)
            .collect();
        let tt = Tensor::from_f32(vec![rows, width], table.clone()).unwrap();
        let it = Tensor {
            shape: vec![ids.len()],
            data: Data::I64(ids.clone()),
        };
        let attrs = Attrs::new();
        let shapes = vec![vec![ids.len(), width]];
        let y = OpKind::Embedding
            .eval(&EvalCtx {
                inputs: &[&tt, &it],
                attrs: &attrs,
                result_shapes: &shapes,
                result_elems: &[bitnet_ir::ElemType::F32],
                weights: &NoWeights,
            })
            .unwrap()
            .remove(0);
        let k = Embedding::lower(&[rows, width], &[ids.len()]).unwrap();
        assert_eq!(bits(&k.run(&table, &ids).unwrap()), bits(&y.data.to_f32()));
        let g64: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
        let rule = OpKind::Embedding
            .vjp(&VjpCtx {
                inputs: &[&tt, &it],
                outputs: &[&y],
                cotangents: &[Some(&g64)],
                attrs: &attrs,
            })
            .unwrap();
        let want: Vec<f32> = rule[0]
            .as_ref()
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_eq!(bits(&k.grad(&ids, &g).unwrap()), bits(&want));
        assert!(k.run(&table, &[0, 1, 7, 0, 0]).is_err());
    }
}
