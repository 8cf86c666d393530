//! Property test: every rewrite rule of `lower-bitlinear` preserves the interpreter's result.
//!
//! Each case builds one BitLinear form (the forms the importers and torch exporters write; together
//! they exercise every rule, which `every_rule_is_exercised` checks through `--explain` output) with
//! random sizes, activations, weights and scales, runs the reference interpreter before and after the
//! default pipeline, and requires the lowering to happen (one `bit.ternary_matmul`) and the results to
//! agree to 1e-5 relative (summation order differs; random activations sit on a rounding tie with
//! negligible probability), or, where the sum cancels to near 0, within the f32 summation bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_ir::tensor::max_relative_error;
use bitnet_ir::{Data, MemoryWeights, OpKind, Tensor, interp, text};
use bitnet_passes::{DEFAULT_PIPELINE, Overlay, PassContext, PassManager, parse_pipeline};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// The act-quant chain on %x, written one of three ways; defines %s (scale), %q (int values), %xh.
fn act_chain(variant: u8) -> &'static str {
    match variant % 3 {
        0 => {
            "  %c127 = nn.constant {value = [127.0]} : tensor<f32>\n  %ax = nn.abs %x : tensor<TxKxf32>\n  %mx = nn.reduce_max %ax {axes = [-1], keepdims = true} : tensor<Tx1xf32>\n  %cm = nn.clip %mx {min = 1e-5} : tensor<Tx1xf32>\n  %s = nn.div %c127, %cm : tensor<Tx1xf32>\n  %xs = nn.mul %x, %s : tensor<TxKxf32>\n  %r = nn.round %xs : tensor<TxKxf32>\n  %q = nn.clip %r {max = 127.0, min = -128.0} : tensor<TxKxf32>\n  %xh = nn.div %q, %s : tensor<TxKxf32>\n"
        }
        1 => {
            "  %c127 = nn.constant {value = [127.0]} : tensor<f32>\n  %ax = nn.abs %x : tensor<TxKxf32>\n  %mx = nn.reduce_max %ax {axes = [-1], keepdims = true} : tensor<Tx1xf32>\n  %cm = nn.clip %mx {min = 1e-5} : tensor<Tx1xf32>\n  %rc = nn.reciprocal %cm : tensor<Tx1xf32>\n  %s = nn.mul %rc, %c127 : tensor<Tx1xf32>\n  %xs = nn.mul %s, %x : tensor<TxKxf32>\n  %r = nn.round %xs : tensor<TxKxf32>\n  %lo = nn.constant {value = [-128.0]} : tensor<f32>\n  %hi = nn.constant {value = [127.0]} : tensor<f32>\n  %mm = nn.max %r, %lo : tensor<TxKxf32>\n  %q = nn.min %mm, %hi : tensor<TxKxf32>\n  %xh = nn.div %q, %s : tensor<TxKxf32>\n"
        }
        _ => {
            "  %c127 = nn.constant {value = [127.0]} : tensor<f32>\n  %ax = nn.abs %x : tensor<TxKxf32>\n  %mx = nn.reduce_max %ax {axes = [-1], keepdims = true} : tensor<Tx1xf32>\n  %cm = nn.clip %mx {min = 1e-5} : tensor<Tx1xf32>\n  %rc = nn.reciprocal %cm : tensor<Tx1xf32>\n  %s = nn.mul %c127, %rc : tensor<Tx1xf32>\n  %xs = nn.mul %x, %s : tensor<TxKxf32>\n  %r = nn.round %xs : tensor<TxKxf32>\n  %q0 = nn.clip %r {max = 127.0, min = -128.0} : tensor<TxKxf32>\n  %i8 = nn.cast %q0 {to = i8} : tensor<TxKxi8>\n  %q = nn.cast %i8 {to = f32} : tensor<TxKxf32>\n  %xh = nn.div %q, %s : tensor<TxKxf32>\n"
        }
    }
}

