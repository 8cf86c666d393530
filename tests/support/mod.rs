//! Helpers shared by the integration tests.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A scratch folder under the system temp dir, unique to this process and tag, removed when dropped
/// (so tests leave nothing behind). `create` makes the folder; `reserve` only picks the path (for
/// commands that must create it themselves).
pub struct Scratch(PathBuf);

impl Scratch {
    fn path_for(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bitnetc-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A new, empty folder.
    pub fn create(tag: &str) -> Scratch {
        let dir = Scratch::path_for(tag);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }

    /// A path that does not exist yet.
    pub fn reserve(tag: &str) -> Scratch {
        Scratch(Scratch::path_for(tag))
    }
}

impl Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// Runs the `bitnetc` binary with `args` and waits for it. The audit log is off unless the test
/// names one with `--audit-log` (so tests never write to the user's data folder).
pub fn bitnetc(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args(args)
        .env("BITNETC_AUDIT_LOG", "off")
        .output()
        .unwrap_or_else(|e| panic!("running bitnetc: {e}"))
}

/// The gguf-tiny files, in the order their `reference.json` lists them.
pub const GGUF_FILES: [&str; 4] = [
    "tiny-f32.gguf",
    "tiny-tq2_0.gguf",
    "tiny-tq1_0.gguf",
    "tiny-i2_s.gguf",
];

/// A fixture folder's `reference.json`.
pub fn reference(dir: &Path) -> serde_json::Value {
    let path = dir.join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The repository root (fixtures are under `tests/fixtures`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A JSON array of token ids (as `reference.json` stores them).
pub fn ids(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().map_or_else(Vec::new, |a| {
        a.iter().filter_map(serde_json::Value::as_i64).collect()
    })
}

/// The index of the largest value (the first one on ties), as a token id.
pub fn argmax(row: &[f32]) -> i64 {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |a, (i, &x)| if x > a.1 { (i, x) } else { a },
        )
        .0 as i64
}

/// Checks that logits `ours` are within `tolerance · max|theirs|` of `theirs` everywhere; prints the
/// measured ratio and returns that bound.
pub fn check_logits_within(what: &str, ours: &[f32], theirs: &[f32], tolerance: f32) -> f32 {
    assert_eq!(ours.len(), theirs.len(), "{what}: logits lengths");
    let max_logit = theirs.iter().fold(0f32, |a, x| a.max(x.abs()));
    let max_diff = ours
        .iter()
        .zip(theirs)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    println!(
        "{what}: max|diff| = {:.3e} · max|logit|",
        max_diff / max_logit
    );
    assert!(
        max_diff <= tolerance * max_logit,
        "{what}: logits differ by {max_diff} (max|logit| {max_logit})"
    );
    tolerance * max_logit
}

/// Checks `ours` against reference logits `theirs` (both `[positions × vocab]`): the largest
/// difference is at most `tolerance · max|theirs|` and the argmax is identical at every position.
/// Prints the measured ratio and returns our argmax per position.
pub fn check_logits(
    what: &str,
    ours: &[f32],
    theirs: &[f32],
    vocab: usize,
    tolerance: f32,
) -> Vec<i64> {
    check_logits_within(what, ours, theirs, tolerance);
    let ours_arg: Vec<i64> = ours.chunks(vocab).map(argmax).collect();
    let theirs_arg: Vec<i64> = theirs.chunks(vocab).map(argmax).collect();
    assert_eq!(ours_arg, theirs_arg, "{what}: argmax per position");
    ours_arg
}

/// True if `cc` runs (artifacts are linked with it); otherwise prints why `test` is skipped.
pub fn have_cc(test: &str) -> bool {
    let ok = std::process::Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("{test}: skipped: no C compiler driver (cc) to link artifacts");
    }
    ok
}
