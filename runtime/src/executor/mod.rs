//! The executor: owns the arena and the KV caches (allocated once) and shares the program's code
//! and weights (adopted, not copied), resolves every launch's buffers to addresses at load time,
//! and runs the launch plan for one step, splitting each launch's rows across a persistent thread
//! pool (`pool`). A step allocates nothing.
//!
//! `Executor::sibling` makes another executor over the same code, weights and thread pool with an
//! arena and KV cache of its own; siblings' steps take turns on the shared pool.
//! `Executor::with_slots` makes one with several KV caches (slots), each holding a sequence of its
//! own, and `forward_batch` runs one step over several sequences at once: their tokens are the
//! rows of one launch of every kernel that computes each token's rows from that token's alone
//! (each weight is read once for all of them), while the launches that depend on the sequence
//! (`Launch::per_sequence`: rope, the cache write, attention) run once per sequence over its own
//! rows, position and cache (`step`). A sequence's logits are those it gets alone, bit for bit.
//!
//! `forward_last` runs the launches marked `Launch::last_token` (the final norm and the lm_head) for
//! the last token only, through a second set of addresses resolved per step into storage allocated
//! at load time. An opt-in profile (`start_profile`, `profile`) sums the wall time of every launch,
//! as the calling thread sees it (its own rows plus the wait for the workers), keeps a bounded
//! record of launch and step events and each pool thread's busy time; off, it costs one branch
//! per launch.

mod aligned_buf;
mod pool;
mod profile;
mod resolve;
mod step;

use crate::AlignedBytes;
use crate::error::RuntimeError;
use crate::program::{BufRef, Program, Region};
use aligned_buf::Aligned;
use pool::ThreadPool;
use profile::Profiler;
pub use profile::{LaunchEvent, PlantedDelay, ProfileOptions, StepEvent, StepProfile};
use resolve::{Tail, resolve};
use std::sync::{Arc, Mutex};

/// What an executor shares with its siblings: the program (code, launches, sizes), its weights and
/// the thread pool, all used read only except the pool, which one step at a time holds.
struct Shared {
    program: Program,
    /// Kept alive: launches point into it (read only).
    weights: AlignedBytes,
    pool: Mutex<ThreadPool>,
    /// The tail of the plan, if its `last_token` launches end it (`resolve::Tail`).
    tail: Option<Tail>,
    /// Per launch, whether a step runs it once per sequence (`step::runs_per_sequence`).
    per_sequence: Vec<bool>,
}

/// One sequence's part of a batched step (`Executor::forward_batch`): `tokens` at positions
/// `pos..pos + tokens.len()` of the sequence whose cache is KV slot `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqFeed<'a> {
    /// The KV slot, below `Executor::slots`.
    pub slot: usize,
    /// The token ids (at least one).
    pub tokens: &'a [i64],
    /// The position of the first one.
    pub pos: u64,
}

/// Runs a `Program`: one call of `forward` is one prefill or decode step.
pub struct Executor {
    shared: Arc<Shared>,
    arena: Aligned,
    /// The KV caches, `slots` of `kv_stride` bytes each.
    kv: Aligned,
    slots: usize,
    kv_stride: usize,
    /// Per launch, its buffer addresses (resolved once; KV buffers in the first slot).
    addresses: Vec<Vec<*mut u8>>,
    /// Per launch with `last_token` strides, the addresses of the last token's rows (rewritten by
    /// each `forward_last`; empty for the other launches).
    last_addresses: Vec<Vec<*mut u8>>,
    /// The addresses of one per-sequence launch for one sequence (rewritten for each).
    seq_addresses: Vec<*mut u8>,
    /// Where each feed's rows start in the step, and its last row (rewritten by each step).
    rows: Vec<(usize, usize)>,
    scalars: [i64; 2],
    /// `[T, pos]` of the sequence a per-sequence launch runs for, or `[1, pos of the last token]`
    /// for the launches `forward_last` runs for the last token only.
    seq_scalars: [i64; 2],
    /// The launch profile, when on.
    profile: Option<Profiler>,
}

// SAFETY: the raw addresses point into the heap allocations of `arena` and `kv`, which this
// executor owns and which do not move when it does, and into the shared weights, kept alive by
// `shared` and only read. Nothing is tied to the thread that made the executor; the pool is behind
// a mutex.
unsafe impl Send for Executor {}

impl Executor {
    /// Prepares `program` to run on `threads` threads (at least 1): allocates the arena and the KV
    /// cache, adopts the weights (already 64-byte aligned; not copied), and checks every buffer of
    /// every launch.
    pub fn new(mut program: Program, threads: usize) -> Result<Executor, RuntimeError> {
        let weights = std::mem::take(&mut program.weights);
        let tail = Tail::of(&program);
        let per_sequence = program
            .launches
            .iter()
            .map(step::runs_per_sequence)
            .collect();
        let shared = Arc::new(Shared {
            program,
            weights,
            pool: Mutex::new(ThreadPool::new(threads)),
            tail,
            per_sequence,
        });
        Executor::over(shared, 1)
    }

