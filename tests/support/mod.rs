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
