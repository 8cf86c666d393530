//! `nn.rope` on f32 (`[T, heads·d]` rows rotated by the absolute position), and the cotangent of its
//! input.
//!
//! Bit for bit the op's `eval` and gradient rule (`bitnet_ir::ops::rope`): the angles `p·f_i` and
//! their sine and cosine in f32 with the same frequencies (`ops::rope::inv_freq`), the rotation in
//! f32 and its transpose in f64, each result rounded once. The sines and cosines are computed once
//! per position and frequency instead of once per head: the same values.

use super::elementwise::check;
use bitnet_ir::attr::Attrs;

/// The rotation of `t` rows of `width` in heads of `d`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    t: usize,
    width: usize,
    d: usize,
    inv_freq: Vec<f32>,
}

impl Rope {
    /// The kernel for `attrs` and an input of shape `[T, width]` (a scalar position operand).
    pub fn lower(attrs: &Attrs, x: &[usize]) -> Option<Rope> {
        let d = usize::try_from(attrs.int_or("head_dim", 0)).ok()?;
        let &[t, width] = x else {
            return None;
        };
        let inv_freq = bitnet_ir::ops::rope::inv_freq(attrs);
        (d > 0 && d % 2 == 0 && width % d == 0 && inv_freq.len() == d / 2).then_some(Rope {
            t,
            width,
            d,
            inv_freq,
        })
    }

    /// Each row's `(sin, cos)` per frequency, from position `pos`.
    fn angles(&self, pos: usize) -> Vec<(f32, f32)> {
        (0..self.t)
            .flat_map(|t| {
                let p = (pos + t) as f32;
                self.inv_freq.iter().map(move |&f| {
                    let a = p * f;
                    (a.sin(), a.cos())
                })
            })
            .collect()
    }

    /// `x` rotated.
    pub fn run(&self, x: &[f32], pos: usize) -> Result<Vec<f32>, String> {
        check(x, self.t * self.width, "the input")?;
        let (half, d) = (self.d / 2, self.d);
        let angles = self.angles(pos);
        let mut out = x.to_vec();
        for t in 0..self.t {
            let row = &angles[t * half..(t + 1) * half];
            for h in 0..self.width / d {
                let base = t * self.width + h * d;
                for (i, &(s, c)) in row.iter().enumerate() {
                    let (x0, x1) = (x[base + i], x[base + i + half]);
                    out[base + i] = x0 * c - x1 * s;
                    out[base + i + half] = x1 * c + x0 * s;
                }
            }
        }
        Ok(out)
    }

    /// The input's cotangent from the output's `g`: rotated back.
    pub fn grad(&self, g: &[f32], pos: usize) -> Result<Vec<f32>, String> {
        check(g, self.t * self.width, "the cotangent")?;
        let (half, d) = (self.d / 2, self.d);
        let angles = self.angles(pos);
        let mut gx = g.to_vec();
        for t in 0..self.t {
            let row = &angles[t * half..(t + 1) * half];
            for h in 0..self.width / d {
                let base = t * self.width + h * d;
                for (i, &(s, c)) in row.iter().enumerate() {
                    let (s, c) = (f64::from(s), f64::from(c));
                    let (g0, g1) = (f64::from(g[base + i]), f64::from(g[base + i + half]));
                    gx[base + i] = (g0 * c + g1 * s) as f32;
                    gx[base + i + half] = (g1 * c - g0 * s) as f32;
                }
            }
        }
        Ok(gx)
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

    #[test]
    fn rope_and_its_cotangent_are_the_ops_bit_for_bit() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (t, width, d, pos, theta) in [(5, 32, 8, 0, 10000.0), (3, 12, 4, 17, 500000.0)] {
            let attrs = Attrs::new()
                .with("head_dim", Attr::Int(d as i64))
                .with("theta", Attr::Float(theta));
            let x: Vec<f32> = (0..t * width)
                .map(|i| (i as f32 * 0.37).sin() * 3.0)
                .collect();
            let g: Vec<f32> = (0..t * width)
                .map(|i| (i as f32 * 0.91).cos() * 2.0)
                .collect();
            let xt = Tensor::from_f32(vec![t, width], x.clone()).unwrap();
            let p = Tensor {
                shape: vec![],
                data: Data::I64(vec![pos as i64]),
            };
            let shapes = vec![vec![t, width]];
            let y = OpKind::Rope
                .eval(&EvalCtx {
                    inputs: &[&xt, &p],
                    attrs: &attrs,
                    result_shapes: &shapes,
                    result_elems: &[bitnet_ir::ElemType::F32],
                    weights: &NoWeights,
                })
                .unwrap()
                .remove(0);
            let k = Rope::lower(&attrs, &[t, width]).unwrap();
            assert_eq!(bits(&k.run(&x, pos).unwrap()), bits(&y.data.to_f32()));
            let g64: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
            let rule = OpKind::Rope
                .vjp(&VjpCtx {
                    inputs: &[&xt, &p],
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
            assert_eq!(bits(&k.grad(&g, pos).unwrap()), bits(&want));
        }
    }
}
