//! Dense Llama-architecture GGUFs (tests/fixtures/gguf-llama: F32, Q8_0, Q4_1, Q5_0 and Q5_1
//! projections quantized by gguf-py, and the K-quant mixes Q2_K, Q3_K_M, Q4_K_M, Q5_K_M and Q6_K made
//! by llama.cpp's llama-quantize; a SiLU MLP, GQA, an untied head) on the CPU backend:
//! - greedy tokens equal llama.cpp's on the same weights, recorded in `reference.json` by
//!   `scripts/fixtures/make_gguf_llama.sh` (on the quantized files themselves llama.cpp rounds
//!   activations to 8-bit blocks, so there they agree up to the first near tie);
//! - every dense weight dtype (`--dense-dtype auto|bf16|f16|i8`) stays within its stated bound of
//!   the interpreter's logits, with the same argmax at every position;
//! - `--quantize ternary` ternarizes every projection (the compiled model agrees with the
//!   interpreter on the same ternarized IR) and says it is lossy;
//! - `bench` on a dense model measures its bf16 and int8 dense paths;
//! - AOT artifacts of each file (f32 and int8 dense paths) are the JIT bit for bit, and the f32 one
//!   gives llama.cpp's greedy tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::model::PostQuantize;
use bitnetc::backends::cpu::HeadDtype;
use std::path::PathBuf;
use support::{argmax, check_logits, check_logits_within, ids, root};

const FILES: [&str; 10] = [
    "llama-f32.gguf",
    "llama-q8_0.gguf",
    "llama-q4_1.gguf",
    "llama-q5_0.gguf",
    "llama-q5_1.gguf",
    "llama-k-q2_k.gguf",
    "llama-k-q3_k_m.gguf",
    "llama-k-q4_k_m.gguf",
    "llama-k-q5_k_m.gguf",
    "llama-k-q6_k.gguf",
];

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/gguf-llama")
}

