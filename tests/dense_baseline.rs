//! The full-precision baseline that `bitnetc bench` compares against: `dense-baseline` (in
//! `DENSE_BASELINE_PIPELINE`) and `compile_cpu_with(CpuOptions { full_precision: true, .. })` on
//! hf-tiny's `packed` form. The dense IR keeps no ternary op and, being a different numeric recipe
//! (no activation quantization, γ rounded to bf16), stays close to transformers' BitNet logits only
//! within a loose measured bound; the CPU build of it reproduces the interpreter on the same dense IR
//! (≤ 1e-4 · max|logit|, prefill and cached decode); its projection weights take ≥ 4× the bytes of the
//! packed ternary ones. The new `Add` kernel (the baseline's residual adds) gets its differential test
//! here: bit-identical to `nn.add`, at awkward sizes, split into uneven row ranges, in place.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::npy;
use bitnet_ir::ops::EvalCtx;
use bitnet_ir::{Attrs, Data, ElemType, MemoryWeights, NoWeights, OpKind, Tensor};
use bitnet_passes::{DENSE_BASELINE_PIPELINE, Overlay, PassContext, PassManager, parse_pipeline};
use bitnetc::backends::cpu::jit::compile_kernels;
use bitnetc::backends::kernel::{AddParams, KernelKind};
use bitnetc::{CpuOptions, Model, OpenOptions, OptimizeOptions};
use serde_json::Value;
use std::path::PathBuf;
use support::{argmax, ids, root};

fn packed_dir() -> PathBuf {
    root().join("tests/fixtures/hf-tiny/packed")
}

/// The prompt and transformers' greedy continuation.
fn prompt_and_greedy() -> (Vec<i64>, Vec<i64>) {
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(packed_dir().join("reference.json")).unwrap(),
    )
    .unwrap();
    (ids(&r["prompt_ids"]), ids(&r["greedy_new_tokens"]))
}

fn import(context: usize) -> Model {
    OpenOptions {
        context: Some(context as u64),
        ..Default::default()
    }
    .open(&packed_dir())
    .unwrap_or_else(|e| panic!("{e}"))
}

fn count(m: &Model, kind: OpKind) -> usize {
    m.module
        .functions
        .iter()
        .map(|f| f.op_order().filter(|&o| f.op(o).kind == kind).count())
        .sum()
}

