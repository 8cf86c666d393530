//! `bitnetc validate`: one report on whether a compiled model is good enough to ship (memory,
//! speed and accuracy against a reference measured in the same run), judged by gates; exit 1
//! when a gate fails, so a build pipeline can stop on it. The measuring is `bitnetc::validate`'s;
//! this module holds the flags, the table and the audit record.

use super::progress::Progress;
use anyhow::{Context, Result, bail};
use bitnetc::validate::{Gates, Reference, Report, ValidateOptions, gates::Bound};
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc validate`.
#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// The model (HF folder, .gguf, .onnx) or a compiled artifact (.bnx, with --reference).
    #[arg(required_unless_present = "preset", conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// Validate a synthetic checkpoint with these shapes instead (as `bench --preset`; it carries
    /// no tokenizer: give --tokenizer).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(bitnet_frontend::synth::PRESETS.iter().copied()))]
    pub preset: Option<String>,
    /// The reference: `full` (the same model compiled with full-precision weights) or a model
    /// with the same vocabulary.
    #[arg(long, default_value = "full")]
    pub reference: String,
    /// The text to score (UTF-8); default: Genesis 1-3 of the King James Version, built in.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// A tokenizer for models that carry none (tokenizer.json, or a .gguf with a vocabulary).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// A JSON file of gate thresholds overriding the defaults (`null` turns one off).
    #[arg(long)]
    pub gates: Option<PathBuf>,
    /// Tokens per scored window (the second half of each is scored).
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// At most this many windows of the text.
    #[arg(long, default_value_t = 4)]
    pub windows: usize,
    /// Prompt length of the speed measurement.
    #[arg(long, default_value_t = 64)]
    pub prompt_len: usize,
    /// Decode steps of the speed measurement.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Speed measurement runs per build (the fastest prefill counts; decode steps pool).
    #[arg(long, default_value_t = 2)]
    pub repeat: usize,
    /// Threads (default: every core).
    #[arg(long, value_parser = super::flags::threads)]
    pub threads: Option<usize>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub precision: super::flags::PrecisionArgs,
}

impl ValidateArgs {
    /// The audit record's kind (`run`) and what it says before the command runs.
    pub fn audit(&self) -> (&'static str, serde_json::Value) {
        (
            "run",
            serde_json::json!({
                "command": "validate",
                "model": self.model.as_ref().map(|m| m.display().to_string()),
                "flags": {
                    "preset": self.preset,
                    "reference": self.reference,
                    "text": self.text.as_ref().map(|p| p.display().to_string()),
                    "tokenizer": self.tokenizer.as_ref().map(|p| p.display().to_string()),
                    "gates": self.gates.as_ref().map(|p| p.display().to_string()),
                    "window": self.window,
                    "windows": self.windows,
                    "precision": self.precision.audit(),
                    "threads": self.threads,
                },
            }),
        )
    }
}

/// Runs the command; adds the report to `audit`.
pub fn run(args: &ValidateArgs, audit: &mut serde_json::Value) -> Result<ExitCode> {
    let model = match (&args.model, &args.preset) {
        (Some(m), _) => m.clone(),
        (None, Some(p)) => super::bench::preset_checkpoint(p)?,
        (None, None) => bail!("give a model or --preset NAME"),
    };
    let mut options = ValidateOptions {
        compile: args.precision.run_options(None, args.threads)?,
        reference: match args.reference.as_str() {
            "full" => Reference::FullPrecision,
            path => Reference::Model(PathBuf::from(path)),
        },
        tokenizer: args.tokenizer.clone(),
        window: args.window,
        windows: args.windows,
        prompt_len: args.prompt_len,
        steps: args.steps,
        repeat: args.repeat,
        ..ValidateOptions::default()
    };
    if let Some(path) = &args.text {
        options.text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the text {}", path.display()))?;
        options.text_source = path.display().to_string();
    }
    if let Some(path) = &args.gates {
        options.gates = Gates::from_file(path)?;
    }
    let progress = Progress::start(&model);
    options.compile.on_stage = Some(progress.stage_callback());
    let report = bitnetc::validate::validate(&model, &options);
    progress.finish();
    let report = report.with_context(|| format!("validating {}", model.display()))?;
    let json = report.json();
    audit["validate"] = json.clone();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_report(&report);
    }
    Ok(if report.pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn print_report(r: &Report) {
    println!(
        "model {}  reference {} ({})",
        r.model.source.display(),
        r.reference.source.display(),
        r.reference_kind
    );
    println!(
        "text {}: {} tokens; {} windows of {}, {} positions scored",
        r.text_source, r.text_tokens, r.windows, r.window, r.scored
    );
    println!(
        "{:<10} {:>9} {:>11} {:>14} {:>11} {:>11} {:>10} {:>11} {:>11} {:>10}",
        "build",
        "compile",
        "weights",
        "projections",
        "arena",
        "KV cache",
        "peak RSS",
        "prefill",
        "decode",
        "PPL"
    );
    for b in [&r.model, &r.reference] {
        println!(
            "{:<10} {:>8.1}s {:>11} {:>14} {:>11} {:>11} {:>10} {:>7.1} t/s {:>7.1} t/s {:>10.3}",
            b.name,
            b.compile.as_secs_f64(),
            mb(b.weight_bytes),
            if b.projection_master_bytes == 0 {
                "-".to_string()
            } else {
                mb(b.projection_stored_bytes)
            },
            mb(b.arena_bytes),
            mb(b.kv_bytes),
            b.peak_rss.map_or_else(|| "n/a".to_string(), mb),
            b.speed.prefill_tok_s(),
            b.speed.decode_tok_s(),
            b.perplexity
        );
    }
    println!(
        "accuracy: KL(reference ‖ model) mean {:.6}, p99 {:.6}, max {:.6}; same top-1 {:.2}%",
        r.kl_mean,
        r.kl_p99,
        r.kl_max,
        100.0 * r.same_top1
    );
    println!("gates:");
    for v in &r.verdicts {
        let bound = match v.gate.bound {
            Bound::AtLeast => ">=",
            Bound::AtMost => "<=",
        };
        println!(
            "  {:<4} {:<32} {:>12} {bound} {:<10} {}",
            if v.pass { "pass" } else { "FAIL" },
            v.gate.name,
            v.value
                .map_or_else(|| "n/a".to_string(), |x| format!("{x}")),
            v.threshold,
            v.gate.what
        );
    }
    let failed: Vec<_> = r
        .verdicts
        .iter()
        .filter(|v| !v.pass)
        .map(|v| v.gate.name)
        .collect();
    if failed.is_empty() {
        println!("all gates pass");
    } else {
        println!("failed: {}", failed.join(", "));
    }
}
