//! `bitnetc profile`: where the time of one prefill and the decode steps after it goes, launch by
//! launch, with the memory the model holds, a Chrome trace (`--trace`), and a regression check
//! against a saved profile (`--save`, `--baseline`; exit 1 when something got slower).
//!
//! The model is compiled (or its artifact loaded) as `bench` does; after a warm-up step, the
//! executor's profile (`Executor::start_profile`, event buffers sized for the run) records one
//! prefill of `--prompt-len` tokens and `--steps` greedy decode steps. The binary's counting
//! allocator (`alloc_count`) counts the heap allocations of every thread during the decode steps.
//! The report is `report`'s, the trace `trace`'s, the comparison `baseline`'s.

pub mod baseline;
mod report;
mod trace;

use super::alloc_count::count_allocations;
use super::audit_log::input_digests;
use super::output::write_atomic;
use super::progress::Progress;
use anyhow::{Context, Result, bail};
use bitnet_runtime::executor::{PlantedDelay, ProfileOptions};
use bitnet_runtime::sampling::{Rng, argmax};
use bitnetc::machine;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The arguments of `bitnetc profile`.
#[derive(clap::Args, Debug)]
pub struct ProfileArgs {
    /// The model (HF folder, .gguf, .onnx) or a compiled artifact (.bnx).
    #[arg(required_unless_present = "preset", conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// Profile a synthetic checkpoint with these shapes instead (as `bench --preset`).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(bitnet_frontend::synth::PRESETS.iter().copied()))]
    pub preset: Option<String>,
    /// Threads (default: every core).
    #[arg(long, value_parser = crate::cli::flags::threads)]
    pub threads: Option<usize>,
    /// Tokens of the profiled prefill.
    #[arg(long, default_value_t = 64)]
    pub prompt_len: usize,
    /// Greedy decode steps profiled after it.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// Write the profiled steps as a Chrome trace (JSON) that Perfetto and chrome://tracing open.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<PathBuf>,
    /// Save the profile (JSON) for a later `--baseline`.
    #[arg(long, value_name = "PATH")]
    pub save: Option<PathBuf>,
    /// Compare against a saved profile; exit 1 when a step, kernel group or layer got slower by
    /// more than --threshold (and by at least 1% of the baseline's step time).
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// The slowdown that counts as a regression, a fraction of the baseline's time (0.10: 10%).
    #[arg(long, default_value_t = 0.10)]
    pub threshold: f64,
    /// Replace the --trace and --save files if they exist (otherwise an existing file is an error).
    #[arg(long)]
    pub force: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// For testing the regression check: every launch whose label contains LABEL sleeps MICROS
    /// microseconds more (only while profiling).
    #[arg(long, value_name = "LABEL:MICROS", hide = true, value_parser = parse_plant)]
    pub plant_delay: Option<(String, u64)>,
    #[command(flatten)]
    pub precision: super::flags::PrecisionArgs,
}

/// Parses `LABEL:MICROS` (the label may itself hold colons; the last one splits).
fn parse_plant(s: &str) -> Result<(String, u64), String> {
    let (label, micros) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected LABEL:MICROS"))?;
    let micros = micros
        .parse()
        .map_err(|e| format!("{micros:?}: not a number of microseconds: {e}"))?;
    Ok((label.to_string(), micros))
}

impl ProfileArgs {
    /// The audit record's kind (`run`) and what it says before the command runs.
    pub fn audit(&self) -> (&'static str, serde_json::Value) {
        (
            "run",
            json!({
                "command": "profile",
                "inputs": self.model.as_deref().map_or(serde_json::Value::Null, input_digests),
                "model": self.model.as_ref().map(|m| m.display().to_string()),
                "flags": {
                    "preset": self.preset,
                    "precision": self.precision.audit(),
                    "threads": self.threads,
                    "prompt_len": self.prompt_len,
                    "steps": self.steps,
                    "trace": self.trace,
                    "save": self.save,
                    "baseline": self.baseline,
                    "threshold": self.threshold,
                    "plant_delay": self.plant_delay,
                },
            }),
        )
    }
}

/// A profiled run: the report (what `--json` prints and `--save` writes) and, when asked, the
/// Chrome trace.
pub struct Measured {
    /// The report.
    pub report: serde_json::Value,
    /// The trace, when asked for.
    pub trace: Option<serde_json::Value>,
}

