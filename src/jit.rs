//! The in-process API: compile a model (or load an artifact) into a [`Compiled`] and talk to it
//! through a [`Session`].
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
//! tokenizer comes along, built when text is first used: the folder's `tokenizer.json`, the GGUF
//! vocabulary, or the artifact's; and so does the chat template (`Compiled::chat_template`). Sessions
//! on token ids alone (`Compiled::token_session`) never build the tokenizer.

use crate::tokenizer::{LazyTokenizer, TokenizerSource};
use crate::{CpuOptions, Error, OpenOptions};
use bitnet_runtime::chat::{ChatError, ChatTemplate};
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
    /// A post-training quantization of a dense model's projections (`--quantize ternary`: lossy),
    /// applied at import. Ignored for artifacts.
    pub quantize: Option<bitnet_frontend::model::PostQuantize>,
    /// Called with the name of each stage as it starts (`import`, `compile`, `load`), for progress
    /// displays.
    pub on_stage: Option<StageCallback>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("cpu", &self.cpu)
            .field("context", &self.context)
            .field("quantize", &self.quantize)
            .field("on_stage", &self.on_stage.as_ref().map(|_| "…"))
            .finish()
    }
}

/// How a model was made ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Compiled in this process.
    Jit,
    /// Loaded from a `.bnx` artifact.
    Artifact,
}

/// A model compiled for this CPU (or loaded from an artifact), ready to start sessions.
pub struct Compiled {
    exec: bitnet_runtime::Executor,
    tokenizer: LazyTokenizer,
    chat_template: Result<Option<ChatTemplate>, ChatError>,
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

impl Compiled {
    /// A session on this model that owns the KV cache and the tokenizer, which is built now unless
    /// it was: a tokenizer that cannot be read is this call's error. This CPU model has one KV
    /// cache, so it makes one session.
    pub fn session(self) -> Result<Session, Error> {
        let tokenizer = self.tokenizer.into_tokenizer()?;
        Ok(Session::new(self.exec, tokenizer))
    }

    /// A session on token ids alone: no tokenizer is built, so no text comes out and the model's
    /// end-of-sequence ids are unknown (stop tokens must be given).
    pub fn token_session(self) -> Session {
        Session::new(self.exec, None)
    }

    /// The executor and the tokenizer (built now unless it was: a tokenizer that cannot be read is
    /// this call's error), for callers that drive the executor themselves, such as a server making
    /// sibling executors for its slots.
    pub fn into_parts(self) -> Result<(bitnet_runtime::Executor, Option<Tokenizer>), Error> {
        let tokenizer = self.tokenizer.into_tokenizer()?;
        Ok((self.exec, tokenizer))
    }

    /// The executor alone, for callers that drive it on token ids themselves (`bitnetc profile`);
    /// no tokenizer is built.
    pub fn into_executor(self) -> bitnet_runtime::Executor {
        self.exec
    }

    /// The tokenizer, built on first use; `None` if the model carries none.
    pub fn tokenizer(&self) -> Result<Option<&Tokenizer>, Error> {
        self.tokenizer.get()
    }

    /// The model's chat template (an artifact's is the one its model had); `None` when it has
    /// none. One that could not be read is reported here.
    pub fn chat_template(&self) -> Result<Option<&ChatTemplate>, Error> {
        match &self.chat_template {
            Ok(t) => Ok(t.as_ref()),
            Err(e) => Err(e.clone().into()),
        }
    }

    /// The compiled program (kernels, launches, sizes).
    pub fn program(&self) -> &bitnet_runtime::Program {
        self.exec.program()
    }

    /// The context length in tokens.
    pub fn context(&self) -> u64 {
        self.exec.program().context
    }

    /// The vocabulary size.
    pub fn vocab(&self) -> u64 {
        self.exec.program().vocab
    }

    /// Whether the model runs ternary projections (false for a dense model).
    pub fn runs_ternary_projections(&self) -> bool {
        self.exec
            .program()
            .kernels
            .iter()
            .any(|(name, _)| name.starts_with("bitnet_ternary_matmul"))
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

/// The tokenizer (built on first use) and chat template of the artifact at `path`, from its
/// `tokenizer`, `tokenizer_special` and `chat_template` sections (CPU and CUDA artifacts alike).
pub(crate) fn artifact_text(
    path: &Path,
    tokenizer: Option<Vec<u8>>,
    special: Option<Vec<u8>>,
    chat_template: Option<Vec<u8>>,
) -> (LazyTokenizer, Result<Option<ChatTemplate>, ChatError>) {
    let source = match tokenizer {
        Some(json) => TokenizerSource::Artifact {
            path: path.to_path_buf(),
            json,
            special,
        },
        None => TokenizerSource::None,
    };
    let template = chat_template
        .map(|bytes| ChatTemplate::from_section(&bytes, &path.display().to_string()))
        .transpose();
    (LazyTokenizer::new(source), template)
}

/// Compiles the model at `path` for this CPU, or loads it if it is a `.bnx` artifact.
pub fn compile(path: &Path, options: &Options) -> Result<Compiled, Error> {
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
        let (tokenizer, chat_template) = artifact_text(
            path,
            loaded.tokenizer,
            loaded.tokenizer_special,
            loaded.chat_template,
        );
        let exec = bitnet_runtime::Executor::new(loaded.program, options.cpu.threads)?;
        return Ok(Compiled {
            exec,
            tokenizer,
            chat_template,
            source: path.to_path_buf(),
            origin: Origin::Artifact,
            import_time: start.elapsed(),
            compile_time: Duration::ZERO,
            weight_bytes,
        });
    }
    stage("import");
    let start = Instant::now();
    let mut model = OpenOptions {
        context: options.context,
        quantize: options.quantize,
    }
    .open(path)?;
    let import_time = start.elapsed();
    stage("compile");
    let start = Instant::now();
    let exec = crate::compile_cpu(&mut model, &options.cpu)?;
    let (chat_template, tokenizer) = model.into_text();
    Ok(Compiled {
        weight_bytes: exec.weight_bytes(),
        exec,
        tokenizer,
        chat_template,
        source: path.to_path_buf(),
        origin: Origin::Jit,
        import_time,
        compile_time: start.elapsed(),
    })
}