/// The projection and epilogue of one form, producing %y from %xh / %q and the weights.
fn form_body(form: u8) -> &'static str {
    match form % 10 {
        // HF autobitlinear offline: ternary weight, × γ.
        0 => {
            "  %w = nn.weight {name = \"t\"} : tensor<NxKxternary>\n  %wf = nn.cast %w {to = f32} : tensor<NxKxf32>\n  %wT = nn.transpose %wf {perm = [1, 0]} : tensor<KxNxf32>\n  %m = nn.matmul %xh, %wT : tensor<TxNxf32>\n  %g = nn.weight {name = \"g\"} : tensor<1xf32>\n  %y = nn.mul %m, %g : tensor<TxNxf32>\n"
        }
        // The same with the scale first.
        1 => {
            "  %w = nn.weight {name = \"t\"} : tensor<NxKxternary>\n  %wf = nn.cast %w {to = f32} : tensor<NxKxf32>\n  %wT = nn.transpose %wf {perm = [1, 0]} : tensor<KxNxf32>\n  %m = nn.matmul %xh, %wT : tensor<TxNxf32>\n  %g = nn.weight {name = \"g\"} : tensor<1xf32>\n  %y = nn.mul %g, %m : tensor<TxNxf32>\n"
        }
        // HF bitlinear: int values, ÷ (1/γ · s).
        2 => {
            "  %w = nn.weight {name = \"t\"} : tensor<NxKxternary>\n  %wf = nn.cast %w {to = f32} : tensor<NxKxf32>\n  %wT = nn.transpose %wf {perm = [1, 0]} : tensor<KxNxf32>\n  %m = nn.matmul %q, %wT : tensor<TxNxf32>\n  %g = nn.weight {name = \"g\"} : tensor<1xf32>\n  %d = nn.mul %g, %s : tensor<Tx1xf32>\n  %y = nn.div %m, %d : tensor<TxNxf32>\n"
        }
        // The ONNX int8 form with the scale product the other way round.
        3 => {
            "  %w = nn.weight {name = \"dkn\"} : tensor<KxNxf32>\n  %m = nn.matmul %q, %w : tensor<TxNxf32>\n  %g = nn.weight {name = \"g\"} : tensor<1xf32>\n  %d = nn.mul %s, %g : tensor<Tx1xf32>\n  %y = nn.div %m, %d : tensor<TxNxf32>\n"
        }
        // A folded {-γ,0,γ} weight in [K, N] (dynamo export), then ÷ a scalar.
        4 => {
            "  %w = nn.weight {name = \"dkn\"} : tensor<KxNxf32>\n  %m = nn.matmul %xh, %w : tensor<TxNxf32>\n  %g = nn.weight {name = \"g\"} : tensor<1xf32>\n  %y = nn.div %m, %g : tensor<TxNxf32>\n"
        }
        // A {-γ,0,γ} weight in [N, K] (GGUF F32).
        5 => {
            "  %w = nn.weight {name = \"dnk\"} : tensor<NxKxf32>\n  %wT = nn.transpose %w {perm = [1, 0]} : tensor<KxNxf32>\n  %y = nn.matmul %xh, %wT : tensor<TxNxf32>\n"
        }
        // Online master weights [N, K] (HF online, torch.onnx TorchScript), with × 1.0 in s_w.
        6 => {
            "  %w = nn.weight {name = \"master_nk\"} : tensor<NxKxf32>\n  %aw = nn.abs %w : tensor<NxKxf32>\n  %mean = nn.reduce_mean %aw {keepdims = false} : tensor<f32>\n  %mc = nn.clip %mean {min = 1e-5} : tensor<f32>\n  %rw = nn.reciprocal %mc : tensor<f32>\n  %c1 = nn.constant {value = [1.0]} : tensor<f32>\n  %sw = nn.mul %rw, %c1 : tensor<f32>\n  %ws = nn.mul %w, %sw : tensor<NxKxf32>\n  %wr = nn.round %ws : tensor<NxKxf32>\n  %wc = nn.clip %wr {max = 1.0, min = -1.0} : tensor<NxKxf32>\n  %wq = nn.div %wc, %sw : tensor<NxKxf32>\n  %wqT = nn.transpose %wq {perm = [1, 0]} : tensor<KxNxf32>\n  %y = nn.matmul %xh, %wqT : tensor<TxNxf32>\n"
        }
        // Online master weights stored [K, N].
        7 => {
            "  %w = nn.weight {name = \"master_kn\"} : tensor<KxNxf32>\n  %aw = nn.abs %w : tensor<KxNxf32>\n  %mean = nn.reduce_mean %aw {keepdims = false} : tensor<f32>\n  %mc = nn.clip %mean {min = 1e-5} : tensor<f32>\n  %one = nn.constant {value = [1.0]} : tensor<f32>\n  %sw = nn.div %one, %mc : tensor<f32>\n  %ws = nn.mul %w, %sw : tensor<KxNxf32>\n  %wr = nn.round %ws : tensor<KxNxf32>\n  %wc = nn.clip %wr {max = 1.0, min = -1.0} : tensor<KxNxf32>\n  %wq = nn.div %wc, %sw : tensor<KxNxf32>\n  %y = nn.matmul %xh, %wq : tensor<TxNxf32>\n"
        }
        // Int values with a {-γ,0,γ} weight in [N, K], rescaled.
        9 => {
            "  %w = nn.weight {name = \"dnk\"} : tensor<NxKxf32>\n  %wT = nn.transpose %w {perm = [1, 0]} : tensor<KxNxf32>\n  %m = nn.matmul %q, %wT : tensor<TxNxf32>\n  %g = nn.weight {name = \"g\"} : tensor<1xf32>\n  %d = nn.mul %g, %s : tensor<Tx1xf32>\n  %y = nn.div %m, %d : tensor<TxNxf32>\n"
        }
        // A ternary weight times a scale, then the scale folded from the other side.
        _ => {
            "  %w = nn.weight {name = \"t\"} : tensor<NxKxternary>\n  %wf = nn.cast %w {to = f32} : tensor<NxKxf32>\n  %wT = nn.transpose %wf {perm = [1, 0]} : tensor<KxNxf32>\n  %m = nn.matmul %xh, %wT : tensor<TxNxf32>\n  %g = nn.weight {name = \"g\"} : tensor<1xf32>\n  %m2 = nn.mul %m, %g : tensor<TxNxf32>\n  %g2 = nn.weight {name = \"g\"} : tensor<1xf32>\n  %y = nn.div %m2, %g2 : tensor<TxNxf32>\n"
        }
    }
}

