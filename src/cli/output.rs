//! Where commands put what they make: new files only (bitnetc never overwrites one), or stdout.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes a new file; an existing file is an error, never overwritten.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "{}: cannot create (it may already exist; bitnetc does not overwrite files)",
                path.display()
            )
        })?;
    f.write_all(bytes)
        .with_context(|| format!("{}: write failed", path.display()))?;
    Ok(())
}

/// Writes IR text to `output` (a new file) or prints it.
pub fn write_or_print(output: Option<&Path>, text: &str) -> Result<()> {
    match output {
        Some(path) => {
            write_new(path, text.as_bytes())?;
            println!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
