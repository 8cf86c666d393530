//! Every op's gradient rule against central finite differences of the reference interpreter.
//!
//! For each op there is a case (inputs at points where the op is smooth; f64 where the op computes in
//! f64): the function `L = Σ_i Σ r_i ⊙ y_i` over the op's float results `y_i` with fixed random
//! `r_i` is differentiated by `autodiff::backward`, and each float operand's gradient is compared
//! with `(L(x + h·e) − L(x − h·e)) / 2h` element by element. Ops whose math runs in f32 inside (the
//! norms, rope, attention, the quantizer, the fused gated products) use a larger step and tolerance.
//! Ops with no gradient by design (`nn.equal`, `nn.stop_gradient`) are checked to give none; the
//! inference-only fusions (`bit.rms_norm_quant`, `bit.ternary_matmul_packed`) to refuse with a message.
//! The case table covers `OpKind::ALL`: a new op fails this test until it has a case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_ir::autodiff::backward;
use bitnet_ir::builder::FunctionBuilder;
use bitnet_ir::interp::run_function;
use bitnet_ir::{Attr, Attrs, Data, ElemType, MemoryWeights, NoWeights, OpKind, Tensor};
use bitnet_ir::{Function, TensorType, WeightStore};
use std::collections::BTreeSet;

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

fn f64s(shape: &[usize], rng: &mut Rng, lo: f64, hi: f64) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        Data::F64((0..n).map(|_| rng.uniform(lo, hi)).collect()),
    )
    .unwrap()
}

fn f32s(shape: &[usize], rng: &mut Rng, lo: f64, hi: f64) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(
        shape.to_vec(),
        Data::F32((0..n).map(|_| rng.uniform(lo, hi) as f32).collect()),
    )
    .unwrap()
}

/// Values away from zero (|x| in [0.2, 2]), for ops with a kink at 0.
fn away_from_zero(shape: &[usize], rng: &mut Rng) -> Tensor {
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            let m = rng.uniform(0.2, 2.0);
            if rng.next() < 0.5 { -m } else { m }
        })
        .collect();
    Tensor::new(shape.to_vec(), Data::F64(v)).unwrap()
}

fn i64s(shape: &[usize], v: Vec<i64>) -> Tensor {
    Tensor::new(shape.to_vec(), Data::I64(v)).unwrap()
}

/// One op applied to `inputs`.
struct Case {
    kind: OpKind,
    attrs: Attrs,
    inputs: Vec<Tensor>,
    /// Declared result types, for ops whose result shape is written (reshape, expand).
    declared: Vec<TensorType>,
    /// Finite-difference step and tolerance (absolute + relative to the larger gradient).
    step: f64,
    tol: f64,
}

fn case(kind: OpKind, attrs: Attrs, inputs: Vec<Tensor>) -> Case {
    Case {
        kind,
        attrs,
        inputs,
        declared: Vec::new(),
        step: 1e-6,
        tol: 1e-6,
    }
}

