//! Sessions: a compiled model with its KV cache and tokenizer, run a step at a time.
//!
//! A session remembers every token in its context. `forward` runs tokens and returns their logits;
//! `generate` runs a prompt (prefill), then samples and feeds one token at a time (decode), calling
//! back with each token and the text it completed, until a stop condition:
//! - `max_tokens` new tokens;
//! - a stop token (by default the model's end-of-sequence ids), which is kept in the output as
//!   transformers keeps it, but not in the text;
//! - a stop string in the generated text, which is cut from the text (and never streamed: text is
//!   held back while it could still be the start of a stop string);
//! - the context is full: the last token sampled from the last position is kept.
//!
//! A prompt that does not fit in the context is an error before anything runs. The last sampled
//! token is fed at the start of the next call, so a session continues a conversation where it left
//! off; `reset` starts a new one. A chat that renders the whole conversation again each turn keeps
//! the cache with `reuse_prefix`: only the tokens after what the context already holds are
//! prefilled (`rewind` drops the rest).

use crate::error::RuntimeError;
use crate::executor::Executor;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;
use std::time::{Duration, Instant};

/// What `generate` should do.
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
}

impl StopReason {
    /// A short name for logs and JSON: `max_tokens`, `stop_token`, `stop_string`, `context_full`.
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopToken(_) => "stop_token",
            StopReason::StopString(_) => "stop_string",
            StopReason::ContextFull => "context_full",
        }
    }
}

/// The outcome of `generate`.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The prompt as run (after the previous call's last token, if any).
    pub prompt_tokens: usize,
    /// The new tokens, including a stop token that ended generation.
    pub tokens: Vec<u32>,
    /// Their text (empty without a tokenizer), without special tokens and cut at a stop string.
    pub text: String,
    /// Why generation stopped.
    pub stop: StopReason,
    /// Time of the prefill step, including choosing the first token (time to first token).
    pub prefill: Duration,
    /// Time of each decode step (feeding one token and choosing the next).
    pub decode: Vec<Duration>,
}

/// A compiled model ready to run, with its context so far.
pub struct Session {
    exec: Executor,
    tokenizer: Option<Tokenizer>,
    /// Every token in the context, fed or not.
    tokens: Vec<u32>,
    /// How many of `tokens` are in the KV cache.
    fed: usize,
    /// Token ids as the executor takes them (reused).
    ids: Vec<i64>,
}

impl Session {
    /// A session over `exec`; `tokenizer` is needed for text in and out.
    pub fn new(exec: Executor, tokenizer: Option<Tokenizer>) -> Session {
        Session {
            exec,
            tokenizer,
            tokens: Vec::new(),
            fed: 0,
            ids: Vec::new(),
        }
    }

    /// The tokenizer, if the model has one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The executor (for its program's sizes).
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// The context length.
    pub fn context(&self) -> u64 {
        self.exec.program().context
    }

    /// The vocabulary size.
    pub fn vocab(&self) -> u64 {
        self.exec.program().vocab
    }

    /// Every token in the context so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets the context (a new conversation).
    pub fn reset(&mut self) {
        self.exec.reset();
        self.tokens.clear();
        self.fed = 0;
    }

    /// Keeps the first `n` tokens of the context and forgets the rest. The KV cache rows after
    /// them stay as they are: a step writes the rows of its positions before attention reads them
    /// and reads no row after its own, so what is fed next overwrites them before they matter.
    pub fn rewind(&mut self, n: usize) {
        self.tokens.truncate(n);
        self.fed = self.fed.min(n);
    }

