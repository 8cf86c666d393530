//! `bitnetc profile`: where the time of one prefill and the decode steps after it goes, launch by
//! launch, with the memory the model holds, a Chrome trace (`--trace`), and a regression check
//! against a saved profile (`--save`, `--baseline`; exit 1 when something got slower).
//!
//! The measuring is the library's (`bitnetc::profile`, which the module doc there describes);
//! this module reads the flags, writes the files, prints the table (`table`) and says whether the
//! run regressed.

mod table;

use super::output::write_atomic;
use super::progress::Progress;
use anyhow::{Context, Result, bail};
use bitnet_runtime::executor::PlantedDelay;
use bitnetc::profile::{Measured, ProfileSettings, baseline, profile};
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
    /// Sequences sharing each profiled decode step (a batched step, as `serve` runs with that
    /// many active requests); the prefill profiled is the first sequence's.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
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
                "model": self.model.as_ref().map(|m| m.display().to_string()),
                "flags": {
                    "preset": self.preset,
                    "precision": self.precision.audit(),
                    "threads": self.threads,
                    "prompt_len": self.prompt_len,
                    "steps": self.steps,
                    "batch": self.batch,
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

/// Runs the command; adds the results to `audit`. Exit 1 when `--baseline` finds a regression.
pub fn run(args: &ProfileArgs, audit: &mut serde_json::Value) -> Result<ExitCode> {
    if args.prompt_len == 0 || args.steps == 0 || args.batch == 0 {
        bail!("--prompt-len, --steps and --batch must be at least 1");
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
    let settings = ProfileSettings {
        compile: options,
        prompt_len: args.prompt_len,
        steps: args.steps,
        batch: args.batch,
        plant,
        trace: args.trace.is_some(),
    };
    let measured = profile(&model, &settings);
    progress.finish();
    let Measured { mut report, trace } = measured.with_context(|| model.display().to_string())?;
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
        (Some(base), Some(path)) => Some(baseline::annotate(
            &mut report,
            base,
            &path.display().to_string(),
            args.threshold,
        )?),
        _ => None,
    };
    audit["profile"] = json!({
        "memory": report["memory"],
        "prefill_step_ms": report["phases"]["prefill"]["step"]["mean_ms"],
        "decode_step_ms": report["phases"]["decode"]["step"]["mean_ms"],
        "regressions": report.get("regressions"),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        table::print_table(&report, 12);
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
