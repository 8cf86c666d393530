//! `bitnetc validate`: the scoring against transformers' logits, the report's figures, the gates
//! (defaults, a gate file, an impossible one) and a model corrupted on purpose, through the
//! library and the binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::npy;
use bitnetc::validate::score::{Windows, score};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use std::path::{Path, PathBuf};
use support::{Scratch, bitnetc, root};

fn packed() -> PathBuf {
    root().join("tests/fixtures/hf-tiny/packed")
}

fn session(dir: &Path, options: &bitnetc::Options) -> bitnetc::Session {
    bitnetc::compile(dir, options).unwrap().token_session()
}

/// The fixture's 12-token prompt and transformers' logits for it (the 40-token one has positions
/// where transformers' activation quantization sits on a rounding tie, `tests/hf_import.rs`).
fn long_prompt() -> (Vec<u32>, Vec<f32>) {
    let r = support::reference(&packed());
    let ids = r["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let logits = npy::read(&packed().join("logits.npy"))
        .unwrap()
        .data
        .to_f32();
    (ids, logits)
}

#[test]
fn the_perplexity_of_a_window_is_transformers_perplexity() {
    let (ids, logits) = long_prompt();
    let vocab = 1000;
    let windows = Windows {
        window: ids.len(),
        ids: vec![ids.clone()],
        first_scored: ids.len() / 2,
    };
    let mut s = session(&packed(), &bitnetc::Options::default());
    let ours = score(&mut s, &windows, true, None).unwrap();
    // transformers' negative log-likelihoods, in f64.
    let theirs: Vec<f64> = (windows.first_scored..ids.len() - 1)
        .map(|j| {
            let row: Vec<f64> = logits[j * vocab..(j + 1) * vocab]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            lse - row[ids[j + 1] as usize]
        })
        .collect();
    assert_eq!(ours.nll.len(), theirs.len());
    for (i, (a, b)) in ours.nll.iter().zip(&theirs).enumerate() {
        assert!(
            (a - b).abs() < 1e-5,
            "position {i}: {a} vs transformers {b}"
        );
    }
    let ppl = (theirs.iter().sum::<f64>() / theirs.len() as f64).exp();
    assert!((ours.perplexity() - ppl).abs() / ppl < 1e-5);

    // Compared with itself: KL 0 everywhere, the same top token everywhere.
    let mut again = session(&packed(), &bitnetc::Options::default());
    let same = score(&mut again, &windows, false, Some(&ours)).unwrap();
    assert!(same.kl.iter().all(|&k| k < 1e-12), "{:?}", same.kl);
    assert!(same.same_top1.iter().all(|&s| s));
    assert_eq!(same.nll, ours.nll);
}

#[test]
fn the_full_precision_build_is_a_different_distribution_close_to_the_model() {
    let (ids, _) = long_prompt();
    let windows = Windows {
        window: ids.len(),
        ids: vec![ids.clone()],
        first_scored: ids.len() / 2,
    };
    let mut model = session(&packed(), &bitnetc::Options::default());
    let ours = score(&mut model, &windows, true, None).unwrap();
    let mut full = bitnetc::Options::default();
    full.cpu.full_precision = true;
    let mut reference = session(&packed(), &full);
    let theirs = score(&mut reference, &windows, false, Some(&ours)).unwrap();
    // Activation quantization moves the distribution a little, never nothing and never much.
    let mean = theirs.kl.iter().sum::<f64>() / theirs.kl.len() as f64;
    assert!(mean > 0.0 && mean < 1e-2, "mean KL {mean}");
}

/// Gates with the speed gate off: a tiny model's step is all overhead, so its speed-up says
/// nothing (the 2b4t preset's is in the closing note and docs/validation.md).
fn no_speed_gate(dir: &Path) -> PathBuf {
    let p = dir.join("gates.json");
    std::fs::write(&p, r#"{"min_decode_speedup": null}"#).unwrap();
    p
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn validate_reports_every_figure_and_passes_the_fixture() {
    let dir = Scratch::create("validate-pass");
    let gates = no_speed_gate(&dir);
    let m = packed();
    let o = bitnetc(&[
        "validate",
        m.to_str().unwrap(),
        "--gates",
        gates.to_str().unwrap(),
        "--json",
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["pass"], true);
    for build in ["model", "reference"] {
        for field in [
            "weight_bytes",
            "arena_bytes",
            "kv_bytes",
            "prefill_tok_s",
            "decode_tok_s",
            "ppl",
        ] {
            let v = r[build][field].as_f64();
            assert!(v.is_some_and(|v| v > 0.0), "{build}.{field}: {}", r[build]);
        }
    }
    // 2 bits and one scale per projection against 16 bits: 8x to two decimals.
    let reduction = r["figures"]["projection_weight_reduction"]
        .as_f64()
        .unwrap();
    assert!((7.99..8.0).contains(&reduction), "{reduction}");
    assert!(r["figures"]["model_weight_reduction"].as_f64().unwrap() > 2.0);
    for f in ["kl_mean", "kl_p99", "kl_max", "same_top1"] {
        assert!(r["accuracy"][f].is_number(), "{f}");
    }
    assert!(r["accuracy"]["kl_mean"].as_f64().unwrap() < 1e-3);
    let gates: Vec<&str> = r["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["gate"].as_str().unwrap())
        .collect();
    assert_eq!(
        gates,
        [
            "min_projection_weight_reduction",
            "max_ppl_increase",
            "max_kl_mean"
        ]
    );
    assert_eq!(r["text"]["windows"], 4);
    assert_eq!(r["text"]["scored"], 4 * 127);
}

#[test]
fn a_gate_that_cannot_be_met_fails_and_is_named() {
    let dir = Scratch::create("validate-impossible");
    let gates = dir.join("gates.json");
    std::fs::write(
        &gates,
        r#"{"min_decode_speedup": null, "min_projection_weight_reduction": 100}"#,
    )
    .unwrap();
    let m = packed();
    let o = bitnetc(&[
        "validate",
        m.to_str().unwrap(),
        "--gates",
        gates.to_str().unwrap(),
        "--windows",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("FAIL min_projection_weight_reduction")
            && out.contains("failed: min_projection_weight_reduction"),
        "{out}"
    );
}

/// A copy of the fixture with one projection's sign flipped (its `weight_scale` negated).
fn corrupted(dst: &Path, tensor: &str) {
    std::fs::create_dir_all(dst).unwrap();
    for f in std::fs::read_dir(packed()).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".json") {
            std::fs::copy(&f, dst.join(&name)).unwrap();
        }
    }
    let bytes = std::fs::read(packed().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut found = false;
    let tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut data = view.data().to_vec();
            if name == tensor {
                assert_eq!(view.dtype(), safetensors::Dtype::BF16);
                // The sign bit of each little-endian bf16.
                for pair in data.chunks_mut(2) {
                    pair[1] ^= 0x80;
                }
                found = true;
            }
            (name, view.dtype(), view.shape().to_vec(), data)
        })
        .collect();
    assert!(found, "{tensor} is not in the fixture");
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()));
    safetensors::serialize_to_file(views, None, &dst.join("model.safetensors")).unwrap();
}

#[test]
fn a_projection_with_its_sign_flipped_fails_the_accuracy_gate() {
    let dir = Scratch::create("validate-corrupt");
    let bad = dir.join("model");
    corrupted(&bad, "model.layers.0.mlp.down_proj.weight_scale");
    let gates = no_speed_gate(&dir);
    let m = packed();
    let o = bitnetc(&[
        "validate",
        bad.to_str().unwrap(),
        "--reference",
        m.to_str().unwrap(),
        "--gates",
        gates.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["reference_kind"], "model");
    let verdict = |name: &str| {
        r["gates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["gate"] == name)
            .unwrap()["pass"]
            .as_bool()
            .unwrap()
    };
    assert!(!verdict("max_kl_mean"), "{}", r["accuracy"]);
    assert!(verdict("min_projection_weight_reduction"));
    // The same model against itself passes: the failure is the corruption.
    let o = bitnetc(&[
        "validate",
        m.to_str().unwrap(),
        "--reference",
        m.to_str().unwrap(),
        "--gates",
        gates.to_str().unwrap(),
        "--windows",
        "1",
    ]);
    assert!(o.status.success(), "{}", stdout(&o));
}

#[test]
fn bad_input_is_named() {
    let dir = Scratch::create("validate-bad");
    let m = packed();
    let m = m.to_str().unwrap();
    let gates = dir.join("gates.json");
    std::fs::write(&gates, r#"{"min_speed": 2}"#).unwrap();
    let o = bitnetc(&["validate", m, "--gates", gates.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("gates.json") && e.contains("unknown gate \"min_speed\""),
        "{e}"
    );

    let text = dir.join("short.txt");
    std::fs::write(&text, "In the beginning").unwrap();
    let o = bitnetc(&["validate", m, "--text", text.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(
        e.contains("short.txt") && e.contains("fewer than one window"),
        "{e}"
    );

    // A reference with another vocabulary.
    let other = root().join("tests/fixtures/gguf-llama/llama-f32.gguf");
    let o = bitnetc(&[
        "validate",
        m,
        "--reference",
        other.to_str().unwrap(),
        "--windows",
        "1",
        "--window",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("llama-f32.gguf") && e.contains("vocabulary"),
        "{e}"
    );
}
