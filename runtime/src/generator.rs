//! One generation's choices, a token at a time: the sampler, the stop tokens, the stop strings and
//! the streamed text, apart from running the model. `Session::generate` drives one with its own
//! executor; a server drives one per request, interleaving steps of many, and gets the same tokens
//! and text for the same logits.
//!
//! `GenerateParams` says what to do and `StopReason` why it stopped (both also under `session`).
//! The stop conditions are the session's (see `session`): `max_tokens` new tokens; a stop token
//! (kept in the tokens, not in the text); a stop string in the text (cut from it, never streamed:
//! text is held back while it could still be the start of one); a full context; a `Cancel` flag
//! raised by another thread (or by the caller's own token callback), seen before the next step.

use crate::error::RuntimeError;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{DecodeStream, Tokenizer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag that stops a generation before its next step (`StopReason::Cancelled`): clones share
/// it, so one is kept by the caller and one given in `GenerateParams::cancel`. Two flags are equal
/// when they are the same flag.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag not raised yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Raises the flag: the generation stops before its next step.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the flag was raised.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl PartialEq for Cancel {
    fn eq(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What a generation should do (`Session::generate`, `Generator::new`).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    /// The most new tokens to produce.
    pub max_tokens: usize,
    /// How to choose them.
    pub sampling: SamplingParams,
    /// Tokens that end generation (added to the model's end-of-sequence ids unless `ignore_eos`).
    pub stop_tokens: Vec<u32>,
    /// Strings that end generation; the text is cut before the first one found.
    pub stop_strings: Vec<String>,
    /// Do not stop at the model's end-of-sequence ids.
    pub ignore_eos: bool,
    /// Stops the generation before its next step once raised (`StopReason::Cancelled`).
    pub cancel: Option<Cancel>,
}

impl Default for GenerateParams {
    /// 64 greedy tokens, stopping at end-of-sequence.
    fn default() -> GenerateParams {
        GenerateParams {
            max_tokens: 64,
            sampling: SamplingParams::default(),
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
            ignore_eos: false,
            cancel: None,
        }
    }
}

/// Why generation stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were produced.
    MaxTokens,
    /// This stop token was produced.
    StopToken(u32),
    /// This stop string appeared in the text.
    StopString(String),
    /// The context is full.
    ContextFull,
    /// The caller raised `GenerateParams::cancel`.
    Cancelled,
}

impl StopReason {
    /// A short name for logs and JSON: `max_tokens`, `stop_token`, `stop_string`, `context_full`,
    /// `cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopToken(_) => "stop_token",
            StopReason::StopString(_) => "stop_string",
            StopReason::ContextFull => "context_full",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// The choices of one generation (see the module doc).
pub struct Generator<'t> {
    sampler: Sampler,
    stop_tokens: Vec<u32>,
    max_tokens: usize,
    cancel: Option<Cancel>,
    tokens: Vec<u32>,
    text: TextOut<'t>,
}

/// A token chosen by `Generator::next`.
#[derive(Debug, PartialEq)]
pub struct Chosen<'g> {
    /// The token.
    pub id: u32,
    /// The text now safe to hand out (possibly empty; empty for a stop token).
    pub text: &'g str,
    /// Set when this token ends the generation (a stop token or a stop string).
    pub stop: Option<StopReason>,
}

