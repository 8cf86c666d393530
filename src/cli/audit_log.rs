//! Where the audit log goes: `--audit-log PATH`; else the `BITNETC_AUDIT_LOG` environment variable
//! (a path, or `off`); else `audit.jsonl` in bitnetc's folder under the user's data directory
//! (`$XDG_DATA_HOME/bitnetc`, `~/.local/share/bitnetc` on Linux). A log the user named must open, or
//! the command fails before it runs; the default log is best effort (a read-only home warns once and
//! the command runs unlogged).

use std::path::PathBuf;

/// The environment variable that names the log, or turns it off.
pub const ENV: &str = "BITNETC_AUDIT_LOG";

/// The log to write, and whether the user chose it.
pub struct Target {
    /// The file.
    pub path: PathBuf,
    /// Named by `--audit-log` or the environment (failures are errors), or the default (warnings).
    pub chosen: bool,
}

/// Resolves the log for a command given `--audit-log`; `None` when logging is off.
pub fn resolve(flag: Option<PathBuf>) -> Option<Target> {
    if let Some(path) = flag {
        return Some(Target { path, chosen: true });
    }
    if let Some(v) = std::env::var_os(ENV) {
        if v.is_empty() || v == "off" {
            return None;
        }
        return Some(Target {
            path: PathBuf::from(v),
            chosen: true,
        });
    }
    dirs::data_dir().map(|d| Target {
        path: d.join("bitnetc").join("audit.jsonl"),
        chosen: false,
    })
}

/// Opens the log; the default location's folder is created. `None` (after a warning on stderr)
/// when the default log cannot be opened.
pub fn open(target: &Target) -> anyhow::Result<Option<bitnet_runtime::audit::AuditLog>> {
    if !target.chosen
        && let Some(dir) = target.path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!(
            "warning: not logging this run: cannot create {}: {e} (choose a log with --audit-log or {ENV}, or set {ENV}=off)",
            dir.display()
        );
        return Ok(None);
    }
    match bitnet_runtime::audit::AuditLog::open(&target.path) {
        Ok(log) => Ok(Some(log)),
        Err(e) if !target.chosen => {
            eprintln!(
                "warning: not logging this run: {e} (choose a log with --audit-log or {ENV}, or set {ENV}=off)"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
