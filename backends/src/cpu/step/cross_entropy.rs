//! `nn.cross_entropy` of f32 logits `[T, V]` and i64 targets (the mean over the rows), and the
//! cotangent of the logits.
//!
//! Bit for bit the op's `eval` and gradient rule (`bitnet_ir::ops::cross_entropy`): each row's
//! softmax in f64 through `bitnet_numerics::exp` (computed once per element, not twice), the loss
//! summed over rows in order, each result rounded once.

use super::elementwise::check;
use bitnet_numerics::exp;

/// The mean cross-entropy of `t` rows of `v` logits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrossEntropy {
    t: usize,
    v: usize,
}

impl CrossEntropy {
    /// The kernel for logits of shape `[T, V]` and targets `[T]`.
    pub fn lower(logits: &[usize], targets: &[usize]) -> Option<CrossEntropy> {
        match (logits, targets) {
            (&[t, v], &[t2]) if t == t2 => Some(CrossEntropy { t, v }),
            _ => None,
        }
    }

    /// Each row's softmax (into `probs`, when given) and the sum of the rows' losses.
    fn rows(&self, z: &[f32], y: &[i64], mut probs: Option<&mut Vec<f64>>) -> Result<f64, String> {
        check(z, self.t * self.v, "the logits")?;
        if y.len() != self.t {
            return Err(format!("internal: {} targets for {} rows", y.len(), self.t));
        }
        let v = self.v;
        let mut total = 0f64;
        let mut e: Vec<f64> = Vec::with_capacity(v);
        for (t, (row, &target)) in z.chunks(v.max(1)).zip(y).enumerate() {
            let yt = usize::try_from(target)
                .ok()
                .filter(|&yt| yt < v)
                .ok_or_else(|| {
                    format!("target {target} of token {t} is outside the vocabulary 0..{v}")
                })?;
            let m = row
                .iter()
                .map(|&x| f64::from(x))
                .fold(f64::NEG_INFINITY, f64::max);
            e.clear();
            e.extend(row.iter().map(|&x| exp(f64::from(x) - m)));
            let sum: f64 = e.iter().sum();
            total += sum.ln() + m - f64::from(row[yt]);
            if let Some(p) = probs.as_deref_mut() {
                p.extend(e.iter().map(|x| x / sum));
            }
        }
        Ok(total)
    }

    /// The mean loss.
    pub fn run(&self, z: &[f32], y: &[i64]) -> Result<Vec<f32>, String> {
        let total = self.rows(z, y, None)?;
        let loss = if self.t == 0 {
            f64::NAN
        } else {
            total / self.t as f64
        };
        Ok(vec![loss as f32])
    }

    /// The logits' cotangent from the loss's `g`: `g·(softmax − onehot)/T`.
    pub fn grad(&self, z: &[f32], y: &[i64], g: f32) -> Result<Vec<f32>, String> {
        let mut probs = Vec::with_capacity(z.len());
        self.rows(z, y, Some(&mut probs))?;
        let g = f64::from(g) / self.t.max(1) as f64;
        for (row, &yt) in probs.chunks_mut(self.v.max(1)).zip(y) {
            if let Some(p) = row.get_mut(yt as usize) {
                *p -= 1.0;
            }
            for p in row.iter_mut() {
                *p *= g;
            }
        }
        Ok(probs.into_iter().map(|p| p as f32).collect())
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
    fn cross_entropy_and_its_cotangent_are_the_ops_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (t, v) = (6, 37);
        let z: Vec<f32> = (0..t * v)
            .map(|i| ((i * 7919 % 101) as f32 - 50.0) / 9.0)
            .collect();
        let y: Vec<i64> = vec![0, 36, 5, 5, 17, 2];
        let zt = Tensor::from_f32(vec![t, v], z.clone()).unwrap();
        let yt = Tensor {
            shape: vec![t],
            data: Data::I64(y.clone()),
        };
        let shapes = vec![vec![]];
        let attrs = Attrs::new();
        let loss = OpKind::CrossEntropy
            .eval(&EvalCtx {
                inputs: &[&zt, &yt],
                attrs: &attrs,
                result_shapes: &shapes,
                result_elems: &[bitnet_ir::ElemType::F32],
                weights: &NoWeights,
            })
            .unwrap()
            .remove(0);
        let k = CrossEntropy::lower(&[t, v], &[t]).unwrap();
        assert_eq!(bits(&k.run(&z, &y).unwrap()), bits(&loss.data.to_f32()));
        let g = 0.75f32;
        let rule = OpKind::CrossEntropy
            .vjp(&VjpCtx {
                inputs: &[&zt, &yt],
                outputs: &[&loss],
                cotangents: &[Some(&[f64::from(g)])],
                attrs: &attrs,
            })
            .unwrap();
        let want: Vec<f32> = rule[0]
            .as_ref()
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_eq!(bits(&k.grad(&z, &y, g).unwrap()), bits(&want));
        let err = k.run(&z, &[0, 1, 2, 3, 4, 37]).unwrap_err();
        assert!(err.contains("target 37 of token 5"), "{err}");
    }
}
