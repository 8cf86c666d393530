//! `nn.reduce_max` and `nn.reduce_mean` over trailing axes (the last one, as an activation
//! quantizer's absmax, or all of them, as a weight's absmean) on f32.
//!
//! Bit for bit the op's `eval`: the maximum is taken in f64 from −∞ with NaN winning; the mean is
//! summed in f64 in order and divided by the count, then rounded once.

use bitnet_ir::OpKind;
use bitnet_ir::attr::Attrs;

/// Which reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReduceOp {
    Max,
    Mean,
}

/// A reduction of each of `rows` contiguous runs of `cols` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reduce {
    op: ReduceOp,
    rows: usize,
    cols: usize,
}

impl Reduce {
    /// The kernel of `kind` over `attrs`' axes of a `shape` operand, when those are trailing axes.
    pub fn lower(kind: OpKind, attrs: &Attrs, shape: &[usize]) -> Option<Reduce> {
        let op = match kind {
            OpKind::ReduceMax => ReduceOp::Max,
            OpKind::ReduceMean => ReduceOp::Mean,
            _ => return None,
        };
        let rank = shape.len();
        let mut axes: Vec<usize> = match attrs.ints("axes") {
            Some(a) => a
                .iter()
                .map(|&x| {
                    let x = if x < 0 { x + rank as i64 } else { x };
                    usize::try_from(x).ok().filter(|&x| x < rank)
                })
                .collect::<Option<_>>()?,
            None => (0..rank).collect(),
        };
        axes.sort_unstable();
        axes.dedup();
        // Trailing: the axes are exactly the last `axes.len()` ones.
        let first = rank - axes.len();
        if axes.iter().enumerate().any(|(i, &a)| a != first + i) {
            return None;
        }
        let rows = bitnet_ir::tensor::checked_numel(&shape[..first])?;
        let cols = bitnet_ir::tensor::checked_numel(&shape[first..])?;
        Some(Reduce { op, rows, cols })
    }

    /// One value per row.
    pub fn run(&self, x: &[f32]) -> Result<Vec<f32>, String> {
        super::elementwise::check(x, self.rows * self.cols, "the operand")?;
        if self.cols == 0 {
            let empty = match self.op {
                ReduceOp::Max => f32::NEG_INFINITY,
                ReduceOp::Mean => f32::NAN,
            };
            return Ok(vec![empty; self.rows]);
        }
        Ok(x.chunks_exact(self.cols)
            .map(|row| match self.op {
                ReduceOp::Max => row.iter().fold(f64::NEG_INFINITY, |acc, &v| {
                    let v = f64::from(v);
                    if v.is_nan() || acc.is_nan() {
                        f64::NAN
                    } else {
                        acc.max(v)
                    }
                }) as f32,
                ReduceOp::Mean => {
                    (row.iter().fold(0f64, |acc, &v| acc + f64::from(v)) / self.cols as f64) as f32
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_ir::attr::Attr;
    use bitnet_ir::ops::EvalCtx;
    use bitnet_ir::tensor::{Data, Tensor};
    use bitnet_ir::weights::NoWeights;

    #[test]
    fn reductions_are_eval_bit_for_bit() {
        let shape = [3usize, 5, 7];
        let x: Vec<f32> = (0..105)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let t = Tensor {
            shape: shape.to_vec(),
            data: Data::F32(x.clone()),
        };
        for kind in [OpKind::ReduceMax, OpKind::ReduceMean] {
            for (axes, out) in [
                (Some(vec![-1]), vec![3usize, 5, 1]),
                (Some(vec![1, 2]), vec![3, 1, 1]),
                (None, vec![1, 1, 1]),
            ] {
                let attrs = match &axes {
                    Some(a) => Attrs::new().with("axes", Attr::Ints(a.clone())),
                    None => Attrs::new(),
                };
                let k = Reduce::lower(kind, &attrs, &shape).unwrap();
                let got = k.run(&x).unwrap();
                let shapes = vec![out.clone()];
                let want = kind
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
                let b = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(b(&got), b(&want), "{} {axes:?}", kind.name());
            }
        }
        let middle = Attrs::new().with("axes", Attr::Ints(vec![1]));
        assert!(Reduce::lower(OpKind::ReduceMax, &middle, &shape).is_none());
    }
}
