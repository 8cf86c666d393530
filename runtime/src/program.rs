//! The program a backend produces and the runtime runs: kernels, a launch plan and sizes.
//!
//! A launch names a kernel, the buffers it reads and writes (each an offset into one of three regions:
//! the arena of activations, the weights, the KV cache), how many rows it covers, and its scalars. The
//! runtime resolves every buffer to an address once at load time, so running a step allocates nothing.

/// The C ABI of every generated kernel: buffers in the kernel's documented order, scalars
/// (`[T, pos]`), and the half-open row range this call computes.
pub type KernelFn =
    unsafe extern "C" fn(bufs: *const *mut u8, scalars: *const i64, row_begin: i64, row_end: i64);

/// Where a buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The activation arena.
    Arena,
    /// The weights (read only).
    Weights,
    /// The KV cache.
    Kv,
}

/// A buffer: a region and a byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufRef {
    /// The region.
    pub region: Region,
    /// Byte offset in the region.
    pub offset: u64,
    /// Size in bytes at the largest T (for bounds checks at load time).
    pub bytes: u64,
}

/// How many rows a launch covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// A fixed count.
    Static(u64),
    /// `T × per_token`.
    PerToken(u64),
}

impl Rows {
    /// The count for `t` tokens.
    pub fn count(self, t: u64) -> u64 {
        match self {
            Rows::Static(n) => n,
            Rows::PerToken(m) => t.saturating_mul(m),
        }
    }
}

/// One kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// Index into `Program::kernels`.
    pub kernel: usize,
    /// Buffers, in the kernel's order.
    pub bufs: Vec<BufRef>,
    /// The rows it covers.
    pub rows: Rows,
    /// What it computes, for profiles and errors (`layer 3 q_proj`).
    pub label: String,
    /// Set on the launches that only the logits need and that compute each token's rows from that
    /// token's rows alone (the final norm and the lm_head): per buffer, the bytes between two tokens'
    /// rows (0 for a buffer every token shares, such as weights). `Executor::forward_last` runs these
    /// launches for the last token only: T = 1, pos advanced to that token, and every buffer advanced
    /// by (T − 1) × its stride. `None`: the launch always runs for every token.
    pub last_token: Option<Vec<u64>>,
    /// Set on the launches whose rows depend on the sequence and not only on each token's own
    /// rows: its position (rope) or its KV cache (the cache write, attention). Per buffer, the
    /// bytes between two tokens' rows (0 for weights and for the KV cache, which the executor
    /// points at the sequence's own cache). A batched step (`Executor::forward_batch`) runs
    /// these launches once per sequence, over that sequence's rows, with its T, pos and cache.
    /// `None`: the launch computes each token's rows from that token's rows alone.
    pub per_sequence: Option<Vec<u64>>,
    /// Rows that one thread computes together (0 counts as 1, as in a manifest that says 0): the
    /// pool splits the launch into runs of whole groups. Attention's are the query heads of one KV head, so each KV head's cache is
    /// read once per token, by one thread, for all of them.
    pub row_group: u64,
}

impl Launch {
    /// Checks that every buffer of this launch (number `index` of its plan) lies within its
    /// region; `sizes` are the bytes of the arena, the weights and the KV cache.
    pub fn check_buffers(&self, index: usize, sizes: [u64; 3]) -> Result<(), crate::RuntimeError> {
        for (bi, b) in self.bufs.iter().enumerate() {
            let size = match b.region {
                Region::Arena => sizes[0],
                Region::Weights => sizes[1],
                Region::Kv => sizes[2],
            };
            if b.offset.checked_add(b.bytes).is_none_or(|end| end > size) {
                return Err(crate::RuntimeError::BadBuffer {
                    launch: index,
                    label: self.label.clone(),
                    index: bi,
                    region: b.region,
                    offset: b.offset,
                    bytes: b.bytes,
                    size,
                });
            }
        }
        Ok(())
    }

    /// Checks that this launch's strides (`what`: last-token or per-sequence) name every buffer
    /// and that `context` rows of each stride fit in its buffer (so any token's row does, for
    /// T ≤ context).
    pub fn check_strides(
        &self,
        index: usize,
        what: &str,
        strides: &[u64],
        context: u64,
    ) -> Result<(), crate::RuntimeError> {
        let bad = |detail: String| crate::RuntimeError::BadStrides {
            launch: index,
            label: self.label.clone(),
            detail: format!("{what} strides: {detail}"),
        };
        if strides.len() != self.bufs.len() {
            return Err(bad(format!(
                "{} strides for {} buffers",
                strides.len(),
                self.bufs.len()
            )));
        }
        for (bi, (b, &stride)) in self.bufs.iter().zip(strides).enumerate() {
            if stride.checked_mul(context).is_none_or(|end| end > b.bytes) {
                return Err(bad(format!(
                    "buffer {bi}: {context} rows of {stride} bytes exceed its {} bytes",
                    b.bytes
                )));
            }
        }
        Ok(())
    }
}

/// A compiled model step: `tokens[T] → logits[T, vocab]`, updating the KV cache at `pos`.
pub struct Program {
    /// The kernels, by index: their symbol names and entry points.
    pub kernels: Vec<(String, KernelFn)>,
    /// The launches, in order.
    pub launches: Vec<Launch>,
    /// Arena size in bytes.
    pub arena_bytes: u64,
    /// KV-cache size in bytes.
    pub kv_bytes: u64,
    /// The weights, laid out as the launches expect (64-byte aligned tensors); `Executor::new`
    /// adopts this buffer without copying it.
    pub weights: crate::AlignedBytes,
    /// The largest T (the context length).
    pub context: u64,
    /// Vocabulary size (token ids must be below it; the logits' width).
    pub vocab: u64,
    /// Where the token ids go (i64 `[T]`).
    pub tokens: BufRef,
    /// Where the logits come from (f32 [T, vocab]).
    pub logits: BufRef,
    /// Whether every launch without `Launch::per_sequence` computes each token's rows from that
    /// token's rows alone, so that the tokens of several sequences may share its launch
    /// (`Executor::forward_batch`). False for programs from artifacts that do not say: their
    /// sequences then run one after another.
    pub batchable: bool,
    /// Keeps generated code alive (a JIT module or a loaded library).
    pub code: Box<dyn std::any::Any + Send + Sync>,
}
