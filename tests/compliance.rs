//! `bitnetc compliance`: on the fixture model and its artifact (hashes, a byte-identical rebuild),
//! the audit chain, the malformed-input corpus and this source tree; evidence files; tampering
//! with the artifact or the log; levels and the score.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::path::Path;
use support::{Scratch, have_cc, root};

/// Runs `bitnetc --audit-log LOG compliance ARGS --json` from the repository root.
fn compliance(log: &Path, args: &[&str]) -> (Option<i32>, Value, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args(["--audit-log", log.to_str().unwrap(), "compliance"])
        .args(args)
        .arg("--json")
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&o.stdout)));
    (o.status.code(), v, stderr)
}

fn status<'a>(report: &'a Value, id: &str) -> (&'a str, &'a str) {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}: {report}"));
    (
        c["status"].as_str().unwrap(),
        c["evidence"].as_str().unwrap(),
    )
}

/// An audit log with a few records (the `logits` command writes one each).
fn a_log(dir: &Path) -> std::path::PathBuf {
    let log = dir.join("audit.jsonl");
    let model = root().join("tests/fixtures/hf-tiny/packed");
    for tokens in ["1,2", "3,4"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
            .args(["--audit-log", log.to_str().unwrap(), "logits"])
            .args([model.to_str().unwrap(), "--tokens", tokens])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    log
}

#[test]
fn the_fixture_model_meets_the_standard_level() {
    if !have_cc("the_fixture_model_meets_the_standard_level") {
        return;
    }
    let dir = Scratch::create("compliance-standard");
    let log = a_log(&dir);
    let (code, r, stderr) = compliance(&log, &["tests/fixtures/hf-tiny/packed"]);
    assert_eq!(code, Some(0), "{r}\n{stderr}");
    for id in [
        "artifact_hashes",
        "rebuild_identical",
        "audit_chain",
        "malformed_inputs",
        "unsafe_documented",
        "no_panics_in_library",
    ] {
        assert_eq!(status(&r, id).0, "pass", "{id}: {}", status(&r, id).1);
    }
    for id in ["coverage", "fuzzing", "licences"] {
        assert_eq!(status(&r, id).0, "not run", "{id}");
    }
    // Only the checks that ran count.
    assert_eq!(
        (r["checks_run"].as_u64(), r["score"].as_f64()),
        (Some(6), Some(1.0))
    );
    assert!(status(&r, "audit_chain").1.contains("4 records"));
    // The enhanced level needs evidence this run did not have.
    let (code, r, _) = compliance(
        &log,
        &["tests/fixtures/hf-tiny/packed", "--level", "enhanced"],
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        r["missing_for_level"],
        serde_json::json!(["coverage", "fuzzing", "licences"])
    );
}

#[test]
fn an_artifact_is_rebuilt_from_its_model_and_tampering_is_found() {
    if !have_cc("an_artifact_is_rebuilt_from_its_model_and_tampering_is_found") {
        return;
    }
    let dir = Scratch::create("compliance-artifact");
    let log = a_log(&dir);
    let model = root().join("tests/fixtures/hf-tiny/packed");
    let artifact = dir.join("tiny.bnx");
    let o = support::bitnetc(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        artifact.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = artifact.to_str().unwrap();
    let (code, r, _) = compliance(&log, &[a, "--model", model.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(status(&r, "rebuild_identical").0, "pass");
    // Without its model, the rebuild does not run (and is missing for the level).
    let (code, r, _) = compliance(&log, &[a]);
    assert_eq!(code, Some(1));
    assert_eq!(status(&r, "rebuild_identical").0, "not run");
    // Another model's files: the recorded input hashes do not match.
    let other = root().join("tests/fixtures/hf-tiny/online");
    let (_, r, _) = compliance(&log, &[a, "--model", other.to_str().unwrap()]);
    let (s, why) = status(&r, "rebuild_identical");
    assert_eq!(s, "fail");
    assert!(why.contains("the artifact was compiled from"), "{why}");
    // One byte of the weights flipped: the hashes fail.
    let mut bytes = std::fs::read(&artifact).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    std::fs::write(&artifact, &bytes).unwrap();
    let (code, r, _) = compliance(&log, &[a, "--model", model.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert_eq!(status(&r, "artifact_hashes").0, "fail", "{r}");
    // A record of the log edited: the chain fails.
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.replacen("\"logits\"", "\"Logits\"", 1)).unwrap();
    let (_, r, _) = compliance(&log, &[]);
    assert_eq!(status(&r, "audit_chain").0, "fail", "{r}");
}

#[test]
fn evidence_files_are_judged_against_the_level() {
    let dir = Scratch::create("compliance-evidence");
    let log = a_log(&dir);
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let cov = |covered: u32| {
        format!(
            r#"{{"data":[{{"totals":{{"lines":{{"count":1000,"covered":{covered},"percent":0}}}}}}]}}"#
        )
    };
    let high = write("cov-high.json", &cov(960));
    let low = write("cov-low.json", &cov(900));
    let fuzz = write(
        "fuzz.json",
        r#"{"targets":{"gguf":{"runs":100000,"crashes":0},"onnx":{"runs":5000,"crashes":0}}}"#,
    );
    let crash = write(
        "crash.json",
        r#"{"targets":{"gguf":{"runs":10,"crashes":1}}}"#,
    );
    let deny = write(
        "deny.jsonl",
        "{\"type\":\"summary\",\"fields\":{\"licenses\":{\"errors\":0}}}\n",
    );
    let args = |c: &str, f: &str| -> Vec<String> {
        [
            "--level",
            "defense-grade",
            "--coverage",
            c,
            "--fuzz",
            f,
            "--licences",
            &deny,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        compliance(&log, &a).1
    };
    let r = run(args(&high, &fuzz));
    assert_eq!(status(&r, "coverage").0, "pass", "{r}");
    assert!(status(&r, "coverage").1.contains("96.0 %"));
    assert_eq!(status(&r, "fuzzing").0, "pass");
    assert_eq!(status(&r, "licences").0, "pass");
    // 90 % is enough for enhanced (80 %), not for defense-grade (95 %).
    let r = run(args(&low, &fuzz));
    assert_eq!(status(&r, "coverage").0, "fail");
    let r = run(args(&high, &crash));
    let (s, why) = status(&r, "fuzzing");
    assert_eq!(s, "fail");
    assert!(why.contains("gguf (1)"), "{why}");
    let garbage = write("garbage.json", "not json");
    let r = run(args(&garbage, &fuzz));
    let (s, why) = status(&r, "coverage");
    assert_eq!(s, "fail");
    assert!(why.contains("garbage.json"), "{why}");
}
