//! The CPU backend (Cranelift JIT) end to end against transformers: every hf-tiny form and every
//! gguf-tiny file compiled with `compile_cpu` reproduces the reference logits (≤ 1e-3 · max|logit|, the
//! same argmax at every position), and decoding with the KV cache — the prompt as one prefill, then one
//! token per step — yields transformers' greedy tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::import_model;
use bitnet_frontend::model::ImportOptions;
use bitnet_frontend::npy;
use serde_json::Value;
use std::path::Path;
use support::{argmax, check_logits, ids, root};

/// Compiles `model` for the CPU (context: prompt + greedy tokens) and checks logits and greedy decoding.
fn check(model: &Path, prompt: &[i64], reference: &Path, greedy: &[i64], threads: usize) {
    let context = (prompt.len() + greedy.len()) as u64;
    let mut m = import_model(
        model,
        &ImportOptions {
            context: Some(context),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut exec = bitnetc::compile_cpu(&mut m, threads)
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let vocab = exec.program().vocab as usize;
    // Prefill: the prompt's logits against the reference.
    let ours = exec.forward(prompt, 0).unwrap().to_vec();
    let theirs = npy::read(reference).unwrap().data.to_f32();
    let what = format!("{} (cpu, {threads} threads)", model.display());
    let ours_arg = check_logits(&what, &ours, &theirs, vocab, 1e-3);
    // Decode: one token per step through the KV cache.
    let mut next = *ours_arg.last().unwrap();
    let mut got = vec![next];
    for step in 0..greedy.len() - 1 {
        let logits = exec.forward(&[next], (prompt.len() + step) as u64).unwrap();
        next = argmax(logits);
        got.push(next);
    }
    assert_eq!(
        got,
        greedy,
        "{}: greedy tokens with the KV cache",
        model.display()
    );
}

fn hf(form: &str, threads: usize) {
    let dir = root().join("tests/fixtures/hf-tiny").join(form);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    check(
        &dir,
        &ids(&r["prompt_ids"]),
        &dir.join("logits.npy"),
        &ids(&r["greedy_new_tokens"]),
        threads,
    );
}

#[test]
fn hf_online_on_cpu() {
    hf("online", 2);
}

#[test]
fn hf_packed_on_cpu() {
    hf("packed", 1);
}

#[test]
fn hf_packed_bitlinear_on_cpu() {
    hf("packed_bitlinear", 3);
}

#[test]
fn gguf_files_on_cpu() {
    let dir = root().join("tests/fixtures/gguf-tiny");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    for file in [
        "tiny-f32.gguf",
        "tiny-tq2_0.gguf",
        "tiny-tq1_0.gguf",
        "tiny-i2_s.gguf",
    ] {
        let f = &r["files"][file];
        let expected = dir.join(f["expected_logits"].as_str().unwrap());
        check(
            &dir.join(file),
            &ids(&r["prompt_ids"]),
            &expected,
            &ids(&f["greedy_new_tokens"]),
            2,
        );
    }
}

#[test]
fn runtime_errors_are_reported_not_crashes() {
    let dir = root().join("tests/fixtures/hf-tiny/packed");
    let mut m = import_model(&dir, &ImportOptions { context: Some(8) }).unwrap();
    let mut exec = bitnetc::compile_cpu(&mut m, 2).unwrap();
    assert!(
        exec.forward(&[1, 2, 3], 6)
            .unwrap_err()
            .to_string()
            .contains("context overflow")
    );
    assert!(
        exec.forward(&[1, 5000], 0)
            .unwrap_err()
            .to_string()
            .contains("outside the vocabulary")
    );
    assert!(exec.forward(&[], 0).is_err());
}
