//! The engine: one thread per model that owns its slots and drives them.
//!
//! Requests wait in a bounded queue (`Engine::submit` refuses one when it is full: the client gets
//! 429). Each iteration of the loop:
//! 1. frees the slots whose client went away (the response was dropped: a closed stream, a
//!    cancelled request) and takes queued requests into free slots;
//! 2. runs one model step over every busy slot: a slot still reading its prompt feeds the next
//!    chunk of at most `prefill_chunk` tokens, a generating slot feeds its last token, so a long
//!    prompt never holds the others up for more than a chunk;
//! 3. hands each slot the logits of its last token: a slot done with its prompt chooses its next
//!    token (`bitnet_runtime::generator`) and sends it to its client.
//!
//! Batch invariance: a slot's feeds (chunk boundaries included) depend only on its own request,
//! and `StepModel::step` keeps each slot's logits independent of the other feeds, so a request gets
//! the same tokens whatever else runs and whatever the number of slots.

mod model;
mod slot;
#[cfg(test)]
mod tests;

pub use model::{Feed, SlotBatch, StepModel, StepOut};

use crate::metrics::ModelMetrics;
use bitnet_runtime::session::{GenerateParams, StopReason};
use bitnet_runtime::tokenizer::Tokenizer;
use slot::{After, Slot};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// A request for the engine: a prompt, how to generate, and where the events go.
pub struct Job {
    /// The prompt's token ids (checked against the vocabulary and the context).
    pub prompt: Vec<u32>,
    /// How to generate (checked).
    pub params: GenerateParams,
    /// Where the tokens go; the engine stops generating once the receiver is dropped.
    pub events: UnboundedSender<Event>,
    /// When the request arrived (time to first token counts from here).
    pub enqueued: Instant,
}

/// What the engine tells a request.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A token was chosen; `text` is what it completed that is safe to show (possibly empty).
    Token {
        /// The token id.
        id: u32,
        /// Its text.
        text: String,
    },
    /// Generation is over.
    Done {
        /// Why.
        stop: StopReason,
        /// Text held back until the end.
        tail: String,
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens generated (a stop token that ended generation included).
        completion_tokens: usize,
    },
    /// Generation failed (a runtime error).
    Failed(String),
    /// The server is stopping: the request was cancelled.
    Stopping,
}

/// Why `Engine::submit` refused a job.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: try again later.
    Full,
    /// The engine has stopped.
    Stopped,
}

/// How the engine schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Requests that may wait for a slot (at least 1).
    pub queue: usize,
    /// The most prompt tokens a slot feeds in one step (at least 1).
    pub prefill_chunk: usize,
}

