//! What the caller hands the server: the models to serve at start (`ModelSource`, each with its
//! `Loader`, giving a `LoadedModel`), and what the gateway asks of the compiler (`Toolchain`): load
//! a model from a path, compile one into an artifact, validate or profile one, and run the
//! compliance checks. The server depends on the runtime only, so the caller (`bitnetc serve`)
//! provides these; a server started without a toolchain still serves the models it was given, and
//! answers the gateway's load and compile routes with 501.
//!
//! The calls run on a thread of their own (never on the async runtime) and may take minutes.

use crate::engine::StepModel;
use bitnet_runtime::chat::ChatTemplate;
use bitnet_runtime::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// A model ready to serve: its slots and its tokenizer.
pub struct LoadedModel {
    /// The model's slots.
    pub model: Box<dyn StepModel>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat template (`None`: the built-in 2B-4T format).
    pub chat_template: Option<ChatTemplate>,
    /// Where it came from and what it costs (for the gateway's model routes).
    pub info: ModelInfo,
}

/// Loads a model (compiling it, or loading an artifact); the error says why it could not.
pub type Loader = Box<dyn FnOnce() -> Result<LoadedModel, String> + Send>;

/// A model to serve: its id (the `model` of requests) and how to load it.
pub struct ModelSource {
    /// The id clients name.
    pub id: String,
    /// Called once, on the loading thread.
    pub load: Loader,
}

/// What a model is, for `GET /v1/bitnetc/models`: where it came from and what it costs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelInfo {
    /// The file or folder it was loaded from, if known.
    pub source: Option<PathBuf>,
    /// What that is: `hf`, `gguf`, `onnx`, `artifact`, … (empty if unknown).
    pub kind: String,
    /// Anything else cheaply known (a JSON object: weight bytes, KV bytes per slot, the
    /// artifact's manifest, load time), shown by `GET /v1/bitnetc/models/{name}`.
    pub details: serde_json::Value,
}

/// What `POST /v1/bitnetc/compile` asks for, checked by the server: `model` exists, `output`
/// does not and its folder does, `target` is one of `Toolchain::targets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileRequest {
    /// The model to compile.
    pub model: PathBuf,
    /// The artifact to write (it must not exist).
    pub output: PathBuf,
    /// The target (`Toolchain::targets`).
    pub target: String,
    /// The context to build for (`None`: the model's).
    pub context: Option<u64>,
}

/// A finished compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// The artifact written.
    pub output: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What `POST /v1/bitnetc/validate` asks for, checked by the server: `model` exists, and so do
/// the reference, text and tokenizer when given.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidateRequest {
    /// The model to validate.
    pub model: PathBuf,
    /// The reference model (`None`: the model with full-precision weights).
    pub reference: Option<PathBuf>,
    /// Gate thresholds overriding the defaults (a JSON object, as `bitnetc validate --gates`
    /// reads from a file; checked by the toolchain).
    pub gates: Option<serde_json::Value>,
    /// The text to score (`None`: the built-in one).
    pub text: Option<PathBuf>,
    /// A tokenizer for models that carry none.
    pub tokenizer: Option<PathBuf>,
    /// Tokens per scored window (`None`: the command's default).
    pub window: Option<u64>,
    /// At most this many windows (`None`: the command's default).
    pub windows: Option<u64>,
}

/// What `POST /v1/bitnetc/profile` asks for, checked by the server: `model` exists, and so does
/// the baseline when given.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRequest {
    /// The model to profile.
    pub model: PathBuf,
    /// Tokens of the profiled prefill (`None`: the command's default).
    pub prompt_len: Option<u64>,
    /// Decode steps profiled (`None`: the command's default).
    pub steps: Option<u64>,
    /// A saved profile (a file on the server) to compare with.
    pub baseline: Option<PathBuf>,
    /// The slowdown that counts as a regression (`None`: the command's default).
    pub threshold: Option<f64>,
}

/// What `POST /v1/bitnetc/compliance` asks for, checked by the server: the paths exist, the level
/// is one of `standard`, `enhanced`, `defense-grade`.
#[derive(Clone, Debug, PartialEq)]
pub struct ComplianceRequest {
    /// The artifact, or a model to compile into one (`None`: the checks that need neither).
    pub target: Option<PathBuf>,
    /// The model an artifact was compiled from, for its rebuild.
    pub model: Option<PathBuf>,
    /// The level.
    pub level: String,
}

/// Loads and compiles models for the gateway (see the module doc). Errors are messages for the
/// client, naming the file at fault.
pub trait Toolchain: Send + Sync {
    /// Loads the model at `path` (compiling it, or loading an artifact) for the server, as the
    /// models given at start were.
    fn load(&self, name: &str, path: &Path) -> Result<LoadedModel, String>;

    /// The targets `compile` accepts; the first is the default.
    fn targets(&self) -> Vec<String>;

    /// Compiles `request.model` into the artifact `request.output`. It must never overwrite a
    /// file, and must leave no partly written output behind when it fails.
    fn compile(&self, request: &CompileRequest) -> Result<Compiled, String>;