/// The IR of one case, with T, K, N substituted.
fn program(form: u8, act: u8, t: usize, k: usize, n: usize) -> String {
    let body = format!(
        "func @main(%x: tensor<TxKxf32>) -> (tensor<TxNxf32>) {{\n{}{}  return %y\n}}\n",
        act_chain(act),
        form_body(form)
    );
    body.replace("TxKx", &format!("{t}x{k}x"))
        .replace("TxNx", &format!("{t}x{n}x"))
        .replace("NxKx", &format!("{n}x{k}x"))
        .replace("KxNx", &format!("{k}x{n}x"))
        .replace("Tx1x", &format!("{t}x1x"))
}

/// A small deterministic generator (xorshift), so a case is described by its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn weights(rng: &mut Rng, k: usize, n: usize) -> MemoryWeights {
    let mut w = MemoryWeights::default();
    let tern: Vec<i8> = (0..n * k).map(|_| (rng.next() % 3) as i8 - 1).collect();
    let gamma = 0.01 + rng.uniform().abs();
    w.tensors.insert(
        "t".into(),
        Tensor::new(vec![n, k], Data::I8(tern.clone())).unwrap(),
    );
    w.tensors.insert(
        "g".into(),
        Tensor::new(vec![1], Data::F32(vec![gamma])).unwrap(),
    );
    let dense = |v: &[i8]| {
        v.iter()
            .map(|&t| f32::from(t) * gamma)
            .collect::<Vec<f32>>()
    };
    w.tensors.insert(
        "dnk".into(),
        Tensor::new(vec![n, k], Data::F32(dense(&tern))).unwrap(),
    );
    let mut kn = vec![0i8; n * k];
    for r in 0..n {
        for c in 0..k {
            kn[c * n + r] = tern[r * k + c];
        }
    }
    w.tensors.insert(
        "dkn".into(),
        Tensor::new(vec![k, n], Data::F32(dense(&kn))).unwrap(),
    );
    let master =
        |len: usize, rng: &mut Rng| (0..len).map(|_| rng.uniform() * 0.05).collect::<Vec<f32>>();
    w.tensors.insert(
        "master_nk".into(),
        Tensor::new(vec![n, k], Data::F32(master(n * k, rng))).unwrap(),
    );
    w.tensors.insert(
        "master_kn".into(),
        Tensor::new(vec![k, n], Data::F32(master(n * k, rng))).unwrap(),
    );
    w
}

/// The largest elementwise difference of two same-shaped tensors.
fn max_abs_difference(a: &Tensor, b: &Tensor) -> f64 {
    let (x, y) = (a.data.to_f32(), b.data.to_f32());
    x.iter()
        .zip(&y)
        .map(|(&p, &q)| (f64::from(p) - f64::from(q)).abs())
        .fold(0.0, f64::max)
}