/// A running engine (see the module doc). Dropping it lets the thread finish the requests it has
/// and end.
pub struct Engine {
    queue: SyncSender<Job>,
    metrics: Arc<ModelMetrics>,
    cancel: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Engine {
    /// Starts the engine thread for `model`.
    pub fn start(
        name: &str,
        model: Box<dyn StepModel>,
        tokenizer: Arc<Tokenizer>,
        options: EngineOptions,
        metrics: Arc<ModelMetrics>,
    ) -> Result<Engine, std::io::Error> {
        let (queue, jobs) = std::sync::mpsc::sync_channel(options.queue.max(1));
        let cancel = Arc::new(AtomicBool::new(false));
        metrics.set_slots(model.slots(), model.context());
        let thread = {
            let metrics = Arc::clone(&metrics);
            let cancel = Arc::clone(&cancel);
            std::thread::Builder::new()
                .name(format!("engine {name}"))
                .spawn(move || {
                    let run = std::panic::AssertUnwindSafe(|| {
                        run(model, &tokenizer, &jobs, &metrics, &cancel, options);
                    });
                    // A panic is a bug: its requests see their event channel close without an
                    // end and answer 500; later submissions find the queue closed.
                    if std::panic::catch_unwind(run).is_err() {
                        metrics.set_failed();
                    }
                })?
        };
        Ok(Engine {
            queue,
            metrics,
            cancel,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `job`, or says why not.
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        if self.cancel.load(Ordering::Acquire) {
            return Err(Refused::Stopped);
        }
        // Counted before sending, so the engine never takes a job the gauge does not hold yet.
        self.metrics.queued(1);
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.queued(-1);
                Err(match e {
                    TrySendError::Full(_) => Refused::Full,
                    TrySendError::Disconnected(_) => Refused::Stopped,
                })
            }
        }
    }

    /// The model's metrics.
    pub fn metrics(&self) -> &Arc<ModelMetrics> {
        &self.metrics
    }

    /// Fails every request in the engine and every one queued (the server is stopping).
    pub fn cancel_all(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// Cancels everything and waits for the engine thread to end.
    pub fn join(&self) {
        self.cancel_all();
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// How long an idle engine waits for a job before it looks at the cancel flag again.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// The engine loop (see the module doc); returns when the queue is closed and every slot is free.
fn run(
    mut model: Box<dyn StepModel>,
    tokenizer: &Tokenizer,
    jobs: &Receiver<Job>,
    metrics: &ModelMetrics,
    cancel: &AtomicBool,
    options: EngineOptions,
) {
    let n = model.slots();
    let context = usize::try_from(model.context()).unwrap_or(usize::MAX);
    let mut slots: Vec<Option<Slot<'_>>> = (0..n).map(|_| None).collect();
    let mut ids: Vec<Vec<i64>> = vec![Vec::new(); n];
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(n);
    let mut open = true;
    loop {
        if cancel.load(Ordering::Acquire) {
            for s in slots.iter_mut().filter_map(Option::take) {
                s.stopping();
            }
            while let Ok(job) = jobs.try_recv() {
                metrics.queued(-1);
                let _ = job.events.send(Event::Stopping);
            }
            metrics.set_busy(0, 0);
            return;
        }
        for s in slots.iter_mut() {
            if s.as_ref().is_some_and(Slot::abandoned) {
                *s = None;
                metrics.add_cancelled(1);
            }
        }
        // Take queued requests into free slots; wait for one when every slot is free.
        while open && let Some(free) = slots.iter().position(Option::is_none) {
            let job = if slots.iter().all(Option::is_none) {
                match jobs.recv_timeout(IDLE_POLL) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            };
            metrics.queued(-1);
            if job.events.is_closed() {
                metrics.add_cancelled(1);
                continue;
            }
            if cancel.load(Ordering::Acquire) {
                let _ = job.events.send(Event::Stopping);
                continue;
            }
            metrics.add_prompt(job.prompt.len());
            if let Some(mut s) = Slot::start(job, tokenizer)
                && s.stop_now(context).is_none()
                && let Some(place) = slots.get_mut(free)
            {
                *place = Some(s);
            }
        }
        // One step over every busy slot.
        order.clear();
        for (i, (s, ids)) in slots.iter().zip(ids.iter_mut()).enumerate() {
            if let Some(s) = s {
                let pos = s.next_feed(options.prefill_chunk, ids);
                order.push((i, pos as usize));
            }
        }
        metrics.set_busy(order.len(), slots.iter().flatten().map(Slot::cached).sum());
        if order.is_empty() {
            if !open {
                return;
            }
            continue;
        }
        let feeds: Vec<Feed<'_>> = order
            .iter()
            .filter_map(|&(slot, pos)| {
                ids.get(slot).map(|tokens| Feed {
                    slot,
                    tokens: tokens.as_slice(),
                    pos: pos as u64,
                })
            })
            .collect();
        model.step(&feeds, &mut |i, result| {
            let Some(feed) = feeds.get(i) else {
                return;
            };
            let Some(place) = slots.get_mut(feed.slot) else {
                return;
            };
            let after = match (place.as_mut(), result) {
                (None, _) => return,
                (Some(s), Ok(logits)) => s.after_step(feed.tokens.len(), logits, context, metrics),
                (Some(s), Err(e)) => {
                    s.fail(e.to_string());
                    After::Free
                }
            };
            match after {
                After::Running => {}
                After::Free => *place = None,
                After::Abandoned => {
                    *place = None;
                    metrics.add_cancelled(1);
                }
            }
        });
    }
}
