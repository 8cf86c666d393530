//! Profiling: where the time of one prefill and the decode steps after it goes, launch by launch,
//! with the memory the model holds, a Chrome trace, and a regression check against a saved
//! profile (`baseline`). `bitnetc profile`, `serve`'s gateway route and the Python module call
//! [`profile`].
//!
//! The model is compiled (or its artifact loaded) as `bench` does; after a warm-up step, the
//! executor's profile (`Executor::start_profile`, event buffers sized for the run) records one
//! prefill of `prompt_len` tokens and `steps` greedy decode steps; with `batch` B > 1, every decode
//! step runs B sequences together (`Executor::forward_batch`, what `serve` runs), the other B − 1
//! prefilled before the profile starts. The heap allocations of every
//! thread during the decode steps are counted when the process's global allocator is
//! [`crate::alloc_count::CountingAllocator`] (the report says when it is not). The report is
//! `report`'s, the trace `trace`'s, the comparison `baseline`'s.

pub mod baseline;
pub mod report;
pub mod trace;

use crate::alloc_count::count_allocations;
use crate::speed::synthetic_prompt;
use crate::{Error, Options, machine};
use bitnet_runtime::SeqFeed;
use bitnet_runtime::executor::{PlantedDelay, ProfileOptions};
use bitnet_runtime::sampling::{Rng, argmax};
use serde_json::json;
use std::path::Path;

/// What to profile.
#[derive(Clone, Debug)]
pub struct ProfileSettings {
    /// How the model is compiled (threads, precision flags; the context is set here).
    pub compile: Options,
    /// Tokens of the profiled prefill (at least 1).
    pub prompt_len: usize,
    /// Greedy decode steps profiled after it (at least 1).
    pub steps: usize,
    /// Sequences sharing each decode step (1: one sequence, `forward_last`).
    pub batch: usize,
    /// For testing the regression check: launches whose label contains a text sleep longer.
    pub plant: Option<PlantedDelay>,
    /// Whether to build the Chrome trace.
    pub trace: bool,
}

impl Default for ProfileSettings {
    /// `bitnetc profile`'s defaults: a 64-token prefill and 32 decode steps, no trace.
    fn default() -> ProfileSettings {
        ProfileSettings {
            compile: Options::default(),
            prompt_len: 64,
            steps: 32,
            batch: 1,
            plant: None,
            trace: false,
        }
    }
}

/// A profiled run: the report (what `bitnetc profile --json` prints and `--save` writes) and,
/// when asked, the Chrome trace.
pub struct Measured {
    /// The report.
    pub report: serde_json::Value,
    /// The trace, when asked for.
    pub trace: Option<serde_json::Value>,
}

