//! The GGUF importer against the gguf-tiny expectations: each file (F32, TQ2_0, TQ1_0, I2_S
//! projections; architecture bitnet-b1.58) imported and run by the reference interpreter reproduces the
//! expected logits (transformers on the matching HF variant) within 1e-3 · max|logit| with the same
//! argmax at every position, and the greedy tokens of the prompt and of the text prompt, teacher-forced.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::import_model;
use bitnet_frontend::model::ImportOptions;
use bitnet_frontend::npy;
use serde_json::Value;
use std::path::PathBuf;
use support::{argmax, ids};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf-tiny")
}

/// The argmax of every position of a forward over `tokens`.
fn argmaxes(file: &str, tokens: &[i64]) -> (Vec<i64>, Vec<f32>, usize) {
    let opts = ImportOptions {
        context: Some(tokens.len() as u64),
        ..Default::default()
    };
    let model = import_model(&dir().join(file), &opts).unwrap_or_else(|e| panic!("{e}"));
    let logits = bitnetc::prompt_logits(&model.module, model.weights.as_ref(), tokens)
        .unwrap_or_else(|e| panic!("{e}"));
    let vocab = logits.shape[2];
    let v = logits.data.to_f32();
    (v.chunks(vocab).map(argmax).collect(), v, vocab)
}

fn check(file: &str) {
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap())
            .unwrap();
    let f = &r["files"][file];
    let prompt = ids(&r["prompt_ids"]);
    let (picked, ours, vocab) = argmaxes(file, &prompt);
    let expected = npy::read(&dir().join(f["expected_logits"].as_str().unwrap())).unwrap();
    let theirs = expected.data.to_f32();
    assert_eq!(ours.len(), theirs.len());
    let max_logit = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
    let max_diff = ours
        .iter()
        .zip(&theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!(
        "{file}: max|diff| = {max_diff:.3e} = {:.3e} · max|logit|",
        max_diff / max_logit
    );
    assert!(
        max_diff <= 1e-3 * max_logit,
        "{file}: logits differ by {max_diff}"
    );
    let theirs_argmax: Vec<i64> = theirs.chunks(vocab).map(argmax).collect();
    assert_eq!(picked, theirs_argmax, "{file}: argmax differs");
    assert_eq!(
        picked,
        ids(&f["argmax_per_position"]),
        "{file}: argmax differs from reference.json"
    );
    // Greedy continuations, teacher-forced: the argmax after each prefix is the next greedy token.
    for (prompt_key, greedy_key) in [
        ("prompt_ids", "greedy_new_tokens"),
        ("text_prompt_ids", "text_greedy_new_tokens"),
    ] {
        let mut tokens = ids(&r[prompt_key]);
        let greedy = ids(&f[greedy_key]);
        tokens.extend(&greedy[..greedy.len() - 1]);
        let (picked, _, _) = argmaxes(file, &tokens);
        assert_eq!(
            picked[tokens.len() - greedy.len()..],
            greedy[..],
            "{file}: {greedy_key} differ"
        );
    }
}

#[test]
fn f32_projections() {
    check("tiny-f32.gguf");
}

#[test]
fn tq2_0_projections() {
    check("tiny-tq2_0.gguf");
}

#[test]
fn tq1_0_projections() {
    check("tiny-tq1_0.gguf");
}

#[test]
fn i2_s_projections() {
    check("tiny-i2_s.gguf");
}

#[test]
fn ternary_files_import_projections_as_ternary_times_scale() {
    let model = import_model(&dir().join("tiny-i2_s.gguf"), &ImportOptions::default()).unwrap();
    let text = bitnet_ir::text::print_module(&model.module);
    assert!(
        text.contains("nn.weight {name = \"blk.0.attn_q.weight\"} : tensor<256x256xternary>"),
        "{text}"
    );
    assert!(text.contains("nn.weight {name = \"blk.0.attn_q.weight:scale\"} : tensor<1xf32>"));
    assert_eq!(model.summary.architecture, "bitnet-b1.58");
    assert_eq!(model.summary.config["activation"], "relu2");
}
