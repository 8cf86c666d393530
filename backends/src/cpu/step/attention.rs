//! `nn.attention` on f32 (causal, grouped KV heads, the caches updated), and the cotangents of its
//! operands from the cotangent of its output.
//!
//! Bit for bit the op's `eval` and gradient rule (`bitnet_ir::ops::attention`): every sum in f64 in
//! the rule's order from the value Rust's `f64` sum starts at, the softmax through
//! `bitnet_numerics::exp`, each result rounded once. What differs is the loop order where no sum
//! does: the output `Σ_j w_j·v_j` runs over `j` outside and the head dimension inside (one
//! independent sum per element, which vectorizes), and each `exp` is computed once, not twice.

use super::elementwise::check;
use bitnet_ir::attr::Attrs;
use bitnet_numerics::exp;

/// The start of Rust's `f64` sum (what `Iterator::sum` folds from).
fn sum_start() -> f64 {
    std::iter::empty::<f64>().sum()
}

/// A cache (`rows × width`) transposed and widened: element `(j, c)` at `c·rows + j`, so each
/// head dimension `c` is one contiguous row over the keys.
fn keys_by_dimension(cache: &[f32], rows: usize, width: usize) -> Vec<f64> {
    let t = super::transpose::transposed(cache, rows, width);
    t.into_iter().map(f64::from).collect()
}

/// Appends to `out` the dot products of `a` (one head's `d` values) with keys `0..count`, from the
/// head's part of a `keys_by_dimension` cache (`by_dim`: `d` rows of `rows` keys). Each is summed
/// in order of the head dimension from `sum_start()`, as `a.iter().zip(key).map(|(x, y)| x * y)
/// .sum()` sums it; the keys' sums run side by side, which vectorizes.
fn dots(a: &[f64], by_dim: &[f64], rows: usize, count: usize, out: &mut Vec<f64>) {
    let start = out.len();
    out.resize(start + count, sum_start());
    let Some(sums) = out.get_mut(start..) else {
        return;
    };
    for (&x, row) in a.iter().zip(by_dim.chunks_exact(rows)) {
        for (s, &y) in sums.iter_mut().zip(row) {
            *s += x * y;
        }
    }
}

/// Attention of `t` queries over caches of `ctx` rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    t: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    ctx: usize,
    scale: f64,
}

