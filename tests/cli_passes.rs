//! The `opt` and `plan` commands end to end: pipelines, printing after passes, numbered phase dumps
//! (never over an existing folder), pass timing, `--explain`, and the memory plan report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::bitnetc;

use std::path::PathBuf;

fn fixture(p: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(p)
        .display()
        .to_string()
}

fn scratch(name: &str) -> support::Scratch {
    support::Scratch::reserve(&format!("cli-passes-{name}"))
}

#[test]
fn opt_lowers_times_explains_and_dumps_phases() {
    let model = fixture("tests/fixtures/hf-tiny/packed_bitlinear");
    let dir = scratch("dump");
    let o = bitnetc(&[
        "opt",
        &model,
        "--time-passes",
        "--explain",
        "--dump-phases",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        out.matches("bit.ternary_matmul").count(),
        28,
        "28 lowered projections in the printed IR"
    );
    assert!(err.contains("pass timing"), "{err}");
    assert!(err.contains("lowered 28 ternary projection(s)"), "{err}");
    assert!(
        err.contains("bitlinear-int-rescale"),
        "--explain names the rules: {err}"
    );
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files[0], "01-canonicalize.bir");
    assert_eq!(files[1], "02-lower-bitlinear.bir");
    // Each phase is valid IR.
    for f in &files {
        let c = bitnetc(&["check", dir.join(f).to_str().unwrap()]);
        assert!(
            c.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&c.stderr)
        );
    }
    // The dump folder must not exist yet; nothing in it is overwritten.
    let again = bitnetc(&["opt", &model, "--dump-phases", dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn opt_prints_after_a_named_pass_and_rejects_unknown_passes() {
    let model = fixture("tests/fixtures/gguf-tiny/tiny-tq2_0.gguf");
    let o = bitnetc(&[
        "opt",
        &model,
        "-p",
        "canonicalize,lower-bitlinear",
        "--print-after",
        "lower-bitlinear",
    ]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("; IR after lower-bitlinear"));
    let bad = bitnetc(&["opt", &model, "-p", "canonicalize,no-such-pass"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("no-such-pass") && err.contains("lower-bitlinear"),
        "{err}"
    );
}

#[test]
fn plan_reports_arena_lower_bound_and_kv_cache() {
    let o = bitnetc(&[
        "plan",
        &fixture("tests/fixtures/hf-tiny/packed"),
        "--context",
        "64",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let arena = v["arena_bytes"].as_u64().unwrap();
    let lower = v["lower_bound_bytes"].as_u64().unwrap();
    assert!(arena as f64 <= 1.1 * lower as f64);
    assert!(arena < v["naive_bytes"].as_u64().unwrap());
    // 4 layers × (K, V) × 64 rows × 4 kv heads × 32 × f32.
    assert_eq!(v["kv_cache_bytes"].as_u64().unwrap(), 4 * 2 * 64 * 128 * 4);
    assert!(!v["buffers"].as_array().unwrap().is_empty());
}
