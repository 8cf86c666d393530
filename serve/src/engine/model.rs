//! What the engine asks of a model: one step over the slots that have work, each feeding its
//! tokens at its positions and getting the logits of its last token back.
//!
//! `StepModel` is the seam between scheduling and computing. `SlotExecutors` implements it with one
//! executor per slot (siblings over one compiled program), running the feeds one after another; a
//! batched implementation (one launch plan over the rows of every slot, each weight loaded once per
//! step) replaces it without the scheduler changing. Whatever the implementation, a slot's logits
//! must not depend on the other feeds of the step: that is what keeps every request's tokens
//! independent of the load.

use crate::error::ServeError;
use bitnet_runtime::{Executor, RuntimeError};

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

/// One executor per slot, siblings over one program (`Executor::sibling`: the code and weights are
/// shared, each slot has its own arena and KV cache). A step runs the feeds one after another.
pub struct SlotExecutors {
    executors: Vec<Executor>,
}

impl SlotExecutors {
    /// `slots` slots (at least one) over the program of `executor`, which becomes the first.
    pub fn new(executor: Executor, slots: usize) -> Result<SlotExecutors, RuntimeError> {
        let mut executors = Vec::with_capacity(slots.max(1));
        for _ in 1..slots.max(1) {
            executors.push(executor.sibling()?);
        }
        executors.insert(0, executor);
        Ok(SlotExecutors { executors })
    }

    /// The first slot's executor (for the program's sizes).
    fn first(&self) -> Option<&Executor> {
        self.executors.first()
    }
}

impl StepModel for SlotExecutors {
    fn slots(&self) -> usize {
        self.executors.len()
    }

    fn context(&self) -> u64 {
        self.first().map_or(0, |e| e.program().context)
    }

    fn vocab(&self) -> u64 {
        self.first().map_or(0, |e| e.program().vocab)
    }

    fn step(&mut self, feeds: &[Feed<'_>], out: &mut StepOut<'_>) {
        for (i, feed) in feeds.iter().enumerate() {
            match self.executors.get_mut(feed.slot) {
                Some(exec) => out(
                    i,
                    exec.forward_last(feed.tokens, feed.pos)
                        .map_err(ServeError::from),
                ),
                None => out(
                    i,
                    Err(ServeError::NoSlot {
                        slot: feed.slot,
                        slots: self.executors.len(),
                    }),
                ),
            }
        }
    }
}