impl<'t> Generator<'t> {
    /// A generator for `params`; `tokenizer` (if any) decodes the text and adds its
    /// end-of-sequence ids to the stop tokens unless `params.ignore_eos`.
    pub fn new(
        params: &GenerateParams,
        tokenizer: Option<&'t Tokenizer>,
    ) -> Result<Generator<'t>, RuntimeError> {
        let sampler = Sampler::new(params.sampling.clone())?;
        let mut stop_tokens = params.stop_tokens.clone();
        if !params.ignore_eos
            && let Some(t) = tokenizer
        {
            stop_tokens.extend(t.eos());
        }
        Ok(Generator {
            sampler,
            stop_tokens,
            max_tokens: params.max_tokens,
            cancel: params.cancel.clone(),
            tokens: Vec::new(),
            text: TextOut::new(tokenizer, params.stop_strings.clone()),
        })
    }

    /// Why generation must stop before another step, if it must: the caller cancelled it,
    /// `max_tokens` are out, or the cache already holds `fed` = `context` tokens.
    pub fn stop_before_step(&self, fed: usize, context: usize) -> Option<StopReason> {
        if self.cancel.as_ref().is_some_and(Cancel::is_cancelled) {
            Some(StopReason::Cancelled)
        } else if self.tokens.len() >= self.max_tokens {
            Some(StopReason::MaxTokens)
        } else if fed >= context {
            Some(StopReason::ContextFull)
        } else {
            None
        }
    }

    /// Chooses the next token from `logits` (the last position's), given every token in the
    /// context so far (`history`: prompt and output, for the repetition penalty).
    pub fn next(&mut self, logits: &[f32], history: &[u32]) -> Result<Chosen<'_>, RuntimeError> {
        let id = self.sampler.sample(logits, history)?;
        self.tokens.push(id);
        if self.stop_tokens.contains(&id) {
            return Ok(Chosen {
                id,
                text: "",
                stop: Some(StopReason::StopToken(id)),
            });
        }
        let (text, hit) = self.text.push(id)?;
        Ok(Chosen {
            id,
            text,
            stop: hit.map(StopReason::StopString),
        })
    }

    /// The text held back until the end (and incomplete bytes, decoded lossily), once generation
    /// stopped for `stop`; nothing after a stop string, which cut the text.
    pub fn finish(&mut self, stop: &StopReason) -> Result<&str, RuntimeError> {
        if matches!(stop, StopReason::StopString(_)) {
            return Ok("");
        }
        self.text.finish()
    }

    /// The new tokens so far, including a stop token that ended generation.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The text so far (cut at a stop string once found), including what is held back.
    pub fn text(&self) -> &str {
        &self.text.text
    }

    /// The generated tokens and text, once generation is over.
    pub fn into_output(self) -> (Vec<u32>, String) {
        (self.tokens, self.text.text)
    }
}

/// Streams generated text: decodes token by token, holds back what may still become a stop string,
/// and cuts the text at the first stop string.
struct TextOut<'a> {
    stream: Option<DecodeStream<'a>>,
    stops: Vec<String>,
    /// All text so far (cut at a stop string once found).
    text: String,
    /// How much of `text` was handed out.
    emitted: usize,
    /// The bytes of `text` to hold back: the longest stop string, less one.
    hold: usize,
    /// Scratch for the piece handed out.
    piece: String,
}

impl<'a> TextOut<'a> {
    fn new(tokenizer: Option<&'a Tokenizer>, stops: Vec<String>) -> TextOut<'a> {
        let hold = stops
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        TextOut {
            stream: tokenizer.map(|t| t.decode_stream(true)),
            stops,
            text: String::new(),
            emitted: 0,
            hold,
            piece: String::new(),
        }
    }

    /// Adds a token; returns the text now safe to hand out and the stop string found, if any.
    fn push(&mut self, id: u32) -> Result<(&str, Option<String>), RuntimeError> {
        let Some(stream) = &mut self.stream else {
            return Ok(("", None));
        };
        let new = stream
            .step(id)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
        // A stop string that ends in the new text starts at most `hold` bytes before it.
        let from = floor_char(&self.text, self.text.len().saturating_sub(self.hold));
        self.text.push_str(&new);
        let found = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| (from + i, s)))
            .min_by_key(|(i, _)| *i);
        let hit = found.map(|(i, s)| {
            self.text.truncate(i);
            s.clone()
        });
        let safe = if hit.is_some() {
            self.text.len()
        } else {
            floor_char(&self.text, self.text.len().saturating_sub(self.hold))
        };
        self.piece.clear();
        if safe > self.emitted {
            self.piece.push_str(&self.text[self.emitted..safe]);
            self.emitted = safe;
        }
        Ok((&self.piece, hit))
    }

    /// The text held back, and any incomplete bytes decoded lossily.
    fn finish(&mut self) -> Result<&str, RuntimeError> {
        if let Some(stream) = self.stream.take() {
            let tail = stream
                .finish()
                .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
            self.text.push_str(&tail);
        }
        self.piece.clear();
        self.piece
            .push_str(&self.text[self.emitted.min(self.text.len())..]);
        self.emitted = self.text.len();
        Ok(&self.piece)
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
