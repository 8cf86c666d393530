//! Where the audit log goes: `--audit-log PATH`; else the `BITNETC_AUDIT_LOG` environment variable
//! (a path, or `off`); else `audit.jsonl` in bitnetc's folder under the user's data directory
//! (`$XDG_DATA_HOME/bitnetc`, `~/.local/share/bitnetc` on Linux). A log the user named must open, or
//! the command fails before it runs; the default log is best effort (a read-only home warns once and
//! the command runs unlogged). `run_logged` runs a command between its record and its result.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
        // `--audit-log off` turns the log off as `BITNETC_AUDIT_LOG=off` does (a file of that name
        // is `./off`).
        if path.as_os_str() == "off" {
            return None;
        }
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

/// What a record says about a command's input: each file's size and sha256. An unreadable input is
/// recorded as such; the command then fails and its error is logged too.
fn input_digests(path: &Path) -> serde_json::Value {
    bitnet_runtime::audit::input_digests(path)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

/// The digests of a record's `model` (`null` without one), on a thread of their own while the
/// command runs: hashing a 1 GB model takes seconds that the compile need not wait for. Nothing is
/// hashed when no log is written.
enum Digests {
    Ready(serde_json::Value),
    Hashing(std::thread::JoinHandle<serde_json::Value>),
}

impl Digests {
    fn start(model: Option<PathBuf>, now: bool) -> Digests {
        match model {
            None => Digests::Ready(serde_json::Value::Null),
            Some(m) if now => Digests::Ready(input_digests(&m)),
            Some(m) => Digests::Hashing(std::thread::spawn(move || input_digests(&m))),
        }
    }

    fn finish(self) -> serde_json::Value {
        match self {
            Digests::Ready(v) => v,
            Digests::Hashing(h) => h.join().unwrap_or_else(
                |_| serde_json::json!({ "error": "the thread hashing the input failed" }),
            ),
        }
    }
}

/// Runs `command` and appends its record to the log at `target`: `record` (the kind and what the
/// command's flags say) completed by what the command adds, its wall time and its output's sha256,
/// or the error's message under the kind `error`. A `start` record with the same `op` id comes
/// before anything runs; loading an artifact is recorded next, as `load`.
pub fn run_logged(
    target: &Target,
    record: (&'static str, serde_json::Value),
    command: impl FnOnce(&mut serde_json::Value) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let (kind, mut fields) = record;
    let mut extra = serde_json::json!({});
    let Some(mut log) = open(target)? else {
        return command(&mut extra);
    };
    // The start record: if the process is killed, `audit verify` finds it never ended.
    let op = bitnet_runtime::audit::new_op_id();
    let mut start = fields.clone();
    start["op"] = op.clone().into();
    if start["command"].is_null() {
        start["command"] = kind.into();
    }
    start["pid"] = std::process::id().into();
    log.append("start", start)?;
    fields["op"] = op.into();
    let model = fields["model"].as_str().map(PathBuf::from);
    let artifact = model
        .as_deref()
        .is_some_and(bitnet_runtime::artifact::is_artifact);
    // An artifact's load record names its digests before the command runs.
    let mut digests = Digests::start(model.clone(), artifact);
    if let (true, Some(model)) = (artifact, &model) {
        let inputs = digests.finish();
        log.append(
            "load",
            serde_json::json!({
                "artifact": model.display().to_string(),
                "inputs": inputs.clone(),
            }),
        )?;
        digests = Digests::Ready(inputs);
    }
    let started = std::time::Instant::now();
    let result = command(&mut extra);
    fields["wall_s"] = started.elapsed().as_secs_f64().into();
    fields["inputs"] = digests.finish();
    if let (Some(f), serde_json::Value::Object(extra)) = (fields.as_object_mut(), extra) {
        f.extend(extra);
    }
    match &result {
        Ok(_) => {
            if let Some(out) = fields["output"].as_str().map(PathBuf::from)
                && out.is_file()
            {
                fields["output_sha256"] = bitnet_runtime::audit::file_sha256(&out)?.0.into();
            }
            log.append(kind, fields)?;
        }
        Err(e) => {
            fields["message"] = super::message::one_line(e).into();
            log.append("error", fields)?;
        }
    }
    result
}
