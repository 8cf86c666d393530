//! The in-process API: compile a model (or load an artifact) and talk to it.
//!
//! ```no_run
//! use bitnetc::{GenerateParams, Options};
//! let model = bitnetc::compile("tests/fixtures/hf-tiny/packed".as_ref(), &Options::default())?;
//! let mut session = model.session()?;
//! let prompt = session.encode("Return a new sorted list")?;
//! let out = session.generate(&prompt, &GenerateParams::default(), &mut |_, text| print!("{text}"))?;
//! println!("\n{} tokens, stopped by {}", out.tokens.len(), out.stop.name());
//! # Ok::<(), bitnetc::Error>(())
//! ```
//!
//! `compile` takes anything `bitnetc` imports (a Hugging Face folder, a `.gguf` or `.onnx` file) and
//! compiles it for this CPU in memory (JIT); given a `.bnx` artifact it loads it instead. The model's
//! tokenizer comes along: the folder's `tokenizer.json`, the GGUF vocabulary, or the artifact's.

use crate::{CpuError, CpuOptions};
use bitnet_frontend::model::ImportOptions;
use bitnet_runtime::session::Session;
use bitnet_runtime::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A callback told the name of each stage as it starts.
pub type StageCallback = Arc<dyn Fn(&str) + Send + Sync>;

