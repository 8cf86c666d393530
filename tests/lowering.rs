//! The default pipeline (`bitnet_passes::DEFAULT_PIPELINE`: lowering and fusion) on every real model the project
//! has: each hf-tiny form, each gguf-tiny file and each ONNX export. Every ternary projection must be
//! lowered (the count is printed and must be layers × 7 for decoders, 1 for a BitLinear, 3 for an MLP,
//! 7 for a block), only full-precision matmuls may remain (lm_head, attention), and the reference
//! interpreter on the optimized IR must still reproduce the references: transformers' logits and
//! greedy tokens for the HF and GGUF models, onnxruntime's outputs (≤ 1e-5 relative) for ONNX.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::npy;
use bitnet_ir::tensor::max_relative_error;
use bitnet_ir::{OpKind, Tensor, interp};
use bitnet_passes::{DEFAULT_PIPELINE, Overlay};
use bitnetc::{Model, OpenOptions, OptimizeOptions};
use serde_json::Value;
use std::path::Path;
use support::{argmax, check_logits, ids, root};

fn count(m: &Model, kind: OpKind) -> usize {
    m.module
        .functions
        .iter()
        .map(|f| f.op_order().filter(|&o| f.op(o).kind == kind).count())
        .sum()
}

/// Imports and optimizes `path`; returns the model, the derived weights and the lowered count.
fn lowered(path: &Path, context: Option<u64>) -> (Model, bitnet_ir::MemoryWeights) {
    let mut m = OpenOptions {
        context,
        ..Default::default()
    }
    .open(path)
    .unwrap_or_else(|e| panic!("{e}"));
    let opt = bitnetc::optimize(&mut m, &OptimizeOptions::passes(DEFAULT_PIPELINE))
        .unwrap_or_else(|e| panic!("{e}"));
    for n in &opt.notes {
        println!("{}: {n}", path.display());
    }
    (m, opt.derived)
}

/// The decoder at `path` after lowering reproduces `reference` logits on `prompt` and the greedy tokens.
fn check_decoder(path: &Path, prompt: &[i64], reference: &Path, greedy: &[i64]) {
    let mut tokens = prompt.to_vec();
    tokens.extend(&greedy[..greedy.len() - 1]);
    let (m, derived) = lowered(path, Some(tokens.len() as u64));
    assert_eq!(
        count(&m, OpKind::TernaryMatmul),
        4 * 7,
        "{}: every projection lowered",
        path.display()
    );
    assert_eq!(
        count(&m, OpKind::MatMul),
        1,
        "{}: only the lm_head stays full precision",
        path.display()
    );
    let weights = Overlay {
        derived: &derived,
        base: Some(m.weights.as_ref()),
    };
    let logits =
        bitnetc::prompt_logits(&m.module, &weights, &tokens).unwrap_or_else(|e| panic!("{e}"));
    let vocab = logits.shape[2];
    let v = logits.data.to_f32();
    // The prompt's logits against the reference.
    let reference = npy::read(reference).unwrap();
    let theirs = reference.data.to_f32();
    let ours = &v[..theirs.len()];
    let what = format!("{}: lowered logits vs reference", path.display());
    check_logits(&what, ours, &theirs, vocab, 1e-3);
    // Greedy continuation, teacher-forced.
    let start = tokens.len() - greedy.len();
    let cont: Vec<i64> = (start..tokens.len())
        .map(|p| argmax(&v[p * vocab..(p + 1) * vocab]))
        .collect();
    assert_eq!(
        cont,
        greedy,
        "{}: greedy tokens after lowering",
        path.display()
    );
}

fn hf(form: &str) {
    let dir = root().join("tests/fixtures/hf-tiny").join(form);
    let r: Value = support::reference(&dir);
    check_decoder(
        &dir,
        &ids(&r["prompt_ids"]),
        &dir.join("logits.npy"),
        &ids(&r["greedy_new_tokens"]),
    );
}

#[test]
fn hf_online_lowers_and_reproduces_transformers() {
    hf("online");
}

#[test]
fn hf_packed_lowers_and_reproduces_transformers() {
    hf("packed");
}

#[test]
fn hf_packed_bitlinear_lowers_and_reproduces_transformers() {
    hf("packed_bitlinear");
}

#[test]
fn gguf_files_lower_and_reproduce_their_expectations() {
    let dir = root().join("tests/fixtures/gguf-tiny");
    let r: Value = support::reference(&dir);
    for file in support::GGUF_FILES {
        let f = &r["files"][file];
        let expected = dir.join(f["expected_logits"].as_str().unwrap());
        check_decoder(
            &dir.join(file),
            &ids(&r["prompt_ids"]),
            &expected,
            &ids(&f["greedy_new_tokens"]),
        );
    }
}

#[test]
fn onnx_exports_lower_and_reproduce_onnxruntime() {
    let dir = root().join("tests/fixtures/onnx-models");
    let x = npy::read(&dir.join("x.npy")).unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let expected = if name.starts_with("bitlinear") {
            1
        } else if name.starts_with("mlp") {
            3
        } else {
            7
        };
        let (m, derived) = lowered(&path, None);
        assert_eq!(
            count(&m, OpKind::TernaryMatmul),
            expected,
            "{name}: lowered projections"
        );
        let full = if name.starts_with("block") { 2 } else { 0 };
        assert_eq!(
            count(&m, OpKind::MatMul),
            full,
            "{name}: only attention matmuls stay"
        );
        let weights = Overlay {
            derived: &derived,
            base: Some(m.weights.as_ref()),
        };
        let out: Vec<Tensor> = interp::run(&m.module, "main", std::slice::from_ref(&x), &weights)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let reference = npy::read(&dir.join(name.replace(".onnx", ".out.npy"))).unwrap();
        let err = max_relative_error(&out[0], &reference).unwrap();
        println!("{name}: lowered output vs onnxruntime: {err:.3e}");
        assert!(err <= 1e-5, "{name}: {err}");
        seen += 1;
    }
    assert_eq!(seen, 17);
}