    /// An executor over the program of `shared` with a new (zeroed) arena and `slots` KV caches.
    fn over(shared: Arc<Shared>, slots: usize) -> Result<Executor, RuntimeError> {
        let program = &shared.program;
        let kv_stride = usize::try_from(program.kv_bytes.div_ceil(64).saturating_mul(64))
            .map_err(|_| RuntimeError::BadSlots { slots })?;
        let kv_total = kv_stride
            .checked_mul(slots)
            .filter(|_| slots > 0)
            .ok_or(RuntimeError::BadSlots { slots })?;
        let mut arena = Aligned::zeroed(program.arena_bytes, "arena")?;
        let mut kv = Aligned::zeroed(kv_total as u64, "KV cache")?;
        let addresses = resolve(program, &shared.weights, &mut arena, &mut kv)?;
        let most_bufs = program.launches.iter().map(|l| l.bufs.len()).max();
        Ok(Executor {
            arena,
            kv,
            slots,
            kv_stride,
            addresses: addresses.launches,
            last_addresses: addresses.last,
            seq_addresses: Vec::with_capacity(most_bufs.unwrap_or(0)),
            rows: Vec::with_capacity(slots),
            scalars: [0; 2],
            seq_scalars: [0; 2],
            profile: None,
            shared,
        })
    }

    /// Another executor over the same program: the same code, weights and thread pool (shared, not
    /// copied), with an arena and KV cache of its own, so it holds a conversation of its own. A
    /// step of one sibling computes exactly what it would alone: siblings share only what they
    /// read. Their steps take turns on the pool (a step waits while a sibling's runs); it
    /// allocates the arena and the cache (zeroed pages, taken from the system as they are used).
    pub fn sibling(&self) -> Result<Executor, RuntimeError> {
        Executor::over(Arc::clone(&self.shared), 1)
    }

    /// A sibling (see `sibling`) with `slots` KV caches (at least one), for `forward_batch`: one
    /// arena for the rows of a batched step and one cache per sequence.
    pub fn with_slots(&self, slots: usize) -> Result<Executor, RuntimeError> {
        Executor::over(Arc::clone(&self.shared), slots)
    }

    /// How many KV caches (sequences) this executor holds.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Whether several sequences may share a step (`Program::batchable`); when not,
    /// `forward_batch` takes one sequence at a time.
    pub fn batchable(&self) -> bool {
        self.shared.program.batchable
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.shared.program
    }

    /// Bytes of weights the program reads (rounded up to whole 64-byte lines).
    pub fn weight_bytes(&self) -> u64 {
        (self.shared.weights.len() as u64).div_ceil(64) * 64
    }

    /// Whether the weights are a file mapping (an artifact's) rather than memory of their own.
    pub fn weights_mapped(&self) -> bool {
        self.shared.weights.is_mapped()
    }

    /// Bytes of the activation arena (the planned arena and the lowering's scratch after it).
    pub fn arena_bytes(&self) -> u64 {
        self.arena.bytes().len() as u64
    }

    /// Bytes of one KV slot (a sequence's cache at the full context, rounded up to 64).
    pub fn kv_slot_bytes(&self) -> u64 {
        self.kv_stride as u64
    }

    /// Clears every KV cache (a new conversation).
    pub fn reset(&mut self) {
        self.kv.bytes_mut().fill(0);
    }

    /// Runs `tokens` at positions `pos..pos+T` (in the first KV slot) and returns the logits,
    /// `T × vocab` values.
    pub fn forward(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        let feed = SeqFeed {
            slot: 0,
            tokens,
            pos,
        };
        let first = self.step(&[feed], step::Logits::Every)?;
        let vocab = self.shared.program.vocab as usize;
        Ok(self.logits(first * vocab, tokens.len() * vocab))
    }

    /// Runs `tokens` at positions `pos..pos+T` like `forward` and returns the logits of the last
    /// token only (`vocab` values): what generation needs after a prefill or a decode step. The
    /// launches marked `last_token` (the final norm and the lm_head) run for that token alone; the
    /// values are those of the last row of `forward`, bit for bit.
    pub fn forward_last(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        let feed = SeqFeed {
            slot: 0,
            tokens,
            pos,
        };
        let first = self.step(&[feed], step::Logits::Last)?;
        let vocab = self.shared.program.vocab as usize;
        Ok(self.logits(first * vocab, vocab))
    }

    /// Runs one step over several sequences, each in its own KV slot (distinct slots, at most
    /// `context` tokens in all), and returns the logits of each feed's last token, `feeds.len() ×
    /// vocab` values in feed order. Each feed's logits are bit for bit those `forward_last` gives
    /// that sequence alone with the same tokens at the same positions. A program that is not
    /// `batchable` takes one feed per call.
    pub fn forward_batch(&mut self, feeds: &[SeqFeed<'_>]) -> Result<&[f32], RuntimeError> {
        let first = self.step(feeds, step::Logits::Last)?;
        let vocab = self.shared.program.vocab as usize;
        Ok(self.logits(first * vocab, feeds.len() * vocab))
    }

    /// `n` logits starting at element `first` of the logits buffer (within it: the step checked
    /// the token count against the context).
    fn logits(&self, first: usize, n: usize) -> &[f32] {
        let start = self.shared.program.logits.offset as usize + first * 4;
        let bytes = &self.arena.bytes()[start..start + n * 4];
        // SAFETY: the logits buffer is 4-byte aligned (arena offsets are 64-byte aligned) and holds
        // f32 values written by the last launches.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), n) }
    }
}

/// `BufRef` for an arena offset (a convenience for backends and tests).
pub fn arena(offset: u64, bytes: u64) -> BufRef {
    BufRef {
        region: Region::Arena,
        offset,
        bytes,
    }
}
