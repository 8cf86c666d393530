//! `bitnetc bench --batch 1,4,8,16`: aggregate decode throughput when several sequences share each
//! step (`Executor::forward_batch`, what `bitnetc serve` runs), against one sequence on the same
//! batched path, measured in the same run.
//!
//! For each batch size B, B sequences get prompts of `--prompt-len` tokens (prefilled one at a
//! time, not timed), then `--steps` greedy decode steps run with all B sequences in every step;
//! each step is timed. Aggregate decode is B × steps ÷ the time of the steps.

use anyhow::{Context, Result, bail};
use bitnet_runtime::sampling::{Rng, argmax};
use bitnet_runtime::{Executor, SeqFeed};
use bitnetc::speed::{percentile_ms, synthetic_prompt};
use std::time::{Duration, Instant};

/// What one batch size measured.
pub struct BatchResult {
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per second over all sequences.
    pub decode_tok_s: f64,
    /// Per-step latencies (each step gives every sequence a token), sorted.
    pub steps: Vec<Duration>,
}

impl BatchResult {
    /// The `p`th percentile of the step latency, in milliseconds.
    pub fn step_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.steps, p)
    }

    /// The JSON of this result, with its speedup over `one` (the result of batch size 1).
    pub fn json(&self, one: Option<&BatchResult>) -> serde_json::Value {
        serde_json::json!({
            "batch": self.batch,
            "decode_tok_s": self.decode_tok_s,
            "step_ms": {"p50": self.step_ms(50.0), "p95": self.step_ms(95.0)},
            "vs_batch_1": one.map(|o| self.decode_tok_s / o.decode_tok_s),
        })
    }
}

/// Measures every size of `sizes` on the program of `exec` (see the module doc).
pub fn measure_batches(
    exec: &Executor,
    sizes: &[usize],
    prompt_len: usize,
    steps: usize,
    repeat: usize,
) -> Result<Vec<BatchResult>> {
    let vocab = exec.program().vocab;
    let context = exec.program().context as usize;
    let mut results = Vec::with_capacity(sizes.len());
    for &b in sizes {
        if b == 0 || b > context {
            bail!("--batch {b}: give sizes from 1 to the context ({context})");
        }
        let mut batch = exec
            .with_slots(b)
            .with_context(|| format!("--batch {b}: allocating {b} KV caches"))?;
        let mut rng = Rng::new(b as u64);
        let mut latencies = Vec::with_capacity(steps * repeat);
        for _ in 0..repeat {
            let mut next = Vec::with_capacity(b);
            for slot in 0..b {
                let prompt: Vec<i64> = synthetic_prompt(&mut rng, vocab, prompt_len)
                    .into_iter()
                    .map(i64::from)
                    .collect();
                let feed = SeqFeed {
                    slot,
                    tokens: &prompt,
                    pos: 0,
                };
                next.push(i64::from(argmax(batch.forward_batch(&[feed])?)));
            }
            for step in 0..steps {
                let tokens: Vec<[i64; 1]> = next.iter().map(|&t| [t]).collect();
                let feeds: Vec<SeqFeed<'_>> = tokens
                    .iter()
                    .enumerate()
                    .map(|(slot, t)| SeqFeed {
                        slot,
                        tokens: t,
                        pos: (prompt_len + step) as u64,
                    })
                    .collect();
                let start = Instant::now();
                let logits = batch.forward_batch(&feeds)?;
                latencies.push(start.elapsed());
                let row = logits.len() / b;
                for (n, chunk) in next.iter_mut().zip(logits.chunks(row.max(1))) {
                    *n = i64::from(argmax(chunk));
                }
            }
        }
        latencies.sort();
        let total: f64 = latencies.iter().map(Duration::as_secs_f64).sum();
        results.push(BatchResult {
            batch: b,
            decode_tok_s: (b * latencies.len()) as f64 / total,
            steps: latencies,
        });
    }
    Ok(results)
}

/// Prints the batch table.
pub fn print_batches(results: &[BatchResult]) {
    let one = results.iter().find(|r| r.batch == 1);
    println!(
        "{:<8} {:>14} {:>12} {:>12} {:>10}",
        "batch", "decode (all)", "step P50", "step P95", "vs 1"
    );
    for r in results {
        println!(
            "{:<8} {:>10.1} t/s {:>9.1} ms {:>9.1} ms {:>9}",
            r.batch,
            r.decode_tok_s,
            r.step_ms(50.0),
            r.step_ms(95.0),
            one.map_or_else(
                || "n/a".to_string(),
                |o| format!("{:.2}x", r.decode_tok_s / o.decode_tok_s)
            ),
        );
    }
}
