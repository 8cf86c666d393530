//! `bitnetc::Error`: why reading, compiling, loading or running a model failed. Each stage's own
//! error comes through as a source (`#[from]`), so its message is the stage's own.

use std::path::PathBuf;

/// Why a model or a `.bir` file could not be read, compiled, loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// IR text does not parse or verify; `rendered` holds every diagnostic as
    /// `file:line:col: error: message` with the offending line.
    #[error("{rendered}")]
    InvalidIr {
        /// The number of errors.
        count: usize,
        /// The diagnostics, ready to print.
        rendered: String,
    },
    /// The model could not be imported.
    #[error(transparent)]
    Import(#[from] bitnet_frontend::FrontendError),
    /// A pass failed, or a pipeline names an unknown pass.
    #[error(transparent)]
    Pass(#[from] bitnet_passes::PassError),
    /// The reference interpreter failed, or IR an artifact carries is invalid.
    #[error(transparent)]
    Ir(#[from] bitnet_ir::IrError),
    /// The model's function does not look like a language model step.
    #[error("{0}")]
    Signature(String),
    /// Code generation failed, the model uses an op without a kernel for the target, or this
    /// bitnetc was built without the backend.
    #[error(transparent)]
    Backend(#[from] bitnet_backends::BackendError),
    /// Ahead-of-time compilation or linking failed.
    #[error(transparent)]
    Aot(#[from] bitnet_backends::cpu::aot::AotError),
    /// The program could not be prepared, loaded or run, or an artifact is invalid.
    #[error(transparent)]
    Runtime(#[from] bitnet_runtime::RuntimeError),
    /// The model's tokenizer could not be read.
    #[error(transparent)]
    Tokenizer(#[from] bitnet_runtime::tokenizer::TokenizerError),
    /// The model's tokenizer could not be read or written into an artifact: the tokenizer's
    /// message alone, as `bitnetc compile` reports it.
    #[error("{0}")]
    ArtifactTokenizer(String),
    /// The model's chat template could not be read, or does not render.
    #[error(transparent)]
    Chat(#[from] bitnet_runtime::chat::ChatError),
    /// A CUDA artifact could not be assembled.
    #[error("writing the CUDA artifact: {0}")]
    CudaArtifact(String),
    /// `bitnetc validate` could not measure what it was asked to: a text too short, a gate file
    /// that does not parse, a reference that does not fit the model.
    #[error("{0}")]
    Validate(String),
    /// `profile` could not measure or compare what it was asked to: a baseline that is not a
    /// saved profile or profiles another program, arguments out of range.
    #[error("{0}")]
    Profile(String),
    /// `--head-kl-bound` could not measure the heads: a bound out of range, an artifact, a model
    /// without a tokenizer.
    #[error("{0}")]
    HeadChoice(String),
}
