//! The error type of `bitnet-runtime`.

/// Everything that can go wrong running a program.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A launch refers to bytes outside its region: a corrupt or mismatched program.
    #[error(
        "launch {launch} ({label}): buffer {index} at offset {offset} + {bytes} bytes is outside the {region:?} region of {size} bytes"
    )]
    BadBuffer {
        /// The launch index.
        launch: usize,
        /// Its label.
        label: String,
        /// Which buffer.
        index: usize,
        /// Its region.
        region: crate::program::Region,
        /// Its offset.
        offset: u64,
        /// Its size.
        bytes: u64,
        /// The region's size.
        size: u64,
    },
    /// A launch names a kernel the program does not have.
    #[error("launch {launch} ({label}) uses kernel {kernel}, but the program has {count}")]
    BadKernel {
        /// The launch index.
        launch: usize,
        /// Its label.
        label: String,
        /// The kernel index.
        kernel: usize,
        /// How many kernels there are.
        count: usize,
    },
    /// A launch's `last_token` strides do not fit its buffers: a corrupt or mismatched program.
    #[error("launch {launch} ({label}): bad last-token strides: {detail}")]
    BadStrides {
        /// The launch index.
        launch: usize,
        /// Its label.
        label: String,
        /// What is wrong.
        detail: String,
    },
    /// The prompt does not fit in the context.
    #[error(
        "context overflow: position {pos} + {tokens} token(s) exceeds the context length {context}"
    )]
    ContextOverflow {
        /// The position of the first token.
        pos: u64,
        /// The number of tokens.
        tokens: usize,
        /// The context length.
        context: u64,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} at index {index} is outside the vocabulary (0..{vocab})")]
    BadToken {
        /// The id.
        id: i64,
        /// Its index in the prompt.
        index: usize,
        /// The vocabulary size.
        vocab: u64,
    },
    /// An empty prompt.
    #[error("no tokens to run")]
    Empty,
    /// Sampling parameters out of range, or logits nothing can be chosen from.
    #[error("sampling: {0}")]
    Sampling(String),
    /// The tokenizer failed (or the model has none and text was asked for).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An artifact that cannot be loaded (corrupt, truncated, for another machine or format).
    #[error(transparent)]
    Artifact(#[from] crate::artifact::ArtifactError),
}