/// The dense IR's logits on `tokens` from the reference interpreter, and the derived weights.
fn dense_interpreter_logits(tokens: &[i64]) -> (Vec<f32>, Model, MemoryWeights) {
    let mut m = import(tokens.len());
    let opt = bitnetc::optimize(&mut m, &OptimizeOptions::passes(DENSE_BASELINE_PIPELINE))
        .unwrap_or_else(|e| panic!("{e}"));
    for n in &opt.notes {
        println!("{n}");
    }
    let weights = Overlay {
        derived: &opt.derived,
        base: Some(m.weights.as_ref()),
    };
    let logits = bitnetc::prompt_logits(&m.module, &weights, tokens)
        .unwrap_or_else(|e| panic!("{e}"))
        .data
        .to_f32();
    (logits, m, opt.derived)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, x| a.max(x.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn dense_ir_has_no_ternary_op_and_stays_near_transformers() {
    let (prompt, _) = prompt_and_greedy();
    let (ours, m, derived) = dense_interpreter_logits(&prompt);
    for kind in [
        OpKind::TernaryMatmul,
        OpKind::TernaryMatmulPacked,
        OpKind::ActQuant,
        OpKind::RmsNormQuant,
    ] {
        assert_eq!(count(&m, kind), 0, "{} left in the dense IR", kind.name());
    }
    // 4 layers × 7 projections, and the lm_head.
    assert_eq!(count(&m, OpKind::MatMul), 4 * 7 + 1, "dense matmuls");
    assert_eq!(
        derived.tensors.len(),
        4 * 7,
        "one dense weight per projection"
    );
    for (name, t) in &derived.tensors {
        assert!(name.ends_with("#dense.bf16"), "derived weight {name}");
        assert_eq!(t.data.elem(), ElemType::BF16, "{name} is stored in bf16");
    }
    let theirs = npy::read(&packed_dir().join("logits.npy"))
        .unwrap()
        .data
        .to_f32();
    let vocab = 1000;
    let relative = max_diff(&ours, &theirs) / max_abs(&theirs);
    let ours_arg: Vec<i64> = ours.chunks(vocab).map(argmax).collect();
    let theirs_arg: Vec<i64> = theirs.chunks(vocab).map(argmax).collect();
    let same = ours_arg
        .iter()
        .zip(&theirs_arg)
        .filter(|(a, b)| a == b)
        .count();
    println!(
        "dense baseline vs transformers' BitNet logits: max|diff| = {relative:.3e} · max|logit|, \
         argmax equal at {same}/{} positions",
        ours_arg.len()
    );
    // A different recipe (unquantized activations), so only close: the bound is loose on purpose.
    assert!(relative < 0.1, "dense logits differ by {relative} · max");
    assert!(
        2 * same > ours_arg.len(),
        "argmax equal at only {same} positions"
    );
}

#[test]
fn cpu_full_precision_build_matches_the_interpreter_on_the_dense_ir() {
    let (prompt, greedy) = prompt_and_greedy();
    let mut tokens = prompt.clone();
    tokens.extend(&greedy[..greedy.len() - 1]);
    let (want, _, _) = dense_interpreter_logits(&tokens);
    let vocab = 1000;
    let mut m = import(tokens.len());
    let options = CpuOptions {
        threads: 2,
        full_precision: true,
        ..CpuOptions::default()
    };
    let mut exec = bitnetc::compile_cpu(&mut m, &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(exec.program().vocab as usize, vocab);
    let bound = 1e-4 * max_abs(&want);
    // Prefill of the prompt.
    let got = exec.forward(&prompt, 0).unwrap().to_vec();
    let expected = &want[..prompt.len() * vocab];
    let d = max_diff(&got, expected);
    println!(
        "cpu full precision vs interpreter (prefill): max|diff| = {:.3e} · max|logit|",
        d / max_abs(&want)
    );
    assert!(d <= bound, "prefill logits differ by {d}");
    let got_arg: Vec<i64> = got.chunks(vocab).map(argmax).collect();
    let want_arg: Vec<i64> = expected.chunks(vocab).map(argmax).collect();
    assert_eq!(got_arg, want_arg, "argmax per position");
    // Decode through the KV cache, one token per step, teacher-forced.
    let mut worst = 0f32;
    for p in prompt.len()..tokens.len() {
        let got = exec.forward(&tokens[p..=p], p as u64).unwrap().to_vec();
        let expected = &want[p * vocab..(p + 1) * vocab];
        let d = max_diff(&got, expected);
        worst = worst.max(d);
        assert!(d <= bound, "decode step at position {p} differs by {d}");
        assert_eq!(argmax(&got), argmax(expected), "argmax at position {p}");
    }
    println!(
        "cpu full precision vs interpreter (decode): max|diff| = {:.3e} · max|logit|",
        worst / max_abs(&want)
    );
}

/// The bytes of the derived weights whose names contain `marker`, after `pipeline`.
fn derived_bytes(pipeline: &str, marker: &str) -> usize {
    let m = import(16);
    let mut module = m.module.clone();
    let mut cx = PassContext::new(Some(m.weights.as_ref()));
    cx.pack_layout = bitnetc::cpu_pack_layout();
    PassManager::new(parse_pipeline(pipeline).unwrap())
        .run(&mut module, &mut cx)
        .unwrap_or_else(|e| panic!("{e}"));
    // Held tensors, and the lazy ones (the model's packed projections) made as the backend would.
    let held: usize = cx
        .derived
        .tensors
        .iter()
        .filter(|(name, _)| name.contains(marker))
        .map(|(_, t)| t.data.to_le_bytes().len())
        .sum();
    let weights = cx.weights_after();
    let made: usize = cx
        .derived
        .lazy
        .iter()
        .filter(|(name, _)| name.contains(marker))
        .map(|(name, make)| {
            let t = (make.0)(&weights).unwrap_or_else(|e| panic!("{name}: {e}"));
            t.data.to_le_bytes().len()
        })
        .sum();
    held + made
}

#[test]
fn dense_weights_take_at_least_four_times_the_packed_bytes() {
    let dense = derived_bytes(DENSE_BASELINE_PIPELINE, "#dense.bf16");
    let packed = derived_bytes(&bitnetc::cpu_pipeline(), "#packed.");
    println!(
        "projection weights: dense bf16 {dense} bytes, packed ternary {packed} bytes ({:.2}×)",
        dense as f64 / packed as f64
    );
    assert!(packed > 0, "the ternary build packs its weights");
    assert!(dense >= 4 * packed, "dense {dense} vs packed {packed}");
    // The whole programs' weights (embedding, norms and lm_head included), for the record.
    let total = |full_precision| {
        let mut m = import(16);
        let options = CpuOptions {
            threads: 1,
            full_precision,
            ..CpuOptions::default()
        };
        let exec = bitnetc::compile_cpu(&mut m, &options).unwrap_or_else(|e| panic!("{e}"));
        exec.weight_bytes()
    };
    let (ternary, full) = (total(false), total(true));
    println!(
        "program weights: ternary {ternary} bytes, full precision {full} bytes ({:.2}×)",
        full as f64 / ternary as f64
    );
    // The programs share everything but the projections, except that the ternary one also holds
    // each projection's γ (an f32 in its own 64-byte-aligned slot).
    let gammas = 4 * 7 * 64;
    assert!(
        full + gammas >= ternary + (dense - packed) as u64,
        "the programs differ by less than their projections"
    );
}

/// Runs `dense-baseline` alone on the module in `src` over a store holding `ternary_2x4` (as the
/// filetests' store does) and returns the derived weights.
fn dense_weights_of(src: &str) -> MemoryWeights {
    let mut m = bitnetc::parse_bir(src, "<test>").unwrap_or_else(|e| panic!("{e}"));
    let mut store = MemoryWeights::default();
    let t = Tensor::new(vec![2, 4], Data::I8(vec![1, 0, -1, 1, 0, 0, 1, -1])).unwrap();
    store.tensors.insert("ternary_2x4".into(), t);
    let mut cx = PassContext::new(Some(&store));
    let mut pm = PassManager::new(parse_pipeline("dense-baseline").unwrap());
    pm.verify_each = true;
    pm.run(&mut m, &mut cx).unwrap_or_else(|e| panic!("{e}"));
    cx.derived
}

#[test]
fn dense_weights_are_gamma_times_the_ternary_values() {
    let t = [1.0f32, 0.0, -1.0, 1.0, 0.0, 0.0, 1.0, -1.0];
    // The filetest: a named weight with γ = 0.5, the same values packed with γ = 1/4.
    let src =
        std::fs::read_to_string(root().join("tests/filetests/passes/dense_baseline.bir")).unwrap();
    let derived = dense_weights_of(&src);
    assert_eq!(derived.tensors.len(), 2, "{:?}", derived.tensors.keys());
    for (name, gamma) in [
        ("ternary_2x4#dense.bf16", 0.5),
        ("main.%pw#dense.bf16", 0.25),
    ] {
        let w = &derived.tensors[name];
        assert_eq!(
            (w.shape.as_slice(), w.data.elem()),
            (&[2, 4][..], ElemType::BF16)
        );
        let want: Vec<f32> = t.iter().map(|v| v * gamma).collect();
        assert_eq!(w.data.to_f32(), want, "{name}");
    }
    // A γ that is not a bf16 value is rounded to the nearest one, as a bf16 checkpoint stores it.
    let derived = dense_weights_of(
        "func @main[T<=8](%x: tensor<Tx4xf32>) -> (tensor<Tx2xf32>) {
  %q, %s = bit.act_quant %x {eps = 1e-5} : tensor<Tx4xi8>, tensor<Tx1xf32>
  %w = nn.weight {name = \"ternary_2x4\"} : tensor<2x4xternary>
  %g = nn.constant {value = [0.1]} : tensor<1xf32>
  %y = bit.ternary_matmul %q, %s, %w, %g : tensor<Tx2xf32>
  return %y
}
",
    );
    let g = f32::from_bits(0x3dcd_0000); // bf16(0.1) = 0.10009765625.
    let want: Vec<f32> = t.iter().map(|v| v * g).collect();
    assert_eq!(
        derived.tensors["ternary_2x4#dense.bf16"].data.to_f32(),
        want
    );
}

/// One `Add` kernel case: `[t, n]` random rows, the launch split into uneven row ranges; written to a
/// separate output and in place over `a`; both must equal `nn.add` bit for bit.
fn add_case(seed: &mut u64, t: usize, n: usize) {
    let mut next = || {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed
    };
    let mut value = || {
        let r = next();
        match r % 16 {
            0 => f32::NAN,
            1 => -0.0,
            2 => f32::INFINITY,
            3 => f32::from_bits(1),
            _ => ((r >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * 1e3,
        }
    };
    let a: Vec<f32> = (0..t * n).map(|_| value()).collect();
    let b: Vec<f32> = (0..t * n).map(|_| value()).collect();
    let at = Tensor::new(vec![t, n], Data::F32(a.clone())).unwrap();
    let bt = Tensor::new(vec![t, n], Data::F32(b.clone())).unwrap();
    let cx = EvalCtx {
        inputs: &[&at, &bt],
        attrs: &Attrs::new(),
        result_shapes: &[vec![t, n]],
        result_elems: &[ElemType::F32],
        weights: &NoWeights,
    };
    let want = OpKind::Add.eval(&cx).unwrap().remove(0).data.to_f32();
    let kind = KernelKind::Add(AddParams { n: n as u64 });
    let (_code, fns) = compile_kernels(std::slice::from_ref(&kind)).unwrap();
    let f = fns[0];
    // Three uneven ranges (some possibly empty), the last first.
    let mut cuts = [(next() as usize) % (t + 1), (next() as usize) % (t + 1)];
    cuts.sort_unstable();
    let ranges = [(cuts[1], t), (0, cuts[0]), (cuts[0], cuts[1])];
    let scalars = [t as i64, 0i64];
    for in_place in [false, true] {
        let (mut a, mut b) = (a.clone(), b.clone());
        // One spare row after the output catches overruns.
        let mut out = vec![f32::from_bits(0x7fc0_dead); (t + 1) * n];
        let out_ptr = if in_place {
            a.as_mut_ptr()
        } else {
            out.as_mut_ptr()
        };
        let bufs = [
            a.as_mut_ptr().cast::<u8>(),
            b.as_mut_ptr().cast::<u8>(),
            out_ptr.cast::<u8>(),
        ];
        for &(begin, end) in &ranges {
            // SAFETY: three [t, n] f32 buffers, as `KernelKind::Add` documents.
            unsafe { f(bufs.as_ptr(), scalars.as_ptr(), begin as i64, end as i64) };
        }
        let got = if in_place { &a[..] } else { &out[..t * n] };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "Add n={n} T={t} ranges={ranges:?} in place={in_place}: element {i}: {g:e} vs {w:e}"
            );
        }
        if !in_place {
            assert!(
                out[t * n..].iter().all(|x| x.to_bits() == 0x7fc0_dead),
                "Add n={n} T={t}: wrote past its rows"
            );
        }
    }
}

#[test]
fn add_kernel_matches_the_reference() {
    let mut seed = 7u64;
    for t in [1, 2, 5] {
        for n in [1, 3, 4, 7, 8, 9, 12, 31, 256, 259] {
            add_case(&mut seed, t, n);
        }
    }
}

#[test]
fn full_precision_builds_at_short_contexts() {
    for context in [1, 2, 13, 40] {
        // A ternary build first, as `bitnetc bench` does.
        let mut t = import(context);
        bitnetc::compile_cpu(&mut t, &CpuOptions::default()).unwrap();
        let mut m = import(context);
        let options = CpuOptions {
            threads: 2,
            full_precision: true,
            ..CpuOptions::default()
        };
        if let Err(e) = bitnetc::compile_cpu(&mut m, &options) {
            panic!("context {context}: {e}");
        }
    }
}
