//! Elementwise f32 kernels of a training step: unary ops and clip, binary ops with numpy
//! broadcasting (up to rank 4, resolved to strides when lowered), and the cotangent of a binary
//! op's operand, summed over its broadcast axes.
//!
//! Each gives the op's `eval` (or its gradient rule's) result bit for bit: the interpreter computes
//! in f64 and rounds once, which for `+ − × ÷`, `abs`, negation, rounding and `relu²` of f32 values is
//! the f32 operation itself; clip compares in f64 because its bounds are f64; a cotangent summed over
//! broadcast axes is summed in f64 in the interpreter's order (the output's elements in row-major
//! order), from +0.0.

use bitnet_ir::OpKind;
use bitnet_ir::attr::Attrs;

/// The most dimensions a broadcast kernel handles (more: the op's `eval`).
const RANK: usize = 4;

/// Each value rounded half to even: with SSE4.1's rounding instruction where the CPU has it (the
/// portable form calls the C library per element).
fn round_ties_even(x: &[f32]) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.1") {
        // SAFETY: the CPU has SSE4.1, the only feature `round_sse41` is compiled for.
        return unsafe { round_sse41(x) };
    }
    x.iter().map(|v| v.round_ties_even()).collect()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
unsafe fn round_sse41(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| v.round_ties_even()).collect()
}

/// What a unary kernel computes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum UnaryOp {
    Abs,
    Round,
    Neg,
    Relu2,
    /// `nn.clip`'s bounds (f64, as the attributes hold them).
    Clip(Option<f64>, Option<f64>),
    /// `nn.stop_gradient`: the value itself.
    Copy,
}

/// A unary f32 kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Unary(UnaryOp);

impl Unary {
    /// The kernel of `kind` (one of abs, round, neg, relu2, clip, stop_gradient).
    pub fn lower(kind: OpKind, attrs: &Attrs) -> Option<Unary> {
        let op = match kind {
            OpKind::Abs => UnaryOp::Abs,
            OpKind::Round => UnaryOp::Round,
            OpKind::Neg => UnaryOp::Neg,
            OpKind::Relu2 => UnaryOp::Relu2,
            OpKind::Clip => UnaryOp::Clip(attrs.float("min"), attrs.float("max")),
            OpKind::StopGradient => UnaryOp::Copy,
            _ => return None,
        };
        Some(Unary(op))
    }

    /// `op(x)` elementwise.
    pub fn run(&self, x: &[f32]) -> Result<Vec<f32>, String> {
        Ok(match self.0 {
            UnaryOp::Abs => x.iter().map(|v| v.abs()).collect(),
            UnaryOp::Round => round_ties_even(x),
            UnaryOp::Neg => x.iter().map(|v| -v).collect(),
            UnaryOp::Relu2 => x
                .iter()
                .map(|&v| {
                    let r = if v.is_nan() { v } else { v.max(0.0) };
                    r * r
                })
                .collect(),
            UnaryOp::Clip(lo, hi) => x
                .iter()
                .map(|&v| {
                    if v.is_nan() {
                        return v;
                    }
                    let v = f64::from(v);
                    let v = lo.map_or(v, |l| v.max(l));
                    hi.map_or(v, |h| v.min(h)) as f32
                })
                .collect(),
            UnaryOp::Copy => x.to_vec(),
        })
    }
}

/// The cotangent of `nn.relu2`'s operand: `g · 2·max(x, 0)`, in f64 as the rule computes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Relu2Grad;

impl Relu2Grad {
    /// `g · 2·max(x, 0)` elementwise.
    pub fn run(&self, x: &[f32], g: &[f32]) -> Result<Vec<f32>, String> {
        check(g, x.len(), "the cotangent")?;
        Ok(x.iter()
            .zip(g)
            .map(|(&x, &g)| (f64::from(g) * (2.0 * f64::from(x).max(0.0))) as f32)
            .collect())
    }
}

/// The arithmetic of a binary kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    fn of(kind: OpKind) -> Option<BinaryOp> {
        Some(match kind {
            OpKind::Add => BinaryOp::Add,
            OpKind::Sub => BinaryOp::Sub,
            OpKind::Mul => BinaryOp::Mul,
            OpKind::Div => BinaryOp::Div,
            _ => return None,
        })
    }
}

/// An output shape padded to rank 4 and an operand's strides over it (0 on a broadcast axis).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Broadcast {
    dims: [usize; RANK],
    strides: [usize; RANK],
    /// The operand's element count.
    len: usize,
}

