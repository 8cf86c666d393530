//! `bitnetc profile` end to end on the tiny fixture: the Chrome trace is valid trace-event JSON
//! holding every launch of every profiled step inside its step; a saved profile compared with a
//! new run passes, a planted slowdown on one launch group is caught and named (exit 1), and a
//! baseline of another model is a clear error. No assertion here depends on timing except through
//! the planted delay, which is far above any noise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Output;
use support::{bitnetc, root};

const PROMPT_LEN: &str = "6";
const STEPS: &str = "3";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture(name: &str) -> String {
    root()
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

/// `bitnetc profile MODEL --threads 2 --prompt-len 6 --steps 3 EXTRA…`.
fn profile(model: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "profile",
        model,
        "--threads",
        "2",
        "--prompt-len",
        PROMPT_LEN,
        "--steps",
        STEPS,
    ];
    args.extend_from_slice(extra);
    bitnetc(&args)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn trace_is_chrome_trace_json_with_every_launch_inside_its_step() {
    let dir = support::Scratch::create("profile-trace");
    let trace = dir.join("trace.json");
    let saved = dir.join("prof.json");
    let o = profile(
        &fixture("hf-tiny/packed"),
        &[
            "--trace",
            trace.to_str().unwrap(),
            "--save",
            saved.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let launches = read_json(&saved)["labels"].as_array().unwrap().len();
    assert!(launches > 10, "{launches} launches");
    let t = read_json(&trace);
    let events = t["traceEvents"].as_array().unwrap();
    let complete: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    for e in &complete {
        for field in ["name", "cat", "ph", "ts", "dur", "pid", "tid"] {
            assert!(!e[field].is_null(), "event without {field}: {e}");
        }
        assert!(
            e["ts"].as_f64().unwrap() >= 0.0 && e["dur"].as_f64().unwrap() >= 0.0,
            "{e}"
        );
    }
    let steps: Vec<&&Value> = complete.iter().filter(|e| e["cat"] == "step").collect();
    let want_steps = 1 + STEPS.parse::<usize>().unwrap();
    assert_eq!(steps.len(), want_steps);
    assert_eq!(t["otherData"]["dropped_events"], 0);
    for step in &steps {
        let s = step["args"]["step"].as_u64().unwrap();
        let (ts, end) = (
            step["ts"].as_f64().unwrap(),
            step["ts"].as_f64().unwrap() + step["dur"].as_f64().unwrap(),
        );
        let mut seen = vec![false; launches];
        for e in complete
            .iter()
            .filter(|e| e["cat"] != "step" && e["args"]["step"] == s)
        {
            let i = e["args"]["launch"].as_u64().unwrap() as usize;
            assert!(!seen[i], "launch {i} twice in step {s}");
            seen[i] = true;
            let (a, b) = (
                e["ts"].as_f64().unwrap(),
                e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap(),
            );
            assert!(
                a >= ts - 1e-3 && b <= end + 1e-3,
                "launch {i} [{a}, {b}] outside step {s} [{ts}, {end}]"
            );
            let phase = if s == 0 { "prefill" } else { "decode" };
            assert_eq!(e["cat"], format!("launch,{phase}"));
        }
        assert!(
            seen.iter().all(|&x| x),
            "step {s} misses launches: {seen:?}"
        );
    }
    // The layers are named in the labels: the fixture has 4.
    let layers: std::collections::BTreeSet<u64> = complete
        .iter()
        .filter_map(|e| e["args"]["layer"].as_u64())
        .collect();
    assert_eq!(layers, (0..4).collect());
    let prof = read_json(&saved);
    assert_eq!(
        prof["memory"]["allocations"]["count"], 0,
        "{}",
        prof["memory"]
    );
    // An existing file is not overwritten without --force.
    let o = profile(
        &fixture("hf-tiny/packed"),
        &["--trace", trace.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("already exists") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    let o = profile(
        &fixture("hf-tiny/packed"),
        &["--trace", trace.to_str().unwrap(), "--force"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn baseline_passes_the_same_build_and_catches_a_planted_slowdown() {
    let dir = support::Scratch::create("profile-baseline");
    let saved = dir.join("prof.json");
    let model = fixture("hf-tiny/packed");
    let o = profile(&model, &["--save", saved.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let base = saved.to_str().unwrap();
    // The same build again: a generous threshold leaves no room for noise to fail it.
    let o = profile(&model, &["--baseline", base, "--threshold", "1000"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("no regression"), "{}", stderr(&o));
    // 100 ms in layer 1's q_proj, against launches of microseconds (milliseconds on a loaded CI
    // machine): caught and named at both the group and the layer level.
    let o = profile(
        &model,
        &[
            "--baseline",
            base,
            "--threshold",
            "5",
            "--plant-delay",
            "layer 1 q_proj:100000",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("decode group \"q_proj: bit.ternary_matmul"),
        "{err}"
    );
    assert!(err.contains("decode layer \"layer 1\""), "{err}");
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let named: Vec<&str> = report["regressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        named
            .iter()
            .any(|n| n.starts_with("q_proj: bit.ternary_matmul")),
        "{named:?}"
    );
    assert!(named.contains(&"layer 1"), "{named:?}");
}

#[test]
fn a_baseline_of_another_model_is_an_error() {
    let dir = support::Scratch::create("profile-other");
    let saved = dir.join("prof.json");
    let o = profile(
        &fixture("gguf-tiny/tiny-tq2_0.gguf"),
        &["--save", saved.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = profile(
        &fixture("hf-tiny/packed"),
        &["--baseline", saved.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("the baseline profiles another program"),
        "{err}"
    );
    assert!(!err.contains("regressions against"), "{err}");
    // A file that is not a profile at all.
    let bogus = dir.join("bogus.json");
    std::fs::write(&bogus, "{\"traceEvents\": []}").unwrap();
    let o = profile(
        &fixture("hf-tiny/packed"),
        &["--baseline", bogus.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a profile saved by `bitnetc profile --save`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_batched_profile_runs_every_sequence_in_each_decode_step_without_allocating() {
    let o = profile(&fixture("hf-tiny/packed"), &["--batch", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["batch"], 3);
    let steps = STEPS.parse::<u64>().unwrap();
    let decode = &report["phases"]["decode"];
    assert_eq!(decode["steps"], steps);
    assert_eq!(decode["tokens"], 3 * steps, "{decode}");
    // The prefill phase is the first sequence's prompt alone.
    assert_eq!(
        report["phases"]["prefill"]["tokens"],
        PROMPT_LEN.parse::<u64>().unwrap()
    );
    assert_eq!(
        report["memory"]["allocations"]["count"], 0,
        "{}",
        report["memory"]
    );
    let o = profile(&fixture("hf-tiny/packed"), &["--batch", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--batch"), "{}", stderr(&o));
}
