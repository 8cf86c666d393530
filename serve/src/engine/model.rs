//! What the engine asks of a model: one step over the slots that have work, each feeding its
//! tokens at its positions and getting the logits of its last token back.
//!
//! `StepModel` is the seam between scheduling and computing. `SlotBatch` implements it with one
//! executor holding a KV cache per slot, running all the feeds of a step as one batched step (one
//! launch of each token-wise kernel over the rows of every slot, each weight read once per step).
//! Whatever the implementation, a slot's logits must not depend on the other feeds of the step:
//! that is what keeps every request's tokens independent of the load.

use crate::error::ServeError;
use bitnet_runtime::{Executor, RuntimeError, SeqFeed};

/// The tokens one slot feeds in a step: `tokens` at positions `pos..pos + tokens.len()` of that
/// slot's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feed<'a> {
    /// The slot, below `StepModel::slots`.
    pub slot: usize,
    /// The token ids (at least one).
    pub tokens: &'a [i64],
    /// The position of the first one.
    pub pos: u64,
}

/// Where `StepModel::step` hands each feed's logits (or its error): `out(i, logits)` for `feeds[i]`.
pub type StepOut<'a> = dyn FnMut(usize, Result<&[f32], ServeError>) + 'a;

/// A model that runs a step for several slots, each with a cache of its own (see the module doc).
pub trait StepModel: Send {
    /// How many slots (independent caches) it has.
    fn slots(&self) -> usize;

    /// The context of each slot, in tokens.
    fn context(&self) -> u64;

    /// The vocabulary size (the logits' width).
    fn vocab(&self) -> u64;

    /// Runs every feed (at most one per slot) and calls `out(i, logits)` with the logits of the last
    /// token of `feeds[i]`, or the error that feed met, once for each feed.
    fn step(&mut self, feeds: &[Feed<'_>], out: &mut StepOut<'_>);
}

/// The slots as one executor with a KV cache per slot (`Executor::with_slots`): a step runs every
/// feed in one batched step (`Executor::forward_batch`), so each weight is read once for all the
/// slots' tokens, and each feed's logits are bit for bit those it gets alone. Feeds that together
/// hold more tokens than the context are split over several batched steps; a program that cannot
/// batch (an older artifact) runs its feeds one after another.
pub struct SlotBatch {
    executor: Executor,
}

impl SlotBatch {
    /// `slots` slots (at least one) over the program of `executor` (its code, weights and thread
    /// pool are shared; the slots get an arena and caches of their own).
    pub fn new(executor: &Executor, slots: usize) -> Result<SlotBatch, RuntimeError> {
        Ok(SlotBatch {
            executor: executor.with_slots(slots.max(1))?,
        })
    }
}

impl StepModel for SlotBatch {
    fn slots(&self) -> usize {
        self.executor.slots()
    }

    fn context(&self) -> u64 {
        self.executor.program().context
    }

    fn vocab(&self) -> u64 {
        self.executor.program().vocab
    }

    fn step(&mut self, feeds: &[Feed<'_>], out: &mut StepOut<'_>) {
        let context = usize::try_from(self.context()).unwrap_or(usize::MAX);
        let vocab = usize::try_from(self.vocab()).unwrap_or(usize::MAX);
        let most = if self.executor.batchable() {
            usize::MAX
        } else {
            1
        };
        let mut first = 0;
        while first < feeds.len() {
            // The longest run of feeds from `first` that fits one step (at least one feed: one
            // alone is checked against the context by the executor).
            let mut end = first;
            let mut tokens = 0usize;
            while let Some(f) = feeds.get(end)
                && end - first < most
                && (end == first || tokens + f.tokens.len() <= context)
            {
                tokens += f.tokens.len();
                end += 1;
            }
            let group = feeds.get(first..end).unwrap_or_default();
            let batch: Vec<SeqFeed<'_>> = group
                .iter()
                .map(|f| SeqFeed {
                    slot: f.slot,
                    tokens: f.tokens,
                    pos: f.pos,
                })
                .collect();
            match self.executor.forward_batch(&batch) {
                Ok(logits) => {
                    for (k, row) in logits.chunks(vocab.max(1)).enumerate() {
                        out(first + k, Ok(row));
                    }
                }
                // A batch fails as a whole only on a feed's own error (a token outside the
                // vocabulary, a position past the context): run them one by one, so that only
                // the feeds at fault fail.
                Err(_) if group.len() > 1 => {
                    for (k, f) in batch.iter().enumerate() {
                        out(
                            first + k,
                            self.executor
                                .forward_batch(std::slice::from_ref(f))
                                .map_err(ServeError::from),
                        );
                    }
                }
                Err(e) => out(first, Err(ServeError::from(e))),
            }
            first = end;
        }
    }
}