impl Broadcast {
    /// How `input` broadcasts to `out` (numpy rules), if both have rank at most 4.
    fn of(input: &[usize], out: &[usize]) -> Option<Broadcast> {
        if out.len() > RANK || input.len() > out.len() {
            return None;
        }
        let mut dims = [1usize; RANK];
        dims[RANK - out.len()..].copy_from_slice(out);
        let mut shape = [1usize; RANK];
        shape[RANK - input.len()..].copy_from_slice(input);
        let mut strides = [0usize; RANK];
        let mut s = 1usize;
        for d in (0..RANK).rev() {
            if shape[d] == dims[d] {
                strides[d] = if shape[d] == 1 { 0 } else { s };
            } else if shape[d] != 1 {
                return None;
            }
            s = s.checked_mul(shape[d])?;
        }
        Some(Broadcast {
            dims,
            strides,
            len: s,
        })
    }

    /// Calls `row(i, j)` for every row of the output (all axes but the last) in order, with the
    /// offsets of its first element in this operand (`i`) and in `other` (`j`), which broadcasts
    /// to the same output.
    #[inline(always)]
    fn for_each_row(&self, other: &Broadcast, mut row: impl FnMut(usize, usize)) {
        let (d, s, t) = (self.dims, self.strides, other.strides);
        for i0 in 0..d[0] {
            for i1 in 0..d[1] {
                for i2 in 0..d[2] {
                    row(
                        i0 * s[0] + i1 * s[1] + i2 * s[2],
                        i0 * t[0] + i1 * t[1] + i2 * t[2],
                    );
                }
            }
        }
    }

    /// Calls `each(k, i)` for every output element `k` in row-major order with the operand's
    /// element `i` that it reads.
    #[inline(always)]
    fn for_each(&self, mut each: impl FnMut(usize, usize)) {
        let (d, s) = (self.dims, self.strides);
        let mut k = 0usize;
        for i0 in 0..d[0] {
            for i1 in 0..d[1] {
                for i2 in 0..d[2] {
                    let base = i0 * s[0] + i1 * s[1] + i2 * s[2];
                    for i3 in 0..d[3] {
                        each(k, base + i3 * s[3]);
                        k += 1;
                    }
                }
            }
        }
    }
}

/// A binary f32 kernel with broadcasting.
#[derive(Clone, Debug, PartialEq)]
pub struct Binary {
    op: BinaryOp,
    a: Broadcast,
    b: Broadcast,
}

impl Binary {
    /// The kernel of `kind` (add, sub, mul, div) for operands of shapes `a`, `b` and result `out`.
    pub fn lower(kind: OpKind, a: &[usize], b: &[usize], out: &[usize]) -> Option<Binary> {
        Some(Binary {
            op: BinaryOp::of(kind)?,
            a: Broadcast::of(a, out)?,
            b: Broadcast::of(b, out)?,
        })
    }

    /// `x ∘ y`, broadcast.
    pub fn run(&self, x: &[f32], y: &[f32]) -> Result<Vec<f32>, String> {
        check(x, self.a.len, "the left operand")?;
        check(y, self.b.len, "the right operand")?;
        // One loop per operation, so each is a plain loop the compiler vectorizes.
        match self.op {
            BinaryOp::Add => Ok(self.apply(x, y, |p, q| p + q)),
            BinaryOp::Sub => Ok(self.apply(x, y, |p, q| p - q)),
            BinaryOp::Mul => Ok(self.apply(x, y, |p, q| p * q)),
            BinaryOp::Div => Ok(self.apply(x, y, |p, q| p / q)),
        }
        .and_then(|out| {
            if out.len() == self.a.dims.iter().product::<usize>() {
                Ok(out)
            } else {
                Err("internal: a broadcast operand is shorter than its shape".into())
            }
        })
    }

    /// `op(x, y)`, broadcast (operand lengths checked).
    #[inline(always)]
    fn apply(&self, x: &[f32], y: &[f32], op: impl Fn(f32, f32) -> f32) -> Vec<f32> {
        let n: usize = self.a.dims.iter().product();
        if self.a.len == n && self.b.len == n {
            return x.iter().zip(y).map(|(&p, &q)| op(p, q)).collect();
        }
        if let ([q], true) = (y, self.a.len == n) {
            return x.iter().map(|&p| op(p, *q)).collect();
        }
        if let ([p], true) = (x, self.b.len == n) {
            return y.iter().map(|&q| op(*p, q)).collect();
        }
        // Row by row: the last axis of each operand is contiguous or broadcast.
        let mut out = Vec::with_capacity(n);
        let (sa, sb) = (self.a.strides[RANK - 1], self.b.strides[RANK - 1]);
        let cols = self.a.dims[RANK - 1];
        self.a.for_each_row(&self.b, |i, j| {
            let (Some(xr), Some(yr)) = (
                x.get(i..i + cols * sa.min(1)),
                y.get(j..j + cols * sb.min(1)),
            ) else {
                return;
            };
            match (xr, yr) {
                ([], []) => out.extend(std::iter::repeat_n(op(x[i], y[j]), cols)),
                ([], _) => out.extend(yr.iter().map(|&q| op(x[i], q))),
                (_, []) => out.extend(xr.iter().map(|&p| op(p, y[j]))),
                _ => out.extend(xr.iter().zip(yr).map(|(&p, &q)| op(p, q))),
            }
        });
        out
    }
}

