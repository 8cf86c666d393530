//! Prefill and decode speed of a session, measured one way for `bitnetc bench` and
//! `bitnetc validate`: a prompt of random ids from the upper half of the vocabulary (clear of the
//! special tokens at its start; no tokenizer is needed), prefilled, then greedy decode with the
//! end-of-sequence ignored, `repeat` times from an empty cache.

use crate::Error;
use bitnet_runtime::sampling::{Rng, SamplingParams};
use bitnet_runtime::session::{GenerateParams, Session};
use std::time::Duration;

/// What one measurement found.
#[derive(Clone, Debug, PartialEq)]
pub struct Speed {
    /// Tokens in the measured prompt.
    pub prompt_len: usize,
    /// The fastest prefill of the prompt.
    pub prefill: Duration,
    /// Every decode step's latency over all repeats, sorted.
    pub latencies: Vec<Duration>,
}

impl Speed {
    /// Prompt tokens per second of the fastest prefill.
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_len as f64 / self.prefill.as_secs_f64()
    }

    /// Decode tokens per second over all the measured steps.
    pub fn decode_tok_s(&self) -> f64 {
        let total: f64 = self.latencies.iter().map(Duration::as_secs_f64).sum();
        self.latencies.len() as f64 / total
    }
}

/// The `p`th percentile of `sorted` latencies in milliseconds (NaN when there are none).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let n = sorted.len();
    let i = ((p / 100.0) * n.saturating_sub(1) as f64).round() as usize;
    sorted
        .get(i.min(n.saturating_sub(1)))
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// `len` token ids drawn by `rng` from the upper half of a `vocab`-token vocabulary, clear of the
/// special tokens at its start (a vocabulary under 2 is taken as 2): the prompts `bench`,
/// `bench --batch`, `validate`'s speed figures and `profile` measure with.
pub fn synthetic_prompt(rng: &mut Rng, vocab: u64, len: usize) -> Vec<u32> {
    let vocab = vocab.max(2);
    (0..len)
        .map(|_| (vocab / 2 + rng.next_u64() % (vocab - vocab / 2)) as u32)
        .collect()
}

/// Measures `session`: `repeat` times, a prefill of `prompt_len` ids and `steps` decode steps
/// (the context must hold `prompt_len + steps + 1` tokens). The session is left reset.
pub fn measure(
    session: &mut Session,
    prompt_len: usize,
    steps: usize,
    repeat: usize,
) -> Result<Speed, Error> {
    let prompt = synthetic_prompt(&mut Rng::new(0), session.vocab(), prompt_len);
    let params = GenerateParams {
        max_tokens: steps + 1,
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        ..GenerateParams::default()
    };
    let mut prefill = Duration::MAX;
    let mut latencies = Vec::new();
    for _ in 0..repeat.max(1) {
        session.reset();
        let out = session.generate(&prompt, &params, &mut |_, _| {})?;
        prefill = prefill.min(out.prefill);
        latencies.extend(out.decode);
    }
    session.reset();
    latencies.sort();
    Ok(Speed {
        prompt_len,
        prefill,
        latencies,
    })
}
