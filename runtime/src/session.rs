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
//! The choices after each step (sampling, stop conditions, streamed text) are `generator`'s, which
//! a server drives the same way for each of its requests.
//!
//! A prompt that does not fit in the context is an error before anything runs. The last sampled
//! token is fed at the start of the next call, so a session continues a conversation where it left
//! off; `reset` starts a new one. A chat that renders the whole conversation again each turn keeps
//! the cache with `reuse_prefix`: only the tokens after what the context already holds are
//! prefilled (`rewind` drops the rest).

use crate::error::RuntimeError;
use crate::executor::Executor;
use crate::generator::Generator;
pub use crate::generator::{Cancel, GenerateParams, StopReason};
use crate::gpu::DeviceStep;
use crate::tokenizer::Tokenizer;
use std::time::{Duration, Instant};

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

/// Where a session's steps run.
// One per session, never moved in a loop: the CPU executor's size does not matter here.
#[allow(clippy::large_enum_variant)]
enum Engine {
    /// The CPU executor.
    Cpu(Executor),
    /// Another device (`crate::gpu`).
    Device(Box<dyn DeviceStep>),
}

impl Engine {
    fn context(&self) -> u64 {
        match self {
            Engine::Cpu(e) => e.program().context,
            Engine::Device(d) => d.context(),
        }
    }

    fn vocab(&self) -> u64 {
        match self {
            Engine::Cpu(e) => e.program().vocab,
            Engine::Device(d) => d.vocab(),
        }
    }

    fn reset(&mut self) {
        match self {
            Engine::Cpu(e) => e.reset(),
            Engine::Device(d) => d.reset(),
        }
    }

    fn forward(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        match self {
            Engine::Cpu(e) => e.forward(tokens, pos),
            Engine::Device(d) => d.forward(tokens, pos),
        }
    }

    fn forward_last(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        match self {
            Engine::Cpu(e) => e.forward_last(tokens, pos),
            Engine::Device(d) => d.forward_last(tokens, pos),
        }
    }
}

/// A compiled model ready to run, with its context so far.
pub struct Session {
    exec: Engine,
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
        Session::over(Engine::Cpu(exec), tokenizer)
    }

    /// A session whose steps run on another device (`crate::gpu::GpuExecutor`).
    pub fn on_device(device: Box<dyn DeviceStep>, tokenizer: Option<Tokenizer>) -> Session {
        Session::over(Engine::Device(device), tokenizer)
    }

    fn over(exec: Engine, tokenizer: Option<Tokenizer>) -> Session {
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

    /// The CPU executor (for its program's sizes); `None` for a session on another device.
    pub fn executor(&self) -> Option<&Executor> {
        match &self.exec {
            Engine::Cpu(e) => Some(e),
            Engine::Device(_) => None,
        }
    }

    /// The device a session on another device runs on (to switch its graphs, say).
    pub fn device_mut(&mut self) -> Option<&mut (dyn DeviceStep + 'static)> {
        match &mut self.exec {
            Engine::Cpu(_) => None,
            Engine::Device(d) => Some(d.as_mut()),
        }
    }

    /// The context length.
    pub fn context(&self) -> u64 {
        self.exec.context()
    }

    /// The vocabulary size.
    pub fn vocab(&self) -> u64 {
        self.exec.vocab()
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
        let vocab = self.exec.vocab() as usize;
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
        check_stops(params, self.exec.vocab())?;
        let mut generator = Generator::new(params, self.tokenizer.as_ref())?;
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
        let mut decode = Vec::new();
        let start = Instant::now();
        self.tokens.extend_from_slice(prompt);
        let mut prefill = Duration::ZERO;
        let stop = loop {
            if let Some(stop) = generator.stop_before_step(self.fed, context) {
                break stop;
            }
            let step = Instant::now();
            let logits = feed(
                &mut self.exec,
                &mut self.ids,
                &mut self.tokens,
                &mut self.fed,
                true,
            )?;
            let first = generator.tokens().is_empty();
            let chosen = generator.next(logits, &self.tokens)?;
            self.tokens.push(chosen.id);
            if first {
                prefill = start.elapsed();
            } else {
                decode.push(step.elapsed());
            }
            on_token(Some(chosen.id), chosen.text);
            if let Some(stop) = chosen.stop {
                break stop;
            }
        };
        let rest = generator.finish(&stop)?;
        if !rest.is_empty() {
            on_token(None, rest);
        }
        let (tokens, text) = generator.into_output();
        Ok(Generation {
            prompt_tokens,
            tokens,
            text,
            stop,
            prefill,
            decode,
        })
    }
}

/// Refuses stop conditions that cannot mean what the caller wants: an empty stop string (it
/// would match before any text) and a stop token outside the vocabulary (it could never come).
fn check_stops(params: &GenerateParams, vocab: u64) -> Result<(), RuntimeError> {
    if params.stop_strings.iter().any(String::is_empty) {
        return Err(RuntimeError::Sampling(
            "an empty stop string: give the text to stop at".into(),
        ));
    }
    if let Some(t) = params.stop_tokens.iter().find(|&&t| u64::from(t) >= vocab) {
        return Err(RuntimeError::Sampling(format!(
            "stop token {t} is outside the vocabulary (ids 0..{vocab})"
        )));
    }
    Ok(())
}

/// Feeds every token of `tokens` not yet in the cache (`fed` of them are); returns the logits of the
/// last one (`last`) or of all. On an error nothing ran, and the unfed tokens are dropped.
fn feed<'e>(
    exec: &'e mut Engine,
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