/// Compiles (or loads) `model` with `options` (its context is set here), and profiles one prefill
/// of `prompt_len` tokens and `steps` greedy decode steps (see the module doc).
pub fn measure(
    model: &std::path::Path,
    mut options: bitnetc::Options,
    prompt_len: usize,
    steps: usize,
    plant: Option<PlantedDelay>,
    want_trace: bool,
) -> Result<Measured> {
    let rss_reset = machine::reset_peak_rss();
    options.context = Some((prompt_len + steps + 1) as u64);
    let threads = options.cpu.threads;
    let compiled = bitnetc::compile(model, &options).with_context(|| model.display().to_string());
    let mut exec = compiled?.into_executor();
    let program_launches = exec.program().launches.len();
    let vocab = exec.program().vocab;
    let mut rng = Rng::new(0);
    // Ids from the upper part of the vocabulary, clear of the special tokens at its start.
    let prompt: Vec<i64> = (0..prompt_len)
        .map(|_| (vocab / 2 + rng.next_u64() % (vocab - vocab / 2)) as i64)
        .collect();
    // Warm-up: the first step touches the arena, the cache and the pool's threads.
    let first = argmax(exec.forward_last(&prompt, 0)?);
    exec.forward_last(&[i64::from(first)], prompt.len() as u64)?;
    exec.reset();
    exec.start_profile(&ProfileOptions {
        launch_events: program_launches * (steps + 1),
        step_events: steps + 1,
        plant,
    });
    let mut next = argmax(exec.forward_last(&prompt, 0)?);
    let busy_prefill = exec
        .profile()
        .map(|p| p.busy_ns.clone())
        .unwrap_or_default();
    let (decoded, allocations) = count_allocations(|| -> Result<()> {
        for pos in prompt.len()..prompt.len() + steps {
            next = argmax(exec.forward_last(&[i64::from(next)], pos as u64)?);
        }
        Ok(())
    });
    decoded?;
    let profile = exec
        .stop_profile()
        .context("internal: the profile was switched off during the run")?;
    let peak_rss = machine::peak_rss().filter(|_| rss_reset);
    let program = exec.program();
    let busy_decode: Vec<u64> = profile
        .busy_ns
        .iter()
        .zip(busy_prefill.iter().chain(std::iter::repeat(&0)))
        .map(|(end, pre)| end.saturating_sub(*pre))
        .collect();
    let report = json!({
        "format": baseline::FORMAT,
        "model": model.display().to_string(),
        "threads": threads,
        "prompt_len": prompt_len,
        "steps": steps,
        "program": {"launches": program_launches, "kernels": program.kernels.len()},
        "labels": program.launches.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(),
        "memory": {
            "arena_bytes": exec.arena_bytes(),
            "kv_bytes": exec.kv_slot_bytes(),
            "weights_bytes": exec.weight_bytes(),
            "weights": if exec.weights_mapped() { "mapped" } else { "owned" },
            "peak_rss_bytes": peak_rss,
            "allocations": {
                "decode_steps": steps,
                "count": allocations,
                "per_token": allocations as f64 / steps as f64,
                "how": "the bitnetc binary's counting global allocator, every thread, during the profiled decode steps",
            },
        },
        "phases": {
            "prefill": report::phase(program, &profile, "prefill", &busy_prefill),
            "decode": report::phase(program, &profile, "decode", &busy_decode),
        },
        "dropped_events": profile.dropped,
    });
    let trace = want_trace.then(|| {
        let title = format!("bitnetc profile {}", model.display());
        trace::chrome_trace(program, &profile, &title)
    });
    Ok(Measured { report, trace })
}

/// Runs the command; adds the results to `audit`. Exit 1 when `--baseline` finds a regression.
pub fn run(args: &ProfileArgs, audit: &mut serde_json::Value) -> Result<ExitCode> {
    if args.prompt_len == 0 || args.steps == 0 {
        bail!("--prompt-len and --steps must be at least 1");
    }
    if !(args.threshold.is_finite() && args.threshold >= 0.0) {
        bail!(
            "--threshold {}: give a fraction of at least 0 (0.10 is 10%)",
            args.threshold
        );
    }
    for path in [&args.trace, &args.save].into_iter().flatten() {
        if !args.force && path.exists() {
            bail!(
                "{}: already exists (bitnetc does not overwrite files; --force replaces it)",
                path.display()
            );
        }
    }
    let threads = match args.threads {
        Some(0) => bail!("--threads 0: give at least 1"),
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let base = args.baseline.as_deref().map(baseline::read).transpose()?;
    let model = match (&args.model, &args.preset) {
        (Some(m), _) => m.clone(),
        (None, Some(p)) => super::preset::checkpoint(p)?,
        (None, None) => bail!("give a model or --preset NAME"),
    };
    audit["model"] = model.display().to_string().into();
    let plant = args
        .plant_delay
        .as_ref()
        .map(|(label, micros)| PlantedDelay {
            label: label.clone(),
            delay: Duration::from_micros(*micros),
        });
    let mut options = bitnetc::Options::default();
    options.cpu.threads = threads;
    args.precision.apply(&mut options);
    let progress = Progress::start(&model);
    options.on_stage = Some(progress.stage_callback());
    let measured = measure(
        &model,
        options,
        args.prompt_len,
        args.steps,
        plant,
        args.trace.is_some(),
    );
    progress.finish();
    let Measured { mut report, trace } = measured?;
    if let (Some(path), Some(trace)) = (&args.trace, &trace) {
        write_atomic(path, serde_json::to_string(trace)?.as_bytes(), args.force)?;
        eprintln!("; wrote the trace to {}", path.display());
    }
    if let Some(path) = &args.save {
        write_atomic(
            path,
            serde_json::to_string_pretty(&report)?.as_bytes(),
            args.force,
        )?;
        eprintln!("; saved the profile to {}", path.display());
    }
    let regressions = match (&base, &args.baseline) {
        (Some(base), Some(path)) => Some(baseline::compare(&report, base, path, args.threshold)?),
        _ => None,
    };
    if let Some(found) = &regressions {
        report["regressions"] = found.iter().map(baseline::Regression::json).collect();
    }
    audit["profile"] = json!({
        "memory": report["memory"],
        "prefill_step_ms": report["phases"]["prefill"]["step"]["mean_ms"],
        "decode_step_ms": report["phases"]["decode"]["step"]["mean_ms"],
        "regressions": report.get("regressions"),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report::print_table(&report, 12);
    }
    match regressions {
        Some(found) if !found.is_empty() => {
            eprintln!(
                "regressions against {} (threshold {:.0}%):",
                args.baseline
                    .as_deref()
                    .map_or(String::new(), |p| p.display().to_string()),
                100.0 * args.threshold
            );
            for r in &found {
                eprintln!("  {}", r.line());
            }
            Ok(ExitCode::FAILURE)
        }
        Some(_) => {
            eprintln!(
                "no regression against the baseline (threshold {:.0}%)",
                100.0 * args.threshold
            );
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