impl Attention {
    /// The kernel for `attrs` and operands of shapes `q [T, H·d]`, `k`, `v [T, Hkv·d]`, caches
    /// `[C, Hkv·d]`, and a scalar position.
    pub fn lower(attrs: &Attrs, shapes: &[Vec<usize>]) -> Option<Attention> {
        let heads = usize::try_from(attrs.int_or("heads", 0)).ok()?;
        let kv_heads = usize::try_from(attrs.int_or("kv_heads", 0)).ok()?;
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return None;
        }
        let [q, k, v, kc, vc, pos] = shapes else {
            return None;
        };
        let (&[t, qw], &[ctx, kvw]) = (q.as_slice(), kc.as_slice()) else {
            return None;
        };
        let d = qw / heads;
        let fits = qw % heads == 0
            && kvw == d * kv_heads
            && k.as_slice() == [t, kvw]
            && v.as_slice() == [t, kvw]
            && vc.as_slice() == [ctx, kvw]
            && pos.is_empty();
        let scale = attrs.float("scale").unwrap_or(1.0 / (d as f64).sqrt());
        fits.then_some(Attention {
            t,
            heads,
            kv_heads,
            d,
            ctx,
            scale,
        })
    }

    fn widths(&self) -> (usize, usize) {
        (self.heads * self.d, self.kv_heads * self.d)
    }

    /// The error of a window past the caches' end, as the op's.
    fn check_pos(&self, pos: usize) -> Result<(), String> {
        if pos.checked_add(self.t).is_none_or(|end| end > self.ctx) {
            return Err(format!(
                "context overflow: position {pos} + {} tokens exceeds the cache length {}",
                self.t, self.ctx
            ));
        }
        Ok(())
    }

    /// The output and the updated key and value caches.
    pub fn run(&self, [q, k, v, kc, vc]: [&[f32]; 5], pos: usize) -> Result<Vec<Vec<f32>>, String> {
        let (qw, kvw) = self.widths();
        let (t_len, d, ctx) = (self.t, self.d, self.ctx);
        check(q, t_len * qw, "q")?;
        check(k, t_len * kvw, "k")?;
        check(v, t_len * kvw, "v")?;
        check(kc, ctx * kvw, "the key cache")?;
        check(vc, ctx * kvw, "the value cache")?;
        self.check_pos(pos)?;
        let (mut kcache, mut vcache) = (kc.to_vec(), vc.to_vec());
        kcache[pos * kvw..(pos + t_len) * kvw].copy_from_slice(k);
        vcache[pos * kvw..(pos + t_len) * kvw].copy_from_slice(v);
        let group = self.heads / self.kv_heads;
        let mut out = vec![0f32; t_len * qw];
        let mut scores: Vec<f64> = Vec::with_capacity(ctx);
        let mut acc = vec![0f64; d];
        let mut qrow = vec![0f64; d];
        let k_by_dim = keys_by_dimension(&kcache, ctx, kvw);
        for t in 0..t_len {
            let p = pos + t;
            for h in 0..self.heads {
                let g = h / group;
                for (w, &x) in qrow.iter_mut().zip(&q[t * qw + h * d..t * qw + h * d + d]) {
                    *w = f64::from(x);
                }
                scores.clear();
                dots(&qrow, &k_by_dim[g * d * ctx..], ctx, p + 1, &mut scores);
                for s in scores.iter_mut() {
                    *s *= self.scale;
                }
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                for s in scores.iter_mut() {
                    *s = exp(*s - m);
                }
                let sum: f64 = scores.iter().sum();
                acc.fill(sum_start());
                for (j, &e) in scores.iter().enumerate() {
                    let w = e / sum;
                    let vrow = &vcache[j * kvw + g * d..j * kvw + g * d + d];
                    for (a, &x) in acc.iter_mut().zip(vrow) {
                        *a += w * f64::from(x);
                    }
                }
                for (o, &a) in out[t * qw + h * d..t * qw + h * d + d].iter_mut().zip(&acc) {
                    *o = a as f32;
                }
            }
        }
        Ok(vec![out, kcache, vcache])
    }

    /// The cotangents of `q`, `k`, `v` and the two caches, from the operands `q`, the updated
    /// caches (the op's results 1 and 2) and the output's cotangent `go` (the caches' results get
    /// none), as the op's rule computes them.
    pub fn grad(
        &self,
        [q, kcache, vcache, go]: [&[f32]; 4],
        pos: usize,
    ) -> Result<Vec<Vec<f32>>, String> {
        let (qw, kvw) = self.widths();
        let (t_len, d, ctx) = (self.t, self.d, self.ctx);
        check(q, t_len * qw, "q")?;
        check(kcache, ctx * kvw, "the updated key cache")?;
        check(vcache, ctx * kvw, "the updated value cache")?;
        check(go, t_len * qw, "the cotangent")?;
        self.check_pos(pos)?;
        let wide = |x: &[f32]| x.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
        let (qv, kc, vc, go) = (wide(q), wide(kcache), wide(vcache), wide(go));
        let mut gq = vec![0f64; qv.len()];
        let mut gk = vec![0f64; kc.len()];
        let mut gv = vec![0f64; vc.len()];
        let group = self.heads / self.kv_heads;
        let scale = self.scale;
        let mut w: Vec<f64> = Vec::with_capacity(ctx);
        let mut gw: Vec<f64> = Vec::with_capacity(ctx);
        let (k_by_dim, v_by_dim) = (
            keys_by_dimension(kcache, ctx, kvw),
            keys_by_dimension(vcache, ctx, kvw),
        );
        for t in 0..t_len {
            let p = pos + t;
            for h in 0..self.heads {
                let g = h / group;
                let qo = t * qw + h * d;
                let qrow = &qv[qo..qo + d];
                let grow = &go[qo..qo + d];
                w.clear();
                dots(qrow, &k_by_dim[g * d * ctx..], ctx, p + 1, &mut w);
                for s in w.iter_mut() {
                    *s *= scale;
                }
                let m = w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                for s in w.iter_mut() {
                    *s = exp(*s - m);
                }
                let sum: f64 = w.iter().sum();
                for s in w.iter_mut() {
                    *s /= sum;
                }
                gw.clear();
                dots(grow, &v_by_dim[g * d * ctx..], ctx, p + 1, &mut gw);
                for (j, &wj) in w.iter().enumerate() {
                    let vo = j * kvw + g * d;
                    for (x, &gc) in gv[vo..vo + d].iter_mut().zip(grow) {
                        *x += wj * gc;
                    }
                }
                let mix: f64 = w.iter().zip(&gw).map(|(a, b)| a * b).sum();
                for (j, (&wj, &gwj)) in w.iter().zip(&gw).enumerate() {
                    let gs = wj * (gwj - mix) * scale;
                    let ko = j * kvw + g * d;
                    for (x, &kv) in gq[qo..qo + d].iter_mut().zip(&kc[ko..ko + d]) {
                        *x += gs * kv;
                    }
                    for (x, &qv) in gk[ko..ko + d].iter_mut().zip(qrow) {
                        *x += gs * qv;
                    }
                }
            }
        }
        let narrow = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let rows = pos * kvw..(pos + t_len) * kvw;
        let g_knew = narrow(&gk[rows.clone()]);
        let g_vnew = narrow(&gv[rows.clone()]);
        gk[rows.clone()].fill(0.0);
        gv[rows].fill(0.0);
        Ok(vec![narrow(&gq), g_knew, g_vnew, narrow(&gk), narrow(&gv)])
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
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(3);
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * 4.0
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
    fn attention_and_its_cotangents_are_the_ops_bit_for_bit() {
        // (heads, kv_heads, d, T, C, pos)
        for (heads, kv_heads, d, t, ctx, pos) in [
            (4, 2, 8, 5, 8, 0),
            (2, 2, 3, 3, 9, 4),
            (6, 3, 4, 7, 7, 0),
            (4, 2, 8, 20, 24, 3),
        ] {
            let attrs = Attrs::new()
                .with("heads", Attr::Int(heads as i64))
                .with("kv_heads", Attr::Int(kv_heads as i64));
            let (qw, kvw) = (heads * d, kv_heads * d);
            let q = tensor(&[t, qw], 1);
            let k = tensor(&[t, kvw], 2);
            let v = tensor(&[t, kvw], 3);
            let kc = tensor(&[ctx, kvw], 4);
            let vc = tensor(&[ctx, kvw], 5);
            let p = Tensor {
                shape: vec![],
                data: Data::I64(vec![pos as i64]),
            };
            let shapes = vec![vec![t, qw], vec![ctx, kvw], vec![ctx, kvw]];
            let want = OpKind::Attention
                .eval(&EvalCtx {
                    inputs: &[&q, &k, &v, &kc, &vc, &p],
                    attrs: &attrs,
                    result_shapes: &shapes,
                    result_elems: &[bitnet_ir::ElemType::F32; 3],
                    weights: &NoWeights,
                })
                .unwrap();
            let operand_shapes: Vec<Vec<usize>> = [&q, &k, &v, &kc, &vc, &p]
                .iter()
                .map(|t| t.shape.clone())
                .collect();
            let kernel = Attention::lower(&attrs, &operand_shapes).unwrap();
            let f = |t: &Tensor| t.data.to_f32();
            let (qf, kf, vf, kcf, vcf) = (f(&q), f(&k), f(&v), f(&kc), f(&vc));
            let got = kernel.run([&qf, &kf, &vf, &kcf, &vcf], pos).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(bits(g), bits(&w.data.to_f32()), "forward, T={t} pos={pos}");
            }
            let go = tensor(&[t, qw], 6);
            let go64 = go.data.to_f64();
            let rule = OpKind::Attention
                .vjp(&VjpCtx {
                    inputs: &[&q, &k, &v, &kc, &vc, &p],
                    outputs: &[&want[0], &want[1], &want[2]],
                    cotangents: &[Some(&go64), None, None],
                    attrs: &attrs,
                })
                .unwrap();
            let grads = kernel
                .grad([&qf, &f(&want[1]), &f(&want[2]), &go.data.to_f32()], pos)
                .unwrap();
            for (i, g) in grads.iter().enumerate() {
                let w: Vec<f32> = rule[i]
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|&x| x as f32)
                    .collect();
                assert_eq!(bits(g), bits(&w), "operand {i}, T={t} pos={pos}");
            }
            assert!(kernel.run([&qf, &kf, &vf, &kcf, &vcf], ctx).is_err());
        }
    }
}