/// Compiles (or loads) `model` as `settings` say (its context is set here), and profiles one
/// prefill of `prompt_len` tokens and `steps` greedy decode steps (see the module doc).
pub fn profile(model: &Path, settings: &ProfileSettings) -> Result<Measured, Error> {
    let (prompt_len, steps, batch) = (settings.prompt_len, settings.steps, settings.batch);
    if prompt_len == 0 || steps == 0 || batch == 0 {
        return Err(Error::Profile(format!(
            "prompt length {prompt_len}, decode steps {steps} and batch {batch}: each must be at \
             least 1"
        )));
    }
    let rss_reset = machine::reset_peak_rss();
    let mut options = settings.compile.clone();
    options.context = Some((prompt_len + steps + 1) as u64);
    let threads = options.cpu.threads;
    let mut exec = crate::compile(model, &options)?.into_executor();
    if batch > 1 {
        if !exec.batchable() {
            return Err(Error::Profile(format!(
                "batch {batch}: this program cannot run several sequences in one step"
            )));
        }
        exec = exec.with_slots(batch)?;
    }
    let program_launches = exec.program().launches.len();
    let mut rng = Rng::new(0);
    let prompts: Vec<Vec<i64>> = (0..batch)
        .map(|_| {
            synthetic_prompt(&mut rng, exec.program().vocab, prompt_len)
                .into_iter()
                .map(i64::from)
                .collect()
        })
        .collect();
    let prompt = &prompts[0];
    // Warm-up: the first step touches the arena, the cache and the pool's threads.
    let first = argmax(exec.forward_last(prompt, 0)?);
    exec.forward_last(&[i64::from(first)], prompt.len() as u64)?;
    exec.reset();
    // The other sequences' prompts, before the profile (its prefill phase is sequence 0's).
    let mut next_of = vec![0u32; batch];
    for (slot, tokens) in prompts.iter().enumerate().skip(1) {
        let feed = SeqFeed {
            slot,
            tokens,
            pos: 0,
        };
        next_of[slot] = argmax(exec.forward_batch(&[feed])?);
    }
    exec.start_profile(&ProfileOptions {
        launch_events: program_launches * (steps + 1),
        step_events: steps + 1,
        plant: settings.plant.clone(),
    });
    next_of[0] = argmax(exec.forward_last(prompt, 0)?);
    let busy_prefill = exec
        .profile()
        .map(|p| p.busy_ns.clone())
        .unwrap_or_default();
    // Only the steps count: a batched step's feeds are built outside the counted closures.
    let mut allocations = Some(0u64);
    for pos in prompt.len()..prompt.len() + steps {
        let (stepped, counted) = if batch == 1 {
            count_allocations(|| -> Result<(), Error> {
                next_of[0] = argmax(exec.forward_last(&[i64::from(next_of[0])], pos as u64)?);
                Ok(())
            })
        } else {
            let tokens: Vec<[i64; 1]> = next_of.iter().map(|&t| [i64::from(t)]).collect();
            let feeds: Vec<SeqFeed<'_>> = tokens
                .iter()
                .enumerate()
                .map(|(slot, t)| SeqFeed {
                    slot,
                    tokens: t,
                    pos: pos as u64,
                })
                .collect();
            count_allocations(|| -> Result<(), Error> {
                let logits = exec.forward_batch(&feeds)?;
                let row = logits.len() / batch;
                for (n, chunk) in next_of.iter_mut().zip(logits.chunks(row.max(1))) {
                    *n = argmax(chunk);
                }
                Ok(())
            })
        };
        stepped?;
        allocations = allocations.zip(counted).map(|(a, b)| a + b);
    }
    let profile = exec.stop_profile().ok_or_else(|| {
        Error::Profile("internal: the profile was switched off during the run".into())
    })?;
    let peak_rss = machine::peak_rss().filter(|_| rss_reset);
    let program = exec.program();
    let busy_decode: Vec<u64> = profile
        .busy_ns
        .iter()
        .zip(busy_prefill.iter().chain(std::iter::repeat(&0)))
        .map(|(end, pre)| end.saturating_sub(*pre))
        .collect();
    let allocations = match allocations {
        Some(count) => json!({
            "decode_steps": steps,
            "count": count,
            "per_token": count as f64 / (steps * batch) as f64,
            "how": "a counting global allocator, every thread, during the profiled decode steps",
        }),
        None => json!({
            "decode_steps": steps,
            "count": null,
            "per_token": null,
            "how": "not counted: this process's global allocator is not bitnetc's counting one",
        }),
    };
    let report = json!({
        "format": baseline::FORMAT,
        "model": model.display().to_string(),
        "threads": threads,
        "prompt_len": prompt_len,
        "steps": steps,
        "batch": batch,
        "program": {"launches": program_launches, "kernels": program.kernels.len()},
        "labels": program.launches.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(),
        "memory": {
            "arena_bytes": exec.arena_bytes(),
            "kv_bytes": exec.kv_slot_bytes(),
            "weights_bytes": exec.weight_bytes(),
            "weights": if exec.weights_mapped() { "mapped" } else { "owned" },
            "peak_rss_bytes": peak_rss,
            "allocations": allocations,
        },
        "phases": {
            "prefill": report::phase(program, &profile, "prefill", &busy_prefill),
            "decode": report::phase(program, &profile, "decode", &busy_decode),
        },
        "dropped_events": profile.dropped,
    });
    let trace = settings.trace.then(|| {
        let title = format!("bitnetc profile {}", model.display());
        trace::chrome_trace(program, &profile, &title)
    });
    Ok(Measured { report, trace })
}