    /// Prepares the context for a new `prompt` that repeats what the context holds, as a chat does
    /// each turn: rewinds to the longest common prefix of the context and `prompt`, leaving at
    /// least one token of `prompt` to run, and returns its length `n`. Generating from
    /// `&prompt[n..]` then gives what a fresh session generating from `prompt` gives, with only the
    /// new tokens prefilled.
    pub fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        self.rewind(common);
        common
    }

    /// Encodes text with the model's tokenizer (with its special tokens, such as a leading BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        self.need_tokenizer()?
            .encode(text, true)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))
    }

    fn need_tokenizer(&self) -> Result<&Tokenizer, RuntimeError> {
        self.tokenizer.as_ref().ok_or_else(|| {
            RuntimeError::Tokenizer(
                "the model carries no tokenizer: pass token ids instead of text".into(),
            )
        })
    }

    /// Runs `tokens` after the context (feeding a pending sampled token first) and returns the
    /// logits of the new tokens, `tokens.len() × vocab` values.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<&[f32], RuntimeError> {
        if tokens.is_empty() {
            return Err(RuntimeError::Empty);
        }
        self.tokens.extend_from_slice(tokens);
        let vocab = self.exec.program().vocab as usize;
        let n = self.tokens.len() - self.fed;
        let all = feed(
            &mut self.exec,
            &mut self.ids,
            &mut self.tokens,
            &mut self.fed,
            false,
        )?;
        Ok(&all[(n - tokens.len()) * vocab..])
    }

    /// Runs `prompt` after the context and generates up to `params.max_tokens` tokens, calling
    /// `on_token(Some(id), text)` for each with the text it completed (possibly empty), and
    /// `on_token(None, text)` once at the end for text held back until then.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(Option<u32>, &str),
    ) -> Result<Generation, RuntimeError> {
        let mut sampler = Sampler::new(params.sampling.clone())?;
        let mut stop_tokens = params.stop_tokens.clone();
        if !params.ignore_eos
            && let Some(t) = &self.tokenizer
        {
            stop_tokens.extend(t.eos());
        }
        let context = self.context() as usize;
        let prompt_tokens = self.tokens.len() - self.fed + prompt.len();
        if prompt_tokens == 0 {
            return Err(RuntimeError::Empty);
        }
        if self.fed + prompt_tokens > context {
            return Err(RuntimeError::ContextOverflow {
                pos: self.fed as u64,
                tokens: prompt_tokens,
                context: context as u64,
            });
        }
        let mut text = TextOut::new(self.tokenizer.as_ref(), &params.stop_strings);
        let mut out = Vec::new();
        let mut decode = Vec::new();
        let start = Instant::now();
        self.tokens.extend_from_slice(prompt);
        let mut prefill = Duration::ZERO;
        let stop = loop {
            if out.len() >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            if self.fed >= context {
                break StopReason::ContextFull;
            }
            let step = Instant::now();
            let logits = feed(
                &mut self.exec,
                &mut self.ids,
                &mut self.tokens,
                &mut self.fed,
                true,
            )?;
            let id = sampler.sample(logits, &self.tokens)?;
            self.tokens.push(id);
            out.push(id);
            if out.len() == 1 {
                prefill = start.elapsed();
            } else {
                decode.push(step.elapsed());
            }
            if stop_tokens.contains(&id) {
                on_token(Some(id), "");
                break StopReason::StopToken(id);
            }
            let (piece, hit) = text.push(id)?;
            on_token(Some(id), piece);
            if let Some(s) = hit {
                break StopReason::StopString(s);
            }
        };
        if !matches!(stop, StopReason::StopString(_)) {
            let rest = text.finish()?;
            if !rest.is_empty() {
                on_token(None, rest);
            }
        }
        Ok(Generation {
            prompt_tokens,
            tokens: out,
            text: text.text,
            stop,
            prefill,
            decode,
        })
    }
}

/// Feeds every token of `tokens` not yet in the cache (`fed` of them are); returns the logits of the
/// last one (`last`) or of all. On an error nothing ran, and the unfed tokens are dropped.
fn feed<'e>(
    exec: &'e mut Executor,
    ids: &mut Vec<i64>,
    tokens: &mut Vec<u32>,
    fed: &mut usize,
    last: bool,
) -> Result<&'e [f32], RuntimeError> {
    let pending = &tokens[*fed..];
    ids.clear();
    ids.extend(pending.iter().map(|&t| i64::from(t)));
    let pos = *fed as u64;
    let n = pending.len();
    let result = if last {
        exec.forward_last(ids, pos)
    } else {
        exec.forward(ids, pos)
    };
    match result {
        Ok(logits) => {
            *fed += n;
            Ok(logits)
        }
        Err(e) => {
            tokens.truncate(*fed);
            Err(e)
        }
    }
}

/// Streams generated text: decodes token by token, holds back what may still become a stop string,
/// and cuts the text at the first stop string.
struct TextOut<'a> {
    stream: Option<crate::tokenizer::DecodeStream<'a>>,
    stops: &'a [String],
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
    fn new(tokenizer: Option<&'a Tokenizer>, stops: &'a [String]) -> TextOut<'a> {
        TextOut {
            stream: tokenizer.map(|t| t.decode_stream(true)),
            stops,
            text: String::new(),
            emitted: 0,
            hold: stops
                .iter()
                .map(String::len)
                .max()
                .unwrap_or(1)
                .saturating_sub(1),
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
