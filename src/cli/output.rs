//! Where commands put what they make: new files only (bitnetc never overwrites one unless told,
//! as `profile --force`), or stdout.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes a new file so that `path` never holds a part of it (`write_new_atomic`: a temporary
/// beside it, flushed, then linked into place); an existing file is an error, never overwritten.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    bitnet_serve::toolchain::write_new_atomic(path, bytes).map_err(anyhow::Error::msg)
}

/// Writes `compiled`'s artifact, with `library` (its linked kernels) as its code, to the new file
/// `path` as it is made (the weights are not copied into a buffer of the whole file first), with
/// `write_new`'s guarantees; returns its bytes. `bitnetc compile` and the server's compile jobs
/// both write artifacts so.
pub fn write_new_artifact(
    path: &Path,
    compiled: &bitnetc::CompiledObject,
    library: &[u8],
) -> std::result::Result<u64, String> {
    bitnet_serve::write_new_atomic_with(path, |w| {
        compiled
            .write_artifact(library, w)
            .map_err(|e| e.to_string())
    })
}

/// Writes a file so that `path` never holds a part of it (a temporary file beside it, flushed to
/// disk, then moved into place). An existing file is an error unless `force`, and is then replaced.
pub fn write_atomic(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if !force {
        return bitnet_serve::toolchain::write_new_atomic(path, bytes)
            .map_err(|e| anyhow::anyhow!("{e}; --force replaces it"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.partial",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, bytes)?;
            f.sync_all()
        })
        .with_context(|| format!("{}: cannot write", path.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("{}: cannot replace", path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
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