/// A case whose op computes in f32 inside.
fn case32(kind: OpKind, attrs: Attrs, inputs: Vec<Tensor>) -> Case {
    Case {
        step: 1e-2,
        tol: 2e-3,
        ..case(kind, attrs, inputs)
    }
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// The function `(x.., r..) -> Σ_i sum(r_i ⊙ y_i)` and the `r_i` values, over the op's float results.
fn loss_function(c: &Case, rng: &mut Rng) -> (Function, Vec<Tensor>) {
    let mut b = FunctionBuilder::new("loss");
    let args: Vec<_> = c
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| b.arg(&format!("x{i}"), t.ty()))
        .collect();
    let results = b
        .op_typed(c.kind, &args, c.attrs.clone(), c.declared.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", c.kind.name()));
    let mut total = None;
    let mut weights = Vec::new();
    for (i, &y) in results.iter().enumerate() {
        let ty = b.ty(y).clone();
        if !ty.elem.is_float() {
            continue;
        }
        let shape: Vec<usize> = ty
            .dims
            .iter()
            .map(|d| d.as_static().unwrap() as usize)
            .collect();
        let r = if ty.elem == ElemType::F64 {
            f64s(&shape, rng, -1.0, 1.0)
        } else {
            f32s(&shape, rng, -1.0, 1.0)
        };
        let ra = b.arg(&format!("r{i}"), r.ty());
        weights.push(r);
        let p = b.op1(OpKind::Mul, &[y, ra], Attrs::new()).unwrap();
        let s = b
            .op1(
                OpKind::ReduceSum,
                &[p],
                Attrs::new().with("keepdims", Attr::Bool(false)),
            )
            .unwrap();
        let s = if ty.elem == ElemType::F64 {
            s
        } else {
            b.op1(
                OpKind::Cast,
                &[s],
                Attrs::new().with("to", Attr::Type(ElemType::F64)),
            )
            .unwrap()
        };
        total = Some(match total {
            None => s,
            Some(t) => b.op1(OpKind::Add, &[t, s], Attrs::new()).unwrap(),
        });
    }
    let total = total.unwrap_or_else(|| panic!("{} has no float result", c.kind.name()));
    (b.finish(&[total]), weights)
}

fn loss_at(f: &Function, inputs: &[Tensor], w: &dyn WeightStore) -> f64 {
    run_function(f, inputs, w).unwrap()[0].data.to_f64()[0]
}

/// `t` with element `k` moved by `d`.
fn nudged(t: &Tensor, k: usize, d: f64) -> Tensor {
    let mut v = t.data.to_f64();
    v[k] += d;
    Tensor::new(t.shape.clone(), Data::from_f64(t.elem(), v)).unwrap()
}

fn check_case(c: &Case, rng: &mut Rng) {
    let name = c.kind.name();
    let (f, rs) = loss_function(c, rng);
    let mut inputs = c.inputs.clone();
    inputs.extend(rs);
    let g = backward(&f, &inputs, &NoWeights, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut checked = 0;
    for (i, x) in c.inputs.iter().enumerate() {
        if !x.elem().is_float() {
            assert!(
                g.args[i]
                    .as_ref()
                    .is_none_or(|v| v.iter().all(|&e| e == 0.0)),
                "{name}: operand {i} is not a float but got a gradient"
            );
            continue;
        }
        let an = g.args[i].clone().unwrap_or_else(|| vec![0.0; x.numel()]);
        let scale = an.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (k, &ak) in an.iter().enumerate() {
            let plus = loss_at(&f, &replace(&inputs, i, nudged(x, k, c.step)), &NoWeights);
            let minus = loss_at(&f, &replace(&inputs, i, nudged(x, k, -c.step)), &NoWeights);
            let fd = (plus - minus) / (2.0 * c.step);
            assert!(
                (fd - ak).abs() <= c.tol * scale,
                "{name}: d/d operand {i}[{k}]: rule {ak} vs finite difference {fd}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "{name}: no float operand was checked");
}

fn replace(inputs: &[Tensor], i: usize, t: Tensor) -> Vec<Tensor> {
    let mut v = inputs.to_vec();
    v[i] = t;
    v
}

fn cases(rng: &mut Rng) -> Vec<Case> {
    let mut out = Vec::new();
    let a34 = |rng: &mut Rng| f64s(&[3, 4], rng, -1.0, 1.0);
    for kind in [OpKind::Add, OpKind::Sub, OpKind::Mul] {
        out.push(case(
            kind,
            Attrs::new(),
            vec![a34(rng), f64s(&[4], rng, -1.0, 1.0)],
        ));
    }
    out.push(case(
        OpKind::Div,
        Attrs::new(),
        vec![a34(rng), f64s(&[3, 1], rng, 0.5, 2.0)],
    ));
    out.push(case(
        OpKind::Pow,
        Attrs::new(),
        vec![f64s(&[3, 4], rng, 0.5, 2.0), f64s(&[4], rng, -1.5, 2.5)],
    ));
    for kind in [OpKind::Max, OpKind::Min] {
        out.push(case(kind, Attrs::new(), vec![a34(rng), a34(rng)]));
    }
    for kind in [
        OpKind::Neg,
        OpKind::Round,
        OpKind::Silu,
        OpKind::Sigmoid,
        OpKind::Tanh,
        OpKind::Erf,
        OpKind::Exp,
        OpKind::Relu2,
    ] {
        out.push(case(
            kind,
            Attrs::new(),
            vec![f64s(&[3, 4], rng, -2.0, 2.0)],
        ));
    }
    for kind in [OpKind::Abs, OpKind::Relu] {
        out.push(case(kind, Attrs::new(), vec![away_from_zero(&[3, 4], rng)]));
    }
    for kind in [OpKind::Sqrt, OpKind::Reciprocal] {
        out.push(case(kind, Attrs::new(), vec![f64s(&[3, 4], rng, 0.5, 2.0)]));
    }
    out.push(case(
        OpKind::Clip,
        Attrs::new()
            .with("min", Attr::Float(-0.5))
            .with("max", Attr::Float(0.5)),
        vec![away_from_zero(&[3, 4], rng)],
    ));
    out.push(case(OpKind::Softmax, Attrs::new(), vec![a34(rng)]));
    let eps = Attrs::new().with("eps", Attr::Float(1e-5));
    out.push(case32(
        OpKind::RmsNorm,
        eps.clone(),
        vec![f64s(&[3, 8], rng, -2.0, 2.0), f64s(&[8], rng, 0.5, 1.5)],
    ));
    out.push(case32(
        OpKind::LayerNorm,
        eps,
        vec![
            f64s(&[3, 8], rng, -2.0, 2.0),
            f64s(&[8], rng, 0.5, 1.5),
            f64s(&[8], rng, -0.5, 0.5),
        ],
    ));
    let axis1 = Attrs::new()
        .with("axes", ints(&[1]))
        .with("keepdims", Attr::Bool(false));
    for kind in [OpKind::ReduceMean, OpKind::ReduceMax, OpKind::ReduceSum] {
        out.push(case(kind, axis1.clone(), vec![a34(rng)]));
    }
    let mut reshape = case(OpKind::Reshape, Attrs::new(), vec![a34(rng)]);
    reshape.declared = vec![TensorType::of(&[2, 6], ElemType::F64)];
    out.push(reshape);
    out.push(case(
        OpKind::Unsqueeze,
        Attrs::new().with("axes", ints(&[0])),
        vec![a34(rng)],
    ));
    out.push(case(
        OpKind::Squeeze,
        Attrs::new().with("axes", ints(&[1])),
        vec![f64s(&[3, 1, 4], rng, -1.0, 1.0)],
    ));
    let mut expand = case(
        OpKind::Expand,
        Attrs::new(),
        vec![f64s(&[1, 4], rng, -1.0, 1.0)],
    );
    expand.declared = vec![TensorType::of(&[3, 4], ElemType::F64)];
    out.push(expand);
    out.push(case(
        OpKind::Transpose,
        Attrs::new().with("perm", ints(&[1, 0])),
        vec![a34(rng)],
    ));
    out.push(case(
        OpKind::Concat,
        Attrs::new().with("axis", Attr::Int(0)),
        vec![a34(rng), f64s(&[2, 4], rng, -1.0, 1.0)],
    ));
    out.push(case(
        OpKind::Slice,
        Attrs::new()
            .with("starts", ints(&[1]))
            .with("ends", ints(&[4]))
            .with("axes", ints(&[1])),
        vec![a34(rng)],
    ));
    out.push(case(
        OpKind::Gather,
        Attrs::new().with("axis", Attr::Int(0)),
        vec![f64s(&[5, 3], rng, -1.0, 1.0), i64s(&[4], vec![4, 0, 4, -2])],
    ));
    out.push(case(
        OpKind::Embedding,
        Attrs::new(),
        vec![f64s(&[6, 3], rng, -1.0, 1.0), i64s(&[4], vec![1, 5, 1, 0])],
    ));
    out.push(Case {
        step: 1e-3,
        tol: 1e-4,
        ..case(
            OpKind::Cast,
            Attrs::new().with("to", Attr::Type(ElemType::F32)),
            vec![a34(rng)],
        )
    });
    out.push(case(
        OpKind::Where,
        Attrs::new(),
        vec![
            Tensor::new(vec![4], Data::Bool(vec![true, false, false, true])).unwrap(),
            a34(rng),
            f64s(&[1], rng, -1.0, 1.0),
        ],
    ));
    out.push(case(
        OpKind::MatMul,
        Attrs::new(),
        vec![
            f64s(&[2, 3, 4], rng, -1.0, 1.0),
            f64s(&[4, 5], rng, -1.0, 1.0),
        ],
    ));
    out.push(case32(
        OpKind::Rope,
        Attrs::new()
            .with("head_dim", Attr::Int(4))
            .with("theta", Attr::Float(10000.0)),
        vec![f64s(&[3, 8], rng, -1.0, 1.0), i64s(&[], vec![2])],
    ));
    out.push(case32(
        OpKind::Attention,
        Attrs::new()
            .with("heads", Attr::Int(4))
            .with("kv_heads", Attr::Int(2)),
        vec![
            f64s(&[3, 8], rng, -1.0, 1.0),
            f64s(&[3, 4], rng, -1.0, 1.0),
            f64s(&[3, 4], rng, -1.0, 1.0),
            f64s(&[6, 4], rng, -1.0, 1.0),
            f64s(&[6, 4], rng, -1.0, 1.0),
            i64s(&[], vec![2]),
        ],
    ));
    out.push(case32(
        OpKind::ActQuant,
        Attrs::new(),
        vec![away_from_zero(&[3, 8], rng)],
    ));
    out.push(case32(
        OpKind::TernaryMatmul,
        Attrs::new(),
        vec![
            Tensor::new(
                vec![3, 8],
                Data::I8((0..24).map(|i| ((i * 37) % 255 - 127) as i8).collect()),
            )
            .unwrap(),
            f32s(&[3, 1], rng, 10.0, 40.0),
            Tensor::new(
                vec![5, 8],
                Data::Ternary((0..40).map(|i| ((i * 7) % 3) as i8 - 1).collect()),
            )
            .unwrap(),
            f32s(&[1], rng, 0.5, 1.5),
            f32s(&[3, 5], rng, -1.0, 1.0),
        ],
    ));
    out.push(case32(
        OpKind::Relu2Mul,
        Attrs::new(),
        vec![
            Tensor::new(
                vec![3, 4],
                Data::F32(away_from_zero(&[3, 4], rng).data.to_f32()),
            )
            .unwrap(),
            f32s(&[3, 4], rng, -1.0, 1.0),
        ],
    ));
    out.push(case32(
        OpKind::SiluMul,
        Attrs::new(),
        vec![f32s(&[3, 4], rng, -2.0, 2.0), f32s(&[3, 4], rng, -1.0, 1.0)],
    ));
    out.push(case(
        OpKind::CrossEntropy,
        Attrs::new(),
        vec![f64s(&[4, 6], rng, -2.0, 2.0), i64s(&[4], vec![0, 5, 2, 2])],
    ));
    out
}

#[test]
fn every_gradient_rule_matches_finite_differences() {
    let mut rng = Rng(0x5EED);
    let cs = cases(&mut rng);
    let mut seen = BTreeSet::new();
    for c in &cs {
        check_case(c, &mut rng);
        seen.insert(c.kind);
    }
    // Covered by the tests below.
    seen.extend([
        OpKind::Equal,
        OpKind::StopGradient,
        OpKind::Constant,
        OpKind::Weight,
        OpKind::RmsNormQuant,
        OpKind::TernaryMatmulPacked,
    ]);
    let missing: Vec<_> = OpKind::ALL
        .iter()
        .filter(|k| !seen.contains(k))
        .map(|k| k.name())
        .collect();
    assert!(
        missing.is_empty(),
        "ops without a gradient check: {missing:?}"
    );
}

/// `L = sum(op(x) ⊙ r)` for an op of one operand that must pass no gradient to it.
fn no_gradient_through(kind: OpKind, x: Tensor, other: Option<Tensor>) -> Option<Vec<f64>> {
    let mut b = FunctionBuilder::new("f");
    let xa = b.arg("x", x.ty());
    let mut operands = vec![xa];
    let mut inputs = vec![x.clone()];
    if let Some(o) = other {
        operands.push(b.arg("o", o.ty()));
        inputs.push(o);
    }
    let y = b.op1(kind, &operands, Attrs::new()).unwrap();
    let y = b
        .op1(
            OpKind::Cast,
            &[y],
            Attrs::new().with("to", Attr::Type(ElemType::F64)),
        )
        .unwrap();
    // x + y keeps the function's dependence on x, so the loss is differentiable there.
    let x64 = b
        .op1(
            OpKind::Cast,
            &[xa],
            Attrs::new().with("to", Attr::Type(ElemType::F64)),
        )
        .unwrap();
    let s = b.op1(OpKind::Add, &[x64, y], Attrs::new()).unwrap();
    let l = b
        .op1(
            OpKind::ReduceSum,
            &[s],
            Attrs::new().with("keepdims", Attr::Bool(false)),
        )
        .unwrap();
    let f = b.finish(&[l]);
    backward(&f, &inputs, &NoWeights, 0).unwrap().args[0].clone()
}

#[test]
fn stop_gradient_and_equal_pass_no_gradient() {
    let mut rng = Rng(7);
    let x = f64s(&[2, 3], &mut rng, -1.0, 1.0);
    // Only the `x +` path contributes: the gradient is exactly one everywhere.
    let g = no_gradient_through(OpKind::StopGradient, x.clone(), None).unwrap();
    assert_eq!(g, vec![1.0; 6]);
    let g = no_gradient_through(OpKind::Equal, x.clone(), Some(x.clone())).unwrap();
    assert_eq!(g, vec![1.0; 6]);
}

#[test]
fn the_straight_through_estimator_is_the_identity_backward() {
    // x + stop_gradient(round(x) - x): round(x) forward, gradient 1 backward (BitNet's recipe).
    let mut b = FunctionBuilder::new("ste");
    let x = b.arg("x", TensorType::of(&[5], ElemType::F64));
    let r = b.op1(OpKind::Round, &[x], Attrs::new()).unwrap();
    let d = b.op1(OpKind::Sub, &[r, x], Attrs::new()).unwrap();
    let d = b.op1(OpKind::StopGradient, &[d], Attrs::new()).unwrap();
    let q = b.op1(OpKind::Add, &[x, d], Attrs::new()).unwrap();
    let sq = b.op1(OpKind::Mul, &[q, q], Attrs::new()).unwrap();
    let l = b
        .op1(
            OpKind::ReduceSum,
            &[sq],
            Attrs::new().with("keepdims", Attr::Bool(false)),
        )
        .unwrap();
    let f = b.finish(&[l]);
    let xs = vec![0.4, 1.6, -2.2, 2.5, -0.7];
    let input = Tensor::new(vec![5], Data::F64(xs.clone())).unwrap();
    let g = backward(&f, &[input], &NoWeights, 0).unwrap();
    // d/dx Σ q² = 2q with q = round(x) (ties to even: 2.5 → 2).
    let want: Vec<f64> = xs.iter().map(|v| 2.0 * v.round_ties_even()).collect();
    assert_eq!(g.args[0].as_deref(), Some(&want[..]));
    assert_eq!(g.loss, want.iter().map(|v| v * v / 4.0).sum::<f64>());
}

#[test]
fn weights_get_their_gradient_by_name_summed_over_uses() {
    let mut rng = Rng(11);
    let w = f64s(&[3, 4], &mut rng, -1.0, 1.0);
    let x = f64s(&[2, 3], &mut rng, -1.0, 1.0);
    let build = || {
        let mut b = FunctionBuilder::new("f");
        let xa = b.arg("x", x.ty());
        let attrs = Attrs::new().with("name", Attr::Str("w".into()));
        let w1 = b
            .op_typed(OpKind::Weight, &[], attrs.clone(), vec![w.ty()])
            .unwrap()[0];
        let w2 = b
            .op_typed(OpKind::Weight, &[], attrs, vec![w.ty()])
            .unwrap()[0];
        let y = b.op1(OpKind::MatMul, &[xa, w1], Attrs::new()).unwrap();
        let t = b.op1(OpKind::Tanh, &[w2], Attrs::new()).unwrap();
        let ys = b
            .op1(
                OpKind::ReduceSum,
                &[y],
                Attrs::new().with("keepdims", Attr::Bool(false)),
            )
            .unwrap();
        let ts = b
            .op1(
                OpKind::ReduceSum,
                &[t],
                Attrs::new().with("keepdims", Attr::Bool(false)),
            )
            .unwrap();
        let l = b.op1(OpKind::Mul, &[ys, ts], Attrs::new()).unwrap();
        b.finish(&[l])
    };
    let f = build();
    let store = |w: Tensor| {
        let mut m = MemoryWeights::default();
        m.tensors.insert("w".into(), w);
        m
    };
    let xs = std::slice::from_ref(&x);
    let g = backward(&f, xs, &store(w.clone()), 0).unwrap();
    let h = 1e-6;
    for (k, &gk) in g.weights["w"].iter().enumerate() {
        let plus = loss_at(&f, xs, &store(nudged(&w, k, h)));
        let minus = loss_at(&f, xs, &store(nudged(&w, k, -h)));
        let fd = (plus - minus) / (2.0 * h);
        assert!((fd - gk).abs() < 1e-6, "w[{k}]: {gk} vs {fd}");
    }
}

#[test]
fn inference_fusions_refuse_to_be_differentiated() {
    let mut rng = Rng(3);
    let mut b = FunctionBuilder::new("f");
    let x = f32s(&[2, 8], &mut rng, -1.0, 1.0);
    let w = f32s(&[8], &mut rng, 0.5, 1.5);
    let xa = b.arg("x", x.ty());
    let wa = b.arg("w", w.ty());
    let r = b
        .op(
            OpKind::RmsNormQuant,
            &[xa, wa],
            Attrs::new().with("eps_norm", Attr::Float(1e-5)),
        )
        .unwrap();
    let l = b
        .op1(
            OpKind::ReduceSum,
            &[r[1]],
            Attrs::new().with("keepdims", Attr::Bool(false)),
        )
        .unwrap();
    let f = b.finish(&[l]);
    let e = backward(&f, &[x, w], &NoWeights, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bit.rms_norm_quant has no gradient"), "{e}");
    // The packed matmul's rule is an error by construction; the call shows it is not a silent zero.
    let t = Tensor::new(vec![1], Data::F32(vec![1.0])).unwrap();
    let cx = bitnet_ir::ops::VjpCtx {
        inputs: &[&t],
        outputs: &[&t],
        cotangents: &[None],
        attrs: &Attrs::new(),
    };
    let e = OpKind::TernaryMatmulPacked.vjp(&cx).unwrap_err();
    assert!(e.contains("no gradient"), "{e}");
    assert!(OpKind::Constant.vjp(&cx).unwrap().is_empty());
    assert!(OpKind::Weight.vjp(&cx).unwrap().is_empty());
}
