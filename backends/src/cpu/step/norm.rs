//! `nn.rms_norm` over the last axis with a scale of that axis's size, on f32, and the cotangents of
//! its input and scale.
//!
//! Bit for bit the op's `eval` and gradient rule (`bitnet_ir::ops::norm`): the forward pass in f32
//! with the mean of squares summed in f64; the rule in f64 throughout, each row's sums in order and
//! the scale's cotangent summed over rows in order, each result rounded once.

use super::elementwise::check;
use bitnet_ir::attr::Attrs;

/// RMS normalization of `rows` rows of `n`.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNorm {
    rows: usize,
    n: usize,
    /// `eps` as the op reads it (an f32).
    eps: f32,
}

impl RmsNorm {
    /// The kernel for `attrs` and operands of shapes `x [.., n]` and `w [n]` (the last axis only).
    pub fn lower(attrs: &Attrs, x: &[usize], w: &[usize]) -> Option<RmsNorm> {
        let axis = attrs.int_or("axis", -1);
        let (&n, outer) = x.split_last()?;
        if !(axis == -1 || axis == x.len() as i64 - 1) || w != [n] {
            return None;
        }
        Some(RmsNorm {
            rows: bitnet_ir::tensor::checked_numel(outer)?,
            n,
            eps: attrs.float_or("eps", 0.0) as f32,
        })
    }

    /// `x / rms(x) · w`, row by row.
    pub fn run(&self, x: &[f32], w: &[f32]) -> Result<Vec<f32>, String> {
        let n = self.n;
        check(x, self.rows * n, "the input")?;
        check(w, n, "the scale")?;
        let mut out = vec![0f32; x.len()];
        if n == 0 {
            return Ok(out);
        }
        let mean = 0f32;
        for (row, dst) in x.chunks(n).zip(out.chunks_mut(n)) {
            let var = (row
                .iter()
                .map(|&a| f64::from(a - mean) * f64::from(a - mean))
                .sum::<f64>()
                / n as f64) as f32;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((d, &a), &wk) in dst.iter_mut().zip(row).zip(w) {
                *d = (a - mean) * inv * wk;
            }
        }
        Ok(out)
    }

    /// The cotangents of the input and the scale from the output's cotangent `g`.
    pub fn grad(&self, x: &[f32], w: &[f32], g: &[f32]) -> Result<Vec<Vec<f32>>, String> {
        let n = self.n;
        check(x, self.rows * n, "the input")?;
        check(w, n, "the scale")?;
        check(g, self.rows * n, "the cotangent")?;
        let eps = f64::from(self.eps);
        let w: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
        let mut gx = vec![0f32; x.len()];
        let mut gw = vec![0f64; n];
        if n > 0 {
            let mean = 0f64;
            let mut xh = vec![0f64; n];
            let mut d = vec![0f64; n];
            for ((row, grow), dst) in x.chunks(n).zip(g.chunks(n)).zip(gx.chunks_mut(n)) {
                let var = row
                    .iter()
                    .map(|&a| (f64::from(a) - mean) * (f64::from(a) - mean))
                    .sum::<f64>()
                    / n as f64;
                let r = 1.0 / (var + eps).sqrt();
                for (h, &a) in xh.iter_mut().zip(row) {
                    *h = (f64::from(a) - mean) * r;
                }
                for ((dv, &gv), &wv) in d.iter_mut().zip(grow).zip(&w) {
                    *dv = f64::from(gv) * wv;
                }
                let mean_dx = d.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / n as f64;
                let mean_d = 0f64;
                for k in 0..n {
                    dst[k] = (r * (d[k] - mean_d - xh[k] * mean_dx)) as f32;
                    gw[k] += f64::from(grow[k]) * xh[k];
                }
            }
        }
        Ok(vec![gx, gw.into_iter().map(|v| v as f32).collect()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_ir::OpKind;
    use bitnet_ir::attr::Attr;
    use bitnet_ir::ops::{EvalCtx, VjpCtx};
    use bitnet_ir::tensor::{Data, Tensor};
    use bitnet_ir::weights::NoWeights;

    fn tensor(shape: &[usize], seed: u32) -> Tensor {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(9);
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                if i % 13 == 0 {
                    -0.0
                } else {
                    (s as f32 / u32::MAX as f32 - 0.5) * 6.0
                }
            })
            .collect();
        Tensor {
            shape: shape.to_vec(),
            data: Data::F32(v),
        }
    }

    #[test]
    fn rms_norm_and_its_cotangents_are_the_ops_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (shape, eps) in [
            (vec![5usize, 32], 1e-5),
            (vec![2, 3, 7], 1e-6),
            (vec![1, 1], 0.0),
        ] {
            let n = *shape.last().unwrap();
            let attrs = Attrs::new().with("eps", Attr::Float(eps));
            let (x, w, g) = (tensor(&shape, 1), tensor(&[n], 2), tensor(&shape, 3));
            let want = OpKind::RmsNorm
                .eval(&EvalCtx {
                    inputs: &[&x, &w],
                    attrs: &attrs,
                    result_shapes: std::slice::from_ref(&shape),
                    result_elems: &[bitnet_ir::ElemType::F32],
                    weights: &NoWeights,
                })
                .unwrap()
                .remove(0);
            let k = RmsNorm::lower(&attrs, &shape, &[n]).unwrap();
            let (xf, wf, gf) = (x.data.to_f32(), w.data.to_f32(), g.data.to_f32());
            assert_eq!(bits(&k.run(&xf, &wf).unwrap()), bits(&want.data.to_f32()));
            let g64 = g.data.to_f64();
            let rule = OpKind::RmsNorm
                .vjp(&VjpCtx {
                    inputs: &[&x, &w],
                    outputs: &[&want],
                    cotangents: &[Some(&g64)],
                    attrs: &attrs,
                })
                .unwrap();
            let got = k.grad(&xf, &wf, &gf).unwrap();
            for (i, (got, rule)) in got.iter().zip(&rule).enumerate() {
                let want: Vec<f32> = rule.as_ref().unwrap().iter().map(|&v| v as f32).collect();
                assert_eq!(bits(got), bits(&want), "operand {i} of {shape:?}");
            }
        }
        assert!(RmsNorm::lower(&Attrs::new(), &[4, 8], &[4]).is_none());
    }
}
