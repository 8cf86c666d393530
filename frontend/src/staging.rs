//! Folders written whole or not at all (`bitnetc synth`, `bitnetc export --format hf`): the files go
//! into a staging folder beside the target (`.NAME.PID.partial`), each flushed to disk, and the
//! folder is then renamed into place, so the target never holds a part of what was written. A killed
//! process leaves only the staging folder, which the next write beside it removes (when its process
//! is gone).

use crate::error::FrontendError;
use std::io::Write;
use std::path::{Path, PathBuf};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FrontendError {
    let path = path.to_path_buf();
    move |source| FrontendError::Io { path, source }
}

/// Creates `path` (which must not exist) and writes `bytes`, flushed to disk.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), FrontendError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(path))
}

/// Writes the folder `dir` whole: `fill` writes the files into a new, empty staging folder, which is
/// then renamed to `dir`. `dir` may not exist or be empty; a non-empty `dir` is an error (ending with
/// `refusal`, which says what to do) unless `replace`, and is then replaced only once the new folder
/// is complete. Parents are created.
pub fn write_folder(
    dir: &Path,
    replace: bool,
    refusal: &str,
    fill: impl FnOnce(&Path) -> Result<(), FrontendError>,
) -> Result<(), FrontendError> {
    let mut occupied = false;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                if !replace {
                    return Err(FrontendError::format(
                        dir,
                        format!("the folder exists and is not empty ({refusal})"),
                    ));
                }
                occupied = true;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) if dir.exists() && !dir.is_dir() => {
            return Err(FrontendError::format(
                dir,
                "exists and is not a folder (nothing was written)",
            ));
        }
        Err(e) => return Err(io(dir)(e)),
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| FrontendError::format(dir, "not a folder name"))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    remove_stale_staging(&parent, &name);
    let pid = std::process::id();
    let staging = parent.join(format!(".{name}.{pid}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging).map_err(io(&staging))?;
    let written = fill(&staging).and_then(|()| {
        if occupied {
            // The old folder moves aside first (a rename cannot replace a non-empty folder), and is
            // removed once the new one is in place.
            let old = parent.join(format!(".{name}.{pid}.replaced"));
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(dir, &old).map_err(io(dir))?;
            match std::fs::rename(&staging, dir) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&old);
                    Ok(())
                }
                Err(e) => {
                    let _ = std::fs::rename(&old, dir);
                    Err(io(dir)(e))
                }
            }
        } else {
            // An empty `dir` is replaced by the rename (POSIX allows it for an empty folder).
            std::fs::rename(&staging, dir).map_err(io(dir))
        }
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written?;
    if let Ok(d) = std::fs::File::open(&parent) {
        // Best effort: the folder is in place; a parent that cannot be synced loses nothing.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes `.NAME.PID.partial` (and `.NAME.PID.replaced`) folders in `parent` whose process is gone
/// (Linux: no `/proc/PID`), left by a write of `NAME` that was killed.
fn remove_stale_staging(parent: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.filter_map(Result::ok) {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|rest| {
                rest.strip_suffix(".partial")
                    .or_else(|| rest.strip_suffix(".replaced"))
            })
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
