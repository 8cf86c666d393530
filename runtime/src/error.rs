//! The error types of `bitnet-runtime`: `RuntimeError` (running a program) and `ArtifactError`
//! (an artifact that cannot be loaded, with its `ArtifactProblem`), which `RuntimeError` wraps.

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
    /// An executor asked for no KV slot, or for more than memory can address.
    #[error(
        "{slots} KV slots: an executor needs at least one, and their caches must fit in memory"
    )]
    BadSlots {
        /// The slots asked for.
        slots: usize,
    },
    /// The system would not map an executor's arena or KV cache.
    #[error("cannot reserve {bytes} bytes for the executor's {what}: {reason}")]
    OutOfMemory {
        /// The arena or the KV cache.
        what: &'static str,
        /// The bytes asked for.
        bytes: u64,
        /// Why not.
        reason: String,
    },
    /// A feed names a KV slot the executor does not have.
    #[error("KV slot {slot} does not exist (the executor has {slots})")]
    BadSlot {
        /// The slot.
        slot: usize,
        /// How many there are.
        slots: usize,
    },
    /// Two feeds of one step name the same KV slot.
    #[error("two feeds of one step use KV slot {slot}")]
    DuplicateSlot {
        /// The slot.
        slot: usize,
    },
    /// Several feeds for a program that does not say its launches may share them.
    #[error(
        "{feeds} sequences in one step, but this program runs one at a time (an artifact from before batched steps: recompile it)"
    )]
    NotBatchable {
        /// The feeds of the step.
        feeds: usize,
    },
    /// The feeds of one step hold more tokens than the arena has rows.
    #[error("a batched step of {tokens} tokens exceeds the context length {context}")]
    BatchOverflow {
        /// Tokens in all feeds.
        tokens: usize,
        /// The context length.
        context: u64,
    },
    /// An empty prompt.
    #[error("no tokens to run")]
    Empty,
    /// A GPU could not do what was asked: no driver or device, an artifact for another device, a
    /// failed allocation, copy or launch (`crate::gpu`).
    #[error("CUDA: {0}")]
    Gpu(String),
    /// Sampling parameters out of range, or logits nothing can be chosen from.
    #[error("sampling: {0}")]
    Sampling(String),
    /// The tokenizer failed (or the model has none and text was asked for).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An artifact that cannot be loaded (corrupt, truncated, for another machine or format).
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// What is wrong with an artifact.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactProblem {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not an artifact at all.
    #[error("not a bitnetc artifact (the file does not start with \"BNX1\")")]
    Magic,
    /// Written by a compiler with another format.
    #[error(
        "artifact format version {found}, but this runtime reads version {reads}: recompile the model with this bitnetc (`bitnetc compile`)"
    )]
    FormatVersion {
        /// The version in the file.
        found: u32,
        /// The version this runtime reads (`artifact::FORMAT_VERSION`).
        reads: u32,
    },
    /// The file ends before a part the header or manifest says is there.
    #[error(
        "truncated: the {part} needs bytes {start}..{end} but the file has {len} bytes (an incomplete copy?)"
    )]
    Truncated {
        /// Which part.
        part: String,
        /// Where it starts.
        start: u64,
        /// Where it ends.
        end: u64,
        /// The file's length.
        len: u64,
    },
    /// A part's bytes do not match their recorded hash.
    #[error(
        "the {part} is corrupt or was edited: its sha256 is {actual}, the artifact records {expected}"
    )]
    Checksum {
        /// Which part.
        part: String,
        /// The recorded hash.
        expected: String,
        /// The hash of the bytes.
        actual: String,
    },
    /// The manifest does not describe a runnable program.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// Compiled for another machine.
    #[error("{0}")]
    Target(String),
    /// The code section could not be loaded.
    #[error("loading the code section: {0}")]
    Library(String),
}

/// An artifact that cannot be loaded: which file and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct ArtifactError {
    /// The artifact.
    pub path: std::path::PathBuf,
    /// What is wrong.
    pub problem: ArtifactProblem,
}
