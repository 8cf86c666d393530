//! One request in a slot: its prompt and output so far, how much of it the slot's cache holds, and
//! the runtime's `Generator` that chooses each token. The engine asks a slot what to feed next (a
//! chunk of the prompt, or the last token chosen) and tells it what the step returned.

use super::{Event, Job};
use crate::metrics::ModelMetrics;
use bitnet_runtime::generator::Generator;
use bitnet_runtime::session::StopReason;
use bitnet_runtime::tokenizer::Tokenizer;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// A request being generated (see the module doc).
pub struct Slot<'t> {
    events: UnboundedSender<Event>,
    generator: Generator<'t>,
    /// The prompt, then every token chosen.
    history: Vec<u32>,
    /// How many of `history` the cache holds.
    fed: usize,
    prompt_tokens: usize,
    enqueued: Instant,
    /// When the last token was chosen.
    last: Option<Instant>,
}

/// What became of a slot after a step.
pub enum After {
    /// It goes on.
    Running,
    /// Its request is over (answered or failed): the slot is free.
    Free,
    /// Its client went away: the slot is free.
    Abandoned,
}

impl<'t> Slot<'t> {
    /// Starts `job`; its parameters were checked when it was queued, so an error here (answered to
    /// the client) leaves the slot free.
    pub fn start(job: Job, tokenizer: &'t Tokenizer) -> Option<Slot<'t>> {
        match Generator::new(&job.params, Some(tokenizer)) {
            Ok(generator) => Some(Slot {
                prompt_tokens: job.prompt.len(),
                history: job.prompt,
                events: job.events,
                generator,
                fed: 0,
                enqueued: job.enqueued,
                last: None,
            }),
            Err(e) => {
                let _ = job.events.send(Event::Failed(e.to_string()));
                None
            }
        }
    }

    /// Whether the client went away (its response was dropped).
    pub fn abandoned(&self) -> bool {
        self.events.is_closed()
    }

    /// Tokens in this slot's cache.
    pub fn cached(&self) -> usize {
        self.fed
    }

    /// The tokens to feed next into `ids` (at most `chunk` of them), and their first position.
    pub fn next_feed(&self, chunk: usize, ids: &mut Vec<i64>) -> u64 {
        let end = self
            .fed
            .saturating_add(chunk.max(1))
            .min(self.history.len());
        ids.clear();
        ids.extend(
            self.history
                .get(self.fed..end)
                .unwrap_or_default()
                .iter()
                .map(|&t| i64::from(t)),
        );
        self.fed as u64
    }

    /// Takes the result of feeding `fed` tokens: while the prompt is still going in, nothing
    /// happens; after the last pending token, the next one is chosen from `logits` and sent.
    pub fn after_step(
        &mut self,
        fed: usize,
        logits: &[f32],
        context: usize,
        metrics: &ModelMetrics,
    ) -> After {
        self.fed += fed;
        if self.fed < self.history.len() {
            return After::Running;
        }
        let chosen = match self.generator.next(logits, &self.history) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.events.send(Event::Failed(e.to_string()));
                return After::Free;
            }
        };
        let now = Instant::now();
        match self.last {
            None => metrics.observe_first_token(now - self.enqueued),
            Some(last) => metrics.observe_inter_token(now - last),
        }
        self.last = Some(now);
        metrics.add_generated(1);
        let id = chosen.id;
        let stop = chosen.stop;
        let sent = self.events.send(Event::Token {
            id,
            text: chosen.text.to_string(),
        });
        self.history.push(id);
        if sent.is_err() {
            return After::Abandoned;
        }
        let stop = stop.or_else(|| self.generator.stop_before_step(self.fed, context));
        match stop {
            Some(stop) => self.finish(stop),
            None => After::Running,
        }
    }

    /// Ends the request for `stop` before any step (`max_tokens` is 0 or the prompt fills the
    /// context), if it must.
    pub fn stop_now(&mut self, context: usize) -> Option<After> {
        if self.fed > 0 {
            return None;
        }
        let stop = self.generator.stop_before_step(self.fed, context)?;
        Some(self.finish(stop))
    }

    /// Sends the text held back and the end of the request.
    fn finish(&mut self, stop: StopReason) -> After {
        let tail = match self.generator.finish(&stop) {
            Ok(t) => t.to_string(),
            Err(e) => {
                let _ = self.events.send(Event::Failed(e.to_string()));
                return After::Free;
            }
        };
        let _ = self.events.send(Event::Done {
            stop,
            tail,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.generator.tokens().len(),
        });
        After::Free
    }

    /// Fails the request with `message` (the step failed).
    pub fn fail(&self, message: String) {
        let _ = self.events.send(Event::Failed(message));
    }

    /// Cancels the request: the server is stopping.
    pub fn stopping(&self) {
        let _ = self.events.send(Event::Stopping);
    }
}