/// How to compile and run.
#[derive(Clone, Default)]
pub struct Options {
    /// Code generation and threads (`CpuOptions::default()`: every core, BitNet numerics).
    pub cpu: CpuOptions,
    /// The longest context (prompt and output) in tokens; default: the model's own limit. Ignored
    /// for artifacts, whose context was fixed when they were compiled.
    pub context: Option<u64>,
    /// Called with the name of each stage as it starts (`import`, `compile`, `load`), for progress
    /// displays.
    pub on_stage: Option<StageCallback>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("cpu", &self.cpu)
            .field("context", &self.context)
            .field("on_stage", &self.on_stage.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Why a model could not be compiled, loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model could not be imported.
    #[error(transparent)]
    Import(#[from] bitnet_frontend::FrontendError),
    /// It could not be compiled.
    #[error(transparent)]
    Compile(#[from] CpuError),
    /// It could not be loaded or run.
    #[error(transparent)]
    Runtime(#[from] bitnet_runtime::RuntimeError),
    /// Its tokenizer could not be read.
    #[error(transparent)]
    Tokenizer(#[from] bitnet_runtime::tokenizer::TokenizerError),
}

/// How a model was made ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Compiled in this process.
    Jit,
    /// Loaded from a `.bnx` artifact.
    Artifact,
}

/// A compiled model, ready to start sessions.
pub struct Model {
    exec: bitnet_runtime::Executor,
    tokenizer: Option<Tokenizer>,
    /// The file or folder it came from.
    pub source: PathBuf,
    /// Compiled here or loaded.
    pub origin: Origin,
    /// Time to import (or map and check the artifact).
    pub import_time: Duration,
    /// Time to run the passes and generate code (zero for an artifact).
    pub compile_time: Duration,
    /// Bytes of weights the program reads.
    pub weight_bytes: u64,
}

impl Model {
    /// A session on this model (it owns the KV cache and the tokenizer). This CPU model has one
    /// KV cache, so it makes one session; the `Result` leaves room for backends that allocate one.
    pub fn session(self) -> Result<Session, Error> {
        Ok(Session::new(self.exec, self.tokenizer))
    }

    /// The tokenizer, if the model carries one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The context length in tokens.
    pub fn context(&self) -> u64 {
        self.exec.program().context
    }

    /// The vocabulary size.
    pub fn vocab(&self) -> u64 {
        self.exec.program().vocab
    }

    /// Weight bytes one decode step reads: each distinct weight buffer a launch uses once, except
    /// that an embedding lookup (kernel `bitnet_embedding_<vocab>x<hidden>`) reads one row.
    pub fn read_bytes_per_token(&self) -> u64 {
        let program = self.exec.program();
        // Per distinct buffer, the most any launch reads of it: a table shared by the embedding
        // (one row per token) and a tied lm_head is read whole by the head.
        let mut read = std::collections::BTreeMap::new();
        for l in &program.launches {
            let rows = program
                .kernels
                .get(l.kernel)
                .and_then(|(name, _)| name.strip_prefix("bitnet_embedding_"))
                .and_then(|dims| dims.split('x').next())
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&v| v > 0);
            for b in &l.bufs {
                if b.region == bitnet_runtime::Region::Weights {
                    let bytes = rows.map_or(b.bytes, |v| b.bytes / v);
                    let e = read.entry((b.offset, b.bytes)).or_insert(0);
                    *e = bytes.max(*e);
                }
            }
        }
        read.values().sum()
    }
}

/// Compiles the model at `path` for this CPU, or loads it if it is a `.bnx` artifact.
pub fn compile(path: &Path, options: &Options) -> Result<Model, Error> {
    let stage = |name: &str| {
        if let Some(f) = &options.on_stage {
            f(name);
        }
    };
    if bitnet_runtime::artifact::is_artifact(path) {
        stage("load");
        let start = Instant::now();
        let loaded = bitnet_runtime::artifact::load_program(path)
            .map_err(bitnet_runtime::RuntimeError::from)?;
        let weight_bytes = loaded.program.weights.len() as u64;
        let tokenizer = artifact_tokenizer(path, &loaded)?;
        let exec = bitnet_runtime::Executor::new(loaded.program, options.cpu.threads)?;
        return Ok(Model {
            exec,
            tokenizer,
            source: path.to_path_buf(),
            origin: Origin::Artifact,
            import_time: start.elapsed(),
            compile_time: Duration::ZERO,
            weight_bytes,
        });
    }
    stage("import");
    let start = Instant::now();
    let tokenizer = crate::tokenizer::model_tokenizer(path)?;
    let mut model = bitnet_frontend::import_model(
        path,
        &ImportOptions {
            context: options.context,
        },
    )?;
    let import_time = start.elapsed();
    stage("compile");
    let start = Instant::now();
    let exec = crate::compile_cpu_with(&mut model, &options.cpu)?;
    Ok(Model {
        weight_bytes: exec.weight_bytes(),
        exec,
        tokenizer,
        source: path.to_path_buf(),
        origin: Origin::Jit,
        import_time,
        compile_time: start.elapsed(),
    })
}

/// The tokenizer an artifact carries, with its special ids.
fn artifact_tokenizer(
    path: &Path,
    loaded: &bitnet_runtime::artifact::Loaded,
) -> Result<Option<Tokenizer>, Error> {
    let Some(bytes) = &loaded.tokenizer else {
        return Ok(None);
    };
    let source = format!("{} (tokenizer section)", path.display());
    let mut t = Tokenizer::from_json_bytes(bytes, &source)?;
    if let Some(special) = &loaded.tokenizer_special {
        let bad = |message: String| bitnet_runtime::tokenizer::TokenizerError::Json {
            file: format!("{} (tokenizer_special section)", path.display()),
            message,
        };
        let v: serde_json::Value =
            serde_json::from_slice(special).map_err(|e| bad(e.to_string()))?;
        let id = |x: &serde_json::Value| {
            x.as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| bad(format!("{x} is not a token id")))
        };
        let bos = match &v["bos"] {
            serde_json::Value::Null => None,
            x => Some(id(x)?),
        };
        let eos = v["eos"]
            .as_array()
            .ok_or_else(|| bad("\"eos\" is not a list".into()))?
            .iter()
            .map(id)
            .collect::<Result<Vec<_>, _>>()?;
        t = t.with_special_ids(bos, eos)?;
    }
    Ok(Some(t))
}