/// The cotangent of one operand of `nn.add`, `nn.sub` or `nn.mul`.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryGrad {
    op: BinaryOp,
    /// Which operand.
    wrt: usize,
    a: Broadcast,
    b: Broadcast,
    /// The result's element count.
    n: usize,
}

impl BinaryGrad {
    /// The kernel for operand `wrt` of `kind` with operands of shapes `a`, `b` and result `out`.
    pub fn lower(
        kind: OpKind,
        wrt: usize,
        a: &[usize],
        b: &[usize],
        out: &[usize],
    ) -> Option<BinaryGrad> {
        let op = BinaryOp::of(kind).filter(|o| *o != BinaryOp::Div)?;
        (wrt < 2).then_some(())?;
        Some(BinaryGrad {
            op,
            wrt,
            a: Broadcast::of(a, out)?,
            b: Broadcast::of(b, out)?,
            n: bitnet_ir::tensor::checked_numel(out)?,
        })
    }

    /// Operand `wrt`'s cotangent from the operands `x`, `y` and the result's cotangent `g`.
    pub fn run(&self, x: &[f32], y: &[f32], g: &[f32]) -> Result<Vec<f32>, String> {
        check(x, self.a.len, "the left operand")?;
        check(y, self.b.len, "the right operand")?;
        check(g, self.n, "the cotangent")?;
        let (own, other, other_values) = if self.wrt == 0 {
            (&self.a, &self.b, y)
        } else {
            (&self.b, &self.a, x)
        };
        // Each element's share of the cotangent, exact in f64 (a product of two f32 values).
        let share = |k: usize, j: usize| -> f64 {
            let gv = f64::from(g[k]);
            match self.op {
                BinaryOp::Add => gv,
                BinaryOp::Sub if self.wrt == 0 => gv,
                BinaryOp::Sub => -gv,
                BinaryOp::Mul => gv * f64::from(other_values[j]),
                BinaryOp::Div => f64::NAN,
            }
        };
        if own.len == self.n && other.len == self.n {
            // Neither operand broadcasts: f32 arithmetic is the share rounded once.
            return Ok(match self.op {
                BinaryOp::Sub if self.wrt == 1 => g.iter().map(|v| -v).collect(),
                BinaryOp::Add | BinaryOp::Sub => g.to_vec(),
                BinaryOp::Mul => g.iter().zip(other_values).map(|(a, b)| a * b).collect(),
                BinaryOp::Div => return Err("internal: no division cotangent".into()),
            });
        }
        if own.len == self.n {
            // No broadcast axis: one share per element, rounded once.
            let mut out = Vec::with_capacity(self.n);
            other.for_each(|k, j| out.push(share(k, j) as f32));
            return Ok(out);
        }
        let mut ia = Vec::with_capacity(self.n);
        own.for_each(|_, i| ia.push(i));
        let mut acc = vec![0f64; own.len];
        other.for_each(|k, j| {
            if let Some(a) = ia.get(k).and_then(|&i| acc.get_mut(i)) {
                *a += share(k, j);
            }
        });
        Ok(acc.into_iter().map(|v| v as f32).collect())
    }
}