    /// Validates `request.model` as `bitnetc validate` does; the report as `--json` prints it
    /// (with `"pass"`). A toolchain that cannot says so.
    fn validate(&self, request: &ValidateRequest) -> Result<serde_json::Value, String> {
        Err(format!(
            "{}: this server's toolchain cannot validate models",
            request.model.display()
        ))
    }

    /// Profiles `request.model` as `bitnetc profile --json` does (with `"regressions"` when a
    /// baseline is given). A toolchain that cannot says so.
    fn profile(&self, request: &ProfileRequest) -> Result<serde_json::Value, String> {
        Err(format!(
            "{}: this server's toolchain cannot profile models",
            request.model.display()
        ))
    }

    /// Runs `bitnetc compliance --json`'s checks. A toolchain that cannot says so.
    fn compliance(&self, request: &ComplianceRequest) -> Result<serde_json::Value, String> {
        let _ = request;
        Err("this server's toolchain cannot run compliance checks".into())
    }
}

/// Writes `bytes` to `path`, which must not exist, so that `path` never holds a part of them: they
/// go to a temporary file beside it (`.NAME.PID.partial`), flushed to disk, which is then
/// hard-linked to `path` (an existing `path` makes the link fail: nothing is overwritten, even by
/// a file that appeared meanwhile) and removed; the folder is synced so the new name survives a
/// crash. On any error the temporary is removed and `path` is untouched. Temporaries that killed
/// processes left beside `path` are removed first.
pub fn write_new_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_new_atomic_with(path, |w| w.write_all(bytes).map_err(|e| e.to_string()))
}

/// `write_new_atomic` with the contents written by `write` into the (buffered) temporary file as
/// they are made, so a large file is never held in memory whole: an error from `write` leaves
/// `path` untouched and removes the temporary, like any other. Returns what `write` returned.
pub fn write_new_atomic_with<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<T, String>,
) -> Result<T, String> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    if !dir.is_dir() {
        return Err(format!(
            "{}: cannot create: the folder {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.exists() {
        return Err(already_exists(path));
    }
    remove_stale_temporaries(&dir, &name);
    let tmp = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let written = (|| -> Result<T, String> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| e.to_string())?;
        let mut buffered = std::io::BufWriter::with_capacity(1 << 20, f);
        let made = write(&mut buffered)?;
        buffered.flush().map_err(|e| e.to_string())?;
        let f = buffered.into_inner().map_err(|e| e.error().to_string())?;
        f.sync_all().map_err(|e| e.to_string())?;
        Ok(made)
    })();
    let linked = written
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))
        .and_then(|made| {
            std::fs::hard_link(&tmp, path).map(|()| made).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    already_exists(path)
                } else {
                    format!("{}: cannot create: {e}", path.display())
                }
            })
        });
    let _ = std::fs::remove_file(&tmp);
    if linked.is_ok()
        && let Ok(d) = std::fs::File::open(&dir)
    {
        // Best effort: the link is made; a folder that cannot be synced loses nothing written.
        let _ = d.sync_all();
    }
    linked
}

fn already_exists(path: &Path) -> String {
    format!(
        "{}: already exists (bitnetc does not overwrite files)",
        path.display()
    )
}

/// Removes `.NAME.PID.partial` files in `dir` whose process is gone (Linux: no `/proc/PID`), left
/// by a process killed while writing `NAME`.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let proc = Path::new("/proc/self");
    if !proc.exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.filter_map(Result::ok) {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".partial"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{write_new_atomic, write_new_atomic_with};
    use std::path::{Path, PathBuf};

    /// An empty scratch folder for test `tag` (emptied if an earlier run left it).
    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bitnet-serve-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_default();
        dir
    }

    /// The names of the files in `dir`.
    fn files_in(dir: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn writes_a_new_file_and_never_overwrites_one() {
        let dir = scratch("atomic");
        let path = dir.join("out.bnx");
        assert_eq!(write_new_atomic(&path, b"first"), Ok(()));
        let again = write_new_atomic(&path, b"second");
        assert!(again.is_err_and(|e| e.contains("already exists")));
        assert_eq!(std::fs::read(&path).ok().as_deref(), Some(&b"first"[..]));
        let left = files_in(&dir);
        assert_eq!(left.len(), 1, "{left:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_streamed_write_that_fails_leaves_nothing() {
        let dir = scratch("stream");
        let path = dir.join("out.bnx");
        // Part of the file is written, then the producer fails: no file, no temporary.
        let failed = write_new_atomic_with(&path, |w| -> Result<(), String> {
            w.write_all(&[7; 3 << 20]).map_err(|e| e.to_string())?;
            Err("the encoder gave up".into())
        });
        assert!(failed.is_err_and(|e| e.contains("the encoder gave up") && e.contains("out.bnx")));
        let left = files_in(&dir);
        assert!(left.is_empty(), "{left:?}");
        // A producer that succeeds writes every byte, past the buffer's size, and its result is
        // returned.
        let ok = write_new_atomic_with(&path, |w| {
            for i in 0..5u8 {
                w.write_all(&[i; 1 << 20]).map_err(|e| e.to_string())?;
            }
            Ok(5u8)
        });
        assert_eq!(ok, Ok(5));
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert_eq!(bytes.len(), 5 << 20);
        assert!(
            bytes
                .chunks(1 << 20)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&b| b == i as u8))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