/// How far two f32 evaluations of one output may honestly differ when the sum cancels: the
/// standard backward bound of a k-term f32 sum, (k + 4)·2⁻²⁴ (four more rounding steps for the
/// scales), times the largest Σ|x̂|·|w| over the rows. A relative error alone cannot judge an output
/// the integer sum makes exactly 0 while the reference's float sum leaves 1e-8 of rounding noise.
fn summation_bound(form: u8, store: &MemoryWeights, x: &Tensor, k: usize) -> f64 {
    let scalar = |name: &str| {
        store.tensors[name]
            .data
            .to_f32()
            .iter()
            .map(|v| f64::from(v.abs()))
            .collect::<Vec<f64>>()
    };
    let weight = match form % 10 {
        6 | 7 => {
            let name = if form % 10 == 6 {
                "master_nk"
            } else {
                "master_kn"
            };
            let w = scalar(name);
            (w.iter().sum::<f64>() / w.len() as f64).max(1e-5)
        }
        _ => scalar("g")[0],
    };
    let values = x.data.to_f32();
    let l1 = values
        .chunks(k)
        .map(|row| {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            // x̂ is x re-rounded to a 1/127 step of the row's absmax: at most half a step larger.
            row.iter().map(|v| f64::from(v.abs())).sum::<f64>() + k as f64 * f64::from(max) / 254.0
        })
        .fold(0.0, f64::max);
    (k as f64 + 4.0) * f64::powi(2.0, -24) * l1 * weight
}

/// Runs a case; returns the rules that fired.
fn check_case(
    form: u8,
    act: u8,
    t: usize,
    k: usize,
    n: usize,
    seed: u64,
) -> Result<Vec<String>, TestCaseError> {
    let src = program(form, act, t, k, n);
    let mut rng = Rng(seed | 1);
    let store = weights(&mut rng, k, n);
    let x = Tensor::new(
        vec![t, k],
        Data::F32((0..t * k).map(|_| rng.uniform() * 3.0).collect()),
    )
    .unwrap();
    let mut m = bitnet_ir::parse_and_verify(&src, "case.bir")
        .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
    let before = interp::run(&m, "main", std::slice::from_ref(&x), &store)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut cx = PassContext::new(Some(&store));
    cx.explain = true;
    let mut pm = PassManager::new(parse_pipeline(DEFAULT_PIPELINE).unwrap());
    pm.verify_each = true;
    pm.run(&mut m, &mut cx)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let lowered = m.functions[0]
        .op_order()
        .filter(|&o| m.functions[0].op(o).kind == OpKind::TernaryMatmul)
        .count();
    prop_assert_eq!(
        lowered,
        1,
        "form {} act {}: not lowered\n{}",
        form,
        act,
        text::print_module(&m)
    );
    let weights = Overlay {
        derived: &cx.derived,
        base: Some(&store),
    };
    let after = interp::run(&m, "main", std::slice::from_ref(&x), &weights)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let err = max_relative_error(&after[0], &before[0]).unwrap();
    let diff = max_abs_difference(&after[0], &before[0]);
    let bound = summation_bound(form, &store, &x, k);
    prop_assert!(
        err <= 1e-5 || diff <= bound,
        "form {} act {}: relative error {}, difference {} over the summation bound {}",
        form,
        act,
        err,
        diff,
        bound
    );
    let rules = cx
        .notes
        .iter()
        .filter_map(|n| n.strip_prefix("lowered %y: "))
        .flat_map(|r| r.split(", ").map(str::to_string))
        .collect();
    Ok(rules)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lowering_preserves_the_interpreter_result(
        form in 0u8..11, act in 0u8..3, t in 1usize..5, k in 1usize..40, n in 1usize..9, seed in any::<u64>(),
    ) {
        check_case(form, act, t, k, n, seed)?;
    }
}

#[test]
fn every_rule_is_exercised() {
    let mut fired = BTreeSet::new();
    for form in 0..11 {
        for act in 0..3 {
            fired.extend(
                check_case(
                    form,
                    act,
                    3,
                    17,
                    5,
                    0x9e37_79b9_7f4a_7c15 ^ u64::from(form * 3 + act),
                )
                .unwrap(),
            );
        }
    }
    let all: BTreeSet<String> = bitnet_passes::rules::bitlinear::all()
        .iter()
        .map(|r| r.name.to_string())
        .collect();
    let missing: Vec<&String> = all.difference(&fired).collect();
    assert!(missing.is_empty(), "rules no case exercises: {missing:?}");
}

#[test]
fn an_all_zero_one_by_one_weight_still_lowers() {
    // Found by the property test in CI: T = K = N = 1 with a zero weight, in every form.
    for form in 0..11 {
        for seed in 0..12u64 {
            check_case(form, 0, 1, 1, 1, seed).unwrap();
        }
    }
}

/// A row whose ternary sum cancels exactly: the lowered integer sum is 0 where the float reference
/// leaves rounding noise (-8.3e-8), which the summation bound accepts (CI found it at random).
#[test]
fn an_exactly_cancelling_sum_is_within_the_summation_bound() {
    check_case(0, 0, 1, 31, 1, 14_559_186_883_534_211_350).unwrap();
}
