//! The synthetic checkpoints `--preset NAME` names (`bench`, `profile`): written once,
//! deterministically, into the user's cache folder and reused after.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

/// The synthetic checkpoint of `preset` in the cache folder, written on first use (into a temporary
/// folder renamed into place, so an interrupted write is never mistaken for a checkpoint).
pub fn checkpoint(name: &str) -> Result<PathBuf> {
    let preset =
        bitnet_frontend::synth::preset(name).with_context(|| format!("no preset {name}"))?;
    let root = dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("bitnetc")
        .join("presets");
    let dir = root.join(format!("{name}-seed0"));
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let tmp = root.join(format!(".{name}-seed0.{}", std::process::id()));
    eprintln!("; writing the {name} preset to {} (once)", dir.display());
    let start = Instant::now();
    bitnet_frontend::synth::write_checkpoint(&preset, &tmp, 0)?;
    std::fs::rename(&tmp, &dir).with_context(|| format!("moving it to {}", dir.display()))?;
    eprintln!("; done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(dir)
}
