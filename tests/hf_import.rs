//! The Hugging Face importer against transformers: every hf-tiny form (online master weights, packed
//! `autobitlinear` ×γ, packed `bitlinear` ÷(1/γ)) imported and run by the reference interpreter must
//! reproduce transformers' logits with the same argmax at every position: on the 12-token prompt within
//! 1e-3 · max|logit|; on the 40-token prompt within 2e-2 · max|logit|, because there some activations sit
//! within float noise (~1e-5) of an int8 rounding tie and two correct implementations with a different
//! summation order round them differently (the fixture README measures the same flips with its own
//! numpy forward: up to 9.6e-3 absolute).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_frontend::import_model;
use bitnet_frontend::model::ImportOptions;
use bitnet_frontend::npy;
use bitnet_ir::Tensor;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn form(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf-tiny")
        .join(name)
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |a, (i, &x)| if x > a.1 { (i, x) } else { a },
        )
        .0
}

/// Runs `tokens` through the model at `dir` and compares with transformers' `reference` logits.
fn check(dir: &Path, tokens: &[i64], reference: &str, tolerance: f32) {
    let model = import_model(
        dir,
        &ImportOptions {
            context: Some(tokens.len() as u64),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ours: Tensor = bitnetc::prompt_logits(&model.module, model.weights.as_ref(), tokens)
        .unwrap_or_else(|e| panic!("{e}"));
    let theirs = npy::read(&dir.join(reference)).unwrap();
    assert_eq!(ours.shape, theirs.shape);
    let (a, b) = (ours.data.to_f32(), theirs.data.to_f32());
    let max_logit = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    let max_diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let vocab = *theirs.shape.last().unwrap();
    let same_argmax = a
        .chunks(vocab)
        .zip(b.chunks(vocab))
        .all(|(x, y)| argmax(x) == argmax(y));
    println!(
        "{} {reference}: max|diff| = {max_diff:.3e} = {:.3e} · max|logit|, argmax identical: {same_argmax}",
        dir.display(),
        max_diff / max_logit
    );
    assert!(
        max_diff <= tolerance * max_logit,
        "logits differ by {max_diff} (max |logit| {max_logit})"
    );
    assert!(same_argmax, "the argmax differs at some position");
}

fn check_form(name: &str) {
    let dir = form(name);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    check(&dir, &ids(&r["prompt_ids"]), "logits.npy", 1e-3);
    check(&dir, &ids(&r["long_prompt_ids"]), "logits_long.npy", 2e-2);
}

#[test]
fn online_master_weights_match_transformers() {
    check_form("online");
}

#[test]
fn packed_autobitlinear_matches_transformers() {
    check_form("packed");
}

#[test]
fn packed_bitlinear_matches_transformers() {
    check_form("packed_bitlinear");
}

#[test]
fn greedy_continuation_is_reproduced_teacher_forced() {
    // The logits each greedy token was picked from: a forward over prompt + greedy tokens[..-1];
    // the argmax at positions 11.. must be the greedy tokens.
    for name in ["online", "packed", "packed_bitlinear"] {
        let dir = form(name);
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let mut tokens = ids(&r["prompt_ids"]);
        let greedy = ids(&r["greedy_new_tokens"]);
        tokens.extend(&greedy[..greedy.len() - 1]);
        let model = import_model(
            &dir,
            &ImportOptions {
                context: Some(tokens.len() as u64),
                ..Default::default()
            },
        )
        .unwrap();
        let logits =
            bitnetc::prompt_logits(&model.module, model.weights.as_ref(), &tokens).unwrap();
        let v = logits.data.to_f32();
        let vocab = logits.shape[2];
        let start = tokens.len() - greedy.len();
        let picked: Vec<i64> = (start..tokens.len())
            .map(|p| argmax(&v[p * vocab..(p + 1) * vocab]) as i64)
            .collect();
        assert_eq!(picked, greedy, "{name}: greedy tokens differ");
    }
}

#[test]
fn inspect_summary_describes_the_checkpoint() {
    let model = import_model(&form("packed"), &ImportOptions::default()).unwrap();
    let s = &model.summary;
    assert_eq!(s.architecture, "BitNetForCausalLM");
    assert_eq!(s.config["layers"], "4");
    assert_eq!(
        s.config["quantization"],
        "packed ternary, weight_scale = gamma (autobitlinear)"
    );
    assert_eq!(s.tensors.len(), 74);
    assert!(s.bytes_by_dtype().contains_key("U8"));
}