fn open(file: &str, context: u64, quantize: Option<PostQuantize>) -> bitnetc::Model {
    bitnetc::OpenOptions {
        context: Some(context),
        quantize,
    }
    .open(&fixtures().join(file))
    .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The interpreter's logits of `tokens` (every position) on the unoptimized IR.
fn interpreter_logits(m: &bitnetc::Model, tokens: &[i64]) -> Vec<f32> {
    bitnetc::prompt_logits(&m.module, m.weights.as_ref(), tokens)
        .unwrap_or_else(|e| panic!("{e}"))
        .data
        .to_f32()
}

fn compile(m: &mut bitnetc::Model, dense: HeadDtype) -> bitnetc::runtime::Executor {
    let options = bitnetc::CpuOptions {
        dense,
        ..bitnetc::CpuOptions::with_threads(2)
    };
    bitnetc::compile_cpu(m, &options).unwrap_or_else(|e| panic!("{e}"))
}

/// Greedy decoding through the KV cache: the prompt as one prefill, then one token per step.
fn greedy(exec: &mut bitnetc::runtime::Executor, prompt: &[i64], steps: usize) -> Vec<i64> {
    let vocab = exec.program().vocab as usize;
    let logits = exec.forward(prompt, 0).unwrap().to_vec();
    let mut next = argmax(&logits[logits.len() - vocab..]);
    let mut got = vec![next];
    for step in 0..steps - 1 {
        next = argmax(exec.forward(&[next], (prompt.len() + step) as u64).unwrap());
        got.push(next);
    }
    got
}

/// llama.cpp's reference for `file`: `run` is `native` (the file as it is) or `dequantized` (its
/// F32 twin).
fn llama_cpp(file: &str, run: &str) -> (Vec<i64>, Vec<f64>) {
    let r = &support::reference(&fixtures())[file][run];
    let margins = r["top2_margins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_f64().unwrap())
        .collect();
    (ids(&r["greedy_new_tokens"]), margins)
}

/// The largest top-2 logit margin (in llama.cpp's run on the exactly dequantized weights) at which
/// llama.cpp's own activation quantization may flip a greedy token: quantized weights are
/// multiplied there with activations rounded to 8-bit blocks, and with f32 activations here. Blocks
/// of 32 (Q8_0/Q8_1, for Q4_1, Q5_x and Q8_0 weights) round finely; the K-quants' Q8_K blocks of 256
/// share one scale over 8× more values. Measured first divergences (reference.json): Q4_1 0.016,
/// Q5_1 0.043; Q2_K 0.096, Q3_K_M 0.050, Q4_K_M 0.053, Q6_K 0.194 (Q8_0, Q5_0, Q5_K_M: none).
fn activation_rounding_margin(file: &str) -> f64 {
    if file.starts_with("llama-k-") {
        0.25
    } else {
        0.05
    }
}

#[test]
fn dense_llama_greedy_tokens_match_llama_cpp() {
    let prompt = ids(&support::reference(&fixtures())["prompt_ids"]);
    for file in FILES {
        let (exact, exact_margins) = llama_cpp(file, "dequantized");
        let (native, _) = llama_cpp(file, "native");
        assert_eq!(exact.len(), 16, "{file}: reference tokens");
        let mut m = open(file, (prompt.len() + exact.len()) as u64, None);
        let mut exec = compile(&mut m, HeadDtype::Auto);
        let ours = greedy(&mut exec, &prompt, exact.len());
        // llama.cpp on the same weights in f32: every token.
        assert_eq!(
            ours, exact,
            "{file}: greedy tokens against llama.cpp on f32 weights"
        );
        // llama.cpp on the quantized file: every token up to the first one where its activation
        // rounding decides a near tie.
        if let Some(step) = (0..ours.len()).find(|&i| ours[i] != native[i]) {
            assert!(
                exact_margins[step] < activation_rounding_margin(file),
                "{file}: llama.cpp's quantized run differs at step {step} with a top-2 margin of \
                 {} (not a near tie)",
                exact_margins[step]
            );
            println!(
                "{file}: llama.cpp's quantized run diverges at step {step}, a near tie (margin {})",
                exact_margins[step]
            );
        }
    }
}

#[test]
fn every_dense_dtype_stays_near_the_interpreter() {
    let prompt = ids(&support::reference(&fixtures())["prompt_ids"]);
    for file in FILES {
        let m = open(file, prompt.len() as u64, None);
        let theirs = interpreter_logits(&m, &prompt);
        // f32 weights are the interpreter's own; f16 and bf16 round each weight (11 and 8
        // significant bits); int8 rounds weights per row and activations per token.
        for (dense, tolerance) in [
            (HeadDtype::Auto, 1e-4),
            (HeadDtype::F16, 2e-3),
            (HeadDtype::Bf16, 1e-2),
            (HeadDtype::I8, 5e-2),
        ] {
            let mut m = open(file, prompt.len() as u64, None);
            let mut exec = compile(&mut m, dense);
            let vocab = exec.program().vocab as usize;
            let ours = exec.forward(&prompt, 0).unwrap().to_vec();
            let what = format!("{file} dense {}", dense.name());
            let bound = check_logits_within(&what, &ours, &theirs, tolerance);
            // Where the interpreter's top two differ by more than twice the bound, no rounding
            // within the bound can change the argmax.
            for (p, (o, t)) in ours.chunks(vocab).zip(theirs.chunks(vocab)).enumerate() {
                let mut sorted = t.to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                if sorted[0] - sorted[1] > 2.0 * bound {
                    assert_eq!(argmax(o), argmax(t), "{what}: argmax at position {p}");
                }
            }
        }
    }
}

#[test]
fn int8_dense_projections_run_the_int8_kernel() {
    let prompt = ids(&support::reference(&fixtures())["prompt_ids"]);
    let mut m = open("llama-f32.gguf", prompt.len() as u64, None);
    let exec = compile(&mut m, HeadDtype::I8);
    let int8 = exec
        .program()
        .launches
        .iter()
        .filter(|l| {
            exec.program().kernels[l.kernel]
                .0
                .starts_with("bitnet_matmul_i8_")
        })
        .count();
    // Seven projections in each of two layers; the head stays f32 (`--head-dtype auto`).
    assert_eq!(int8, 14, "int8 launches");
}

#[test]
fn quantize_ternary_turns_every_projection_ternary_and_says_it_is_lossy() {
    let prompt = ids(&support::reference(&fixtures())["prompt_ids"]);
    let context = prompt.len() as u64;
    let m = open("llama-f32.gguf", context, Some(PostQuantize::Ternary));
    let note = &m.summary.config["quantize"];
    assert!(
        note.contains("14 dense projection") && note.contains("lossy"),
        "{note}"
    );
    let theirs = interpreter_logits(&m, &prompt);
    let mut m = open("llama-f32.gguf", context, Some(PostQuantize::Ternary));
    let mut exec = compile(&mut m, HeadDtype::Auto);
    assert!(
        exec.program()
            .kernels
            .iter()
            .any(|(name, _)| name.starts_with("bitnet_ternary_matmul")),
        "no ternary kernel after --quantize ternary"
    );
    let vocab = exec.program().vocab as usize;
    let ours = exec.forward(&prompt, 0).unwrap().to_vec();
    check_logits("llama-f32 quantized ternary", &ours, &theirs, vocab, 1e-3);
    // The dense model computes something else.
    let dense = interpreter_logits(&open("llama-f32.gguf", context, None), &prompt);
    assert_ne!(dense, theirs, "ternarization changed nothing");
}

#[test]
fn quantize_is_refused_for_onnx_graphs() {
    let onnx = root().join("tests/fixtures/onnx-models/bitlinear_int8.ts.onnx");
    let err = match (bitnetc::OpenOptions {
        context: None,
        quantize: Some(PostQuantize::Ternary),
    })
    .open(&onnx)
    {
        Ok(_) => panic!("--quantize ternary accepted an ONNX graph"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("--quantize ternary") && err.contains("ONNX"),
        "{err}"
    );
}

#[test]
fn bench_measures_the_dense_paths_of_a_dense_model() {
    let model = fixtures().join("llama-q8_0.gguf");
    let out = support::bitnetc(&[
        "bench",
        model.to_str().unwrap(),
        "--prompt-len",
        "4",
        "--steps",
        "2",
        "--repeat",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let builds: Vec<&str> = report["builds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["build"].as_str().unwrap())
        .collect();
    assert_eq!(builds, ["dense-auto", "dense-bf16", "dense-i8"]);
    assert_eq!(report["dense_dtype"], "auto");
    for b in report["builds"].as_array().unwrap() {
        assert!(b["decode_tok_s"].as_f64().unwrap() > 0.0, "{b}");
    }
    assert!(report.get("vs_full_precision").is_none());
}

#[test]
fn dense_llama_artifacts_match_llama_cpp_and_the_jit() {
    if !support::have_cc("dense_llama_artifacts_match_llama_cpp_and_the_jit") {
        return;
    }
    let prompt = ids(&support::reference(&fixtures())["prompt_ids"]);
    for file in FILES {
        let (exact, _) = llama_cpp(file, "dequantized");
        let context = (prompt.len() + exact.len()) as u64;
        // The f32 path must give llama.cpp's tokens; the int8 path must be the JIT's, bit for bit.
        for dense in [HeadDtype::Auto, HeadDtype::I8] {
            let what = format!("{file} dense {} (artifact)", dense.name());
            let cpu = bitnetc::CpuOptions {
                dense,
                ..bitnetc::CpuOptions::with_threads(2)
            };
            let mut m = open(file, context, None);
            let options = bitnetc::ArtifactOptions {
                cpu: cpu.clone(),
                ..bitnetc::ArtifactOptions::default()
            };
            let bytes = bitnetc::compile_cpu_object(&mut m, &options)
                .and_then(|object| object.link(None))
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let dir = support::Scratch::create(&format!("dense-artifact-{file}-{}", dense.name()));
            let path = dir.join("model.bnx");
            std::fs::write(&path, bytes).unwrap();
            let mut aot =
                bitnet_runtime::artifact::load(&path, 2).unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut jit = compile(&mut open(file, context, None), dense);
            let a = aot.forward(&prompt, 0).unwrap().to_vec();
            let j = jit.forward(&prompt, 0).unwrap().to_vec();
            assert!(
                a.iter().zip(&j).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{what}: artifact and JIT prefill logits differ"
            );
            let ours = greedy(&mut aot, &prompt, exact.len());
            assert_eq!(
                ours,
                greedy(&mut jit, &prompt, exact.len()),
                "{what}: greedy vs JIT"
            );
            if dense == HeadDtype::Auto {
                assert_eq!(
                    ours, exact,
                    "{what}: greedy tokens against llama.cpp on f32 weights"
                );
            }
        }
    }
}