/// An error unless `v` has `n` elements.
pub(super) fn check(v: &[f32], n: usize, what: &str) -> Result<(), String> {
    if v.len() == n {
        Ok(())
    } else {
        Err(format!(
            "internal: {what} has {} elements, not {n}",
            v.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_ir::ops::{EvalCtx, VjpCtx};
    use bitnet_ir::tensor::{Data, Tensor};
    use bitnet_ir::weights::NoWeights;

    /// Values with ties to round, signed zeros, and products that round.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                match i % 7 {
                    0 => 2.5,
                    1 => -0.0,
                    2 => -3.5,
                    _ => (s as f32 / u32::MAX as f32 - 0.5) * 300.0,
                }
            })
            .collect()
    }

    fn tensor(shape: &[usize], seed: u32) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape: shape.to_vec(),
            data: Data::F32(values(n, seed)),
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn eval(kind: OpKind, attrs: &Attrs, inputs: &[&Tensor], out: &[usize]) -> Vec<f32> {
        let shapes = vec![out.to_vec()];
        let cx = EvalCtx {
            inputs,
            attrs,
            result_shapes: &shapes,
            result_elems: &[bitnet_ir::ElemType::F32],
            weights: &NoWeights,
        };
        kind.eval(&cx).unwrap().remove(0).data.to_f32()
    }

    const SHAPES: [(&[usize], &[usize], &[usize]); 6] = [
        (&[5, 7], &[5, 7], &[5, 7]),
        (&[5, 7], &[5, 1], &[5, 7]),
        (&[5, 7], &[], &[5, 7]),
        (&[], &[5, 1], &[5, 1]),
        (&[3, 1, 4], &[2, 1], &[3, 2, 4]),
        (&[1, 7], &[5, 7], &[5, 7]),
    ];

    #[test]
    fn unary_kernels_are_eval_bit_for_bit() {
        let x = tensor(&[9, 13], 3);
        let cases = [
            (OpKind::Abs, Attrs::new()),
            (OpKind::Round, Attrs::new()),
            (OpKind::Neg, Attrs::new()),
            (OpKind::Relu2, Attrs::new()),
            (OpKind::StopGradient, Attrs::new()),
            (
                OpKind::Clip,
                Attrs::new()
                    .with("min", bitnet_ir::attr::Attr::Float(1e-5))
                    .with("max", bitnet_ir::attr::Attr::Float(127.0)),
            ),
            (
                OpKind::Clip,
                Attrs::new().with("min", bitnet_ir::attr::Attr::Float(-128.0)),
            ),
        ];
        for (kind, attrs) in cases {
            let k = Unary::lower(kind, &attrs).unwrap();
            let got = k.run(x.data.to_f32().as_slice()).unwrap();
            let want = eval(kind, &attrs, &[&x], &x.shape);
            assert_eq!(bits(&got), bits(&want), "{}", kind.name());
        }
    }

    #[test]
    fn the_relu2_cotangent_is_the_rule_bit_for_bit() {
        let (x, g) = (tensor(&[9, 13], 4), tensor(&[9, 13], 5));
        let y = Tensor {
            shape: x.shape.clone(),
            data: Data::F32(eval(OpKind::Relu2, &Attrs::new(), &[&x], &x.shape)),
        };
        let g64 = g.data.to_f64();
        let rule = OpKind::Relu2
            .vjp(&VjpCtx {
                inputs: &[&x],
                outputs: &[&y],
                cotangents: &[Some(&g64)],
                attrs: &Attrs::new(),
            })
            .unwrap();
        let want: Vec<f32> = rule[0]
            .as_ref()
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect();
        let got = Relu2Grad.run(&x.data.to_f32(), &g.data.to_f32()).unwrap();
        assert_eq!(bits(&got), bits(&want));
    }

    #[test]
    fn binary_kernels_are_eval_bit_for_bit() {
        for kind in [OpKind::Add, OpKind::Sub, OpKind::Mul, OpKind::Div] {
            for (i, (a, b, out)) in SHAPES.iter().enumerate() {
                let (x, y) = (tensor(a, i as u32), tensor(b, 50 + i as u32));
                let k = Binary::lower(kind, a, b, out).unwrap();
                let got = k
                    .run(x.data.to_f32().as_slice(), y.data.to_f32().as_slice())
                    .unwrap();
                let want = eval(kind, &Attrs::new(), &[&x, &y], out);
                assert_eq!(bits(&got), bits(&want), "{} {a:?} {b:?}", kind.name());
            }
        }
        assert!(Binary::lower(OpKind::Add, &[2, 3], &[4, 3], &[4, 3]).is_none());
        assert!(Binary::lower(OpKind::Add, &[1; 5], &[1; 5], &[1; 5]).is_none());
    }

    #[test]
    fn binary_cotangents_are_the_rule_bit_for_bit() {
        for kind in [OpKind::Add, OpKind::Sub, OpKind::Mul] {
            for (i, (a, b, out)) in SHAPES.iter().enumerate() {
                let (x, y) = (tensor(a, i as u32), tensor(b, 50 + i as u32));
                let z = Tensor {
                    shape: out.to_vec(),
                    data: Data::F32(eval(kind, &Attrs::new(), &[&x, &y], out)),
                };
                let g = tensor(out, 99 + i as u32);
                let g64 = g.data.to_f64();
                let rule = kind
                    .vjp(&VjpCtx {
                        inputs: &[&x, &y],
                        outputs: &[&z],
                        cotangents: &[Some(&g64)],
                        attrs: &Attrs::new(),
                    })
                    .unwrap();
                for (wrt, want) in rule.iter().enumerate() {
                    let k = BinaryGrad::lower(kind, wrt, a, b, out).unwrap();
                    let got = k
                        .run(
                            x.data.to_f32().as_slice(),
                            y.data.to_f32().as_slice(),
                            g.data.to_f32().as_slice(),
                        )
                        .unwrap();
                    let want: Vec<f32> = want.as_ref().unwrap().iter().map(|&v| v as f32).collect();
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{} wrt {wrt} {a:?} {b:?}",
                        kind.name()
                    );
                }
            }
        }
    }
}
