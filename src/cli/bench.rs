//! `bitnetc bench`: how fast a model runs on this machine, and what it gains over the same model
//! compiled with full-precision weights, measured in the same run.
//!
//! For each build (ours; then the baseline, `CpuOptions::full_precision`) it measures the compile
//! time, the weight bytes, prefill of `--prompt-len` tokens (the faster of `--repeat` runs), greedy
//! decode of `--steps` tokens after it (tokens per second and per-token latency percentiles) and the
//! peak resident memory while the build was loaded and ran. The machine's read bandwidth, measured
//! first, gives the decode ceiling: bandwidth ÷ weight bytes read per token. With `--batch`, the
//! main build's decode is also measured with several sequences per step (`bench_batch`).
//!
//! With the full-precision baseline, both builds also score a fixed set of ids (`ACCURACY_WINDOWS`
//! windows of up to `ACCURACY_WINDOW` deterministic pseudo-random ids, the second half of each
//! scored, as `validate` scores a text): the mean `KL(P_full ‖ P_ours)` and how often both put the
//! same token first, the accuracy cost of the build's lossy choices (`--head-dtype`, int8
//! activations) next to its speed.

use super::bench_batch::{BatchResult, measure_batches, print_batches};
use super::progress::Progress;
use anyhow::{Context, Result, bail};
use bitnet_backends::cpu::HeadDtype;
use bitnet_frontend::model::PostQuantize;
use bitnetc::machine;
use bitnetc::speed::percentile_ms;
use bitnetc::validate::score::{Scores, Windows, score};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The arguments of `bitnetc bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The model (HF folder, .gguf, .onnx) or a compiled artifact (.bnx).
    #[arg(required_unless_present = "preset", conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// Benchmark a synthetic checkpoint with these shapes instead (generated once, deterministically,
    /// into the user's cache folder).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(bitnet_frontend::synth::PRESETS.iter().copied()))]
    pub preset: Option<String>,
    /// Threads (default: every core).
    #[arg(long, value_parser = super::flags::threads)]
    pub threads: Option<usize>,
    /// Prompt length for the prefill measurement.
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// Decode steps measured after the prefill.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// Prefill and decode runs per build (the fastest prefill counts; decode latencies pool).
    #[arg(long, default_value_t = 2)]
    pub repeat: usize,
    /// Also measure decode with this many sequences sharing each step (comma-separated sizes,
    /// e.g. `1,4,8,16`): aggregate tokens per second, what `bitnetc serve` gets from batching.
    #[arg(long, value_delimiter = ',')]
    pub batch: Vec<usize>,
    /// Skip the full-precision baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub precision: super::flags::PrecisionArgs,
    /// Where to run: `cpu` (the default) or `cuda` (CUDA device 0: prefill, decode with and without
    /// the CUDA graph, each ternary matmul kernel against the device's copy bandwidth; needs the
    /// `cuda-runtime` feature for `--target cuda` artifacts, `cuda` for models and presets).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub backend: String,
}

impl BenchArgs {
    /// The audit record's kind (`run`) and what it says before the command runs.
    pub fn audit(&self) -> (&'static str, serde_json::Value) {
        (
            "run",
            serde_json::json!({
                "command": "bench",
                "model": self.model.as_ref().map(|m| m.display().to_string()),
                "flags": {
                    "preset": self.preset,
                    "precision": self.precision.audit(),
                    "threads": self.threads,
                    "prompt_len": self.prompt_len,
                    "steps": self.steps,
                    "repeat": self.repeat,
                    "batch": self.batch,
                    "no_baseline": self.no_baseline,
                    "backend": self.backend,
                },
            }),
        )
    }
}

/// What one build measured.
struct BuildResult {
    name: String,
    /// Whether the build runs ternary projections (false: a dense model).
    ternary: bool,
    compile: Duration,
    weight_bytes: u64,
    read_per_token: u64,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    /// Per-token decode latencies, sorted.
    latencies: Vec<Duration>,
    peak_rss: Option<u64>,
    /// Batched decode, per `--batch` size (the main build only).
    batches: Vec<BatchResult>,
    /// The scores of the accuracy ids (kept, or compared with the kept ones), when asked.
    scores: Option<Scores>,
}

/// Windows of ids the accuracy comparison scores.
const ACCURACY_WINDOWS: usize = 4;
/// Ids per accuracy window (at most; the context bounds it).
const ACCURACY_WINDOW: usize = 64;

/// How a build takes part in the accuracy comparison.
enum Accuracy<'a> {
    /// Not at all.
    Skip,
    /// Scores the ids and keeps its logits (the build compared with).
    Keep,
    /// Scores the ids against kept scores.
    Against(&'a Scores),
}

/// The accuracy ids for a vocabulary of `vocab` in a context of `context` (none below 8 tokens):
/// xorshift64 from a fixed seed, the same on every run and machine.
fn accuracy_windows(vocab: u64, context: u64) -> Option<Windows> {
    let window = (context as usize).min(ACCURACY_WINDOW);
    if window < 8 || vocab == 0 {
        return None;
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let ids: Vec<u32> = (0..ACCURACY_WINDOWS * window)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab) as u32
        })
        .collect();
    Windows::cut(&ids, window, ACCURACY_WINDOWS, None, "the accuracy ids").ok()
}

impl BuildResult {
    fn percentile(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies, p)
    }

    fn json(&self, bandwidth: f64) -> serde_json::Value {
        let ceiling = bandwidth / self.read_per_token as f64;
        serde_json::json!({
            "build": self.name,
            "compile_s": self.compile.as_secs_f64(),
            "weight_bytes": self.weight_bytes,
            "read_bytes_per_token": self.read_per_token,
            "prefill_tok_s": self.prefill_tok_s,
            "decode_tok_s": self.decode_tok_s,
            "latency_ms": {"p50": self.percentile(50.0), "p95": self.percentile(95.0), "p99": self.percentile(99.0)},
            "peak_rss_bytes": self.peak_rss,
            "ceiling_tok_s": ceiling,
            "fraction_of_ceiling": self.decode_tok_s / ceiling,
            "batches": self.batches.iter().map(|b| b.json(self.batches.iter().find(|o| o.batch == 1))).collect::<Vec<_>>(),
        })
    }
}

/// Runs the command; adds the results to `audit`.
pub fn run(args: &BenchArgs, audit: &mut serde_json::Value) -> Result<ExitCode> {
    if args.prompt_len == 0 || args.steps == 0 || args.repeat == 0 {
        bail!("--prompt-len, --steps and --repeat must be at least 1");
    }
    let threads = match args.threads {
        Some(0) => bail!("--threads 0: give at least 1"),
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let model = match (&args.model, &args.preset) {
        (Some(m), _) => m.clone(),
        (None, Some(p)) => super::preset::checkpoint(p)?,
        (None, None) => bail!("give a model or --preset NAME"),
    };
    audit["model"] = model.display().to_string().into();
    if args.backend == "cuda" {
        return cuda(args, &model, audit);
    }
    let context = (args.prompt_len + args.steps + 1) as u64;
    let bandwidth = machine::read_bandwidth(1 << 30, threads, 3);
    let main = Build {
        name: "bitnet".into(),
        full_precision: false,
        dense: args.precision.dense_dtype,
    };
    let artifact = bitnet_runtime::artifact::is_artifact(&model);
    let compare = !args.no_baseline && !artifact;
    let keep = if compare {
        Accuracy::Keep
    } else {
        Accuracy::Skip
    };
    let mut builds = vec![measure(&model, &main, threads, context, args, keep)?];
    if !builds[0].ternary {
        builds[0].name = format!("dense-{}", args.precision.dense_dtype.name());
    }
    if compare {
        if builds[0].ternary {
            let base = Build {
                name: "full-precision".into(),
                full_precision: true,
                dense: HeadDtype::Auto,
            };
            let kept = builds[0].scores.take();
            let against = kept.as_ref().map_or(Accuracy::Skip, Accuracy::Against);
            builds.push(measure(&model, &base, threads, context, args, against)?);
        } else {
            // A dense model has no full-precision baseline apart from itself: measure its dense
            // paths (bf16 and int8 weights) instead, besides the one asked for.
            for dense in [HeadDtype::Bf16, HeadDtype::I8] {
                if dense != args.precision.dense_dtype {
                    let build = Build {
                        name: format!("dense-{}", dense.name()),
                        full_precision: false,
                        dense,
                    };
                    builds.push(measure(
                        &model,
                        &build,
                        threads,
                        context,
                        args,
                        Accuracy::Skip,
                    )?);
                }
            }
        }
    }
    let mut report = serde_json::json!({
        "model": model.display().to_string(),
        "preset": args.preset,
        "threads": threads,
        "head_dtype": args.precision.head_dtype.name(),
        "dense_dtype": args.precision.dense_dtype.name(),
        "quantize": args.precision.quantize.map(PostQuantize::name),
        "context": context,
        "prompt_len": args.prompt_len,
        "steps": args.steps,
        "read_bandwidth_gb_s": bandwidth / 1e9,
        "builds": builds.iter().map(|b| b.json(bandwidth)).collect::<Vec<_>>(),
    });
    if let [ours, base] = builds.as_slice()
        && ours.ternary
    {
        report["vs_full_precision"] = serde_json::json!({
            "decode_speedup": ours.decode_tok_s / base.decode_tok_s,
            "prefill_speedup": ours.prefill_tok_s / base.prefill_tok_s,
            "weight_memory_reduction": base.weight_bytes as f64 / ours.weight_bytes as f64,
            "peak_rss_reduction": match (ours.peak_rss, base.peak_rss) {
                (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64),
                _ => None,
            },
        });
        if let Some(s) = base.scores.as_ref().filter(|s| !s.kl.is_empty()) {
            let n = s.kl.len() as f64;
            report["vs_full_precision"]["accuracy"] = serde_json::json!({
                "positions": s.kl.len(),
                "windows": ACCURACY_WINDOWS,
                "mean_kl": s.kl.iter().sum::<f64>() / n,
                "max_kl": s.kl.iter().copied().fold(0f64, f64::max),
                "same_top1": s.same_top1.iter().filter(|&&b| b).count() as f64 / n,
            });
        }
    }
    audit["bench"] = report.clone();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, &builds, bandwidth);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--preset` checkpoints, under the name `validate` uses (they live in `super::preset`).
pub use super::preset::checkpoint as preset_checkpoint;

/// One build to measure.
struct Build {
    name: String,
    /// The full-precision baseline (`CpuOptions::full_precision`).
    full_precision: bool,
    /// How dense projections store their weights.
    dense: HeadDtype,
}

/// Compiles (or loads) `model` as `build` says and measures it.
fn measure(
    model: &Path,
    build: &Build,
    threads: usize,
    context: u64,
    args: &BenchArgs,
    accuracy: Accuracy,
) -> Result<BuildResult> {
    let name = build.name.clone();
    let rss_reset = machine::reset_peak_rss();
    let mut options = bitnetc::Options {
        context: Some(context),
        ..bitnetc::Options::default()
    };
    options.cpu.threads = threads;
    options.cpu.full_precision = build.full_precision;
    if !build.full_precision {
        args.precision.apply(&mut options);
        options.cpu.dense = build.dense;
    }
    let progress = Progress::start(model);
    options.on_stage = Some(progress.stage_callback());
    let start = Instant::now();
    let compiled = bitnetc::compile(model, &options)
        .with_context(|| format!("{} ({name} build)", model.display()));
    progress.finish();
    let compiled = compiled?;
    let compile = start.elapsed();
    let weight_bytes = compiled.weight_bytes;
    let ternary = compiled.runs_ternary_projections();
    let read_per_token = compiled.read_bytes_per_token();
    // The measured ids need no text, so no tokenizer is built.
    let mut session = compiled.token_session();
    let speed = bitnetc::speed::measure(&mut session, args.prompt_len, args.steps, args.repeat)?;
    let batches = if build.full_precision || args.batch.is_empty() {
        Vec::new()
    } else {
        measure_batches(
            session
                .executor()
                .context("batched decode is measured on the CPU executor")?,
            &args.batch,
            args.prompt_len,
            args.steps,
            args.repeat,
        )
        .with_context(|| format!("{} ({name} build, batched decode)", model.display()))?
    };
    let peak_rss = machine::peak_rss().filter(|_| rss_reset);
    let windows = accuracy_windows(session.vocab(), context);
    let scores = match (&accuracy, windows) {
        (Accuracy::Skip, _) | (_, None) => None,
        (Accuracy::Keep, Some(w)) => Some(score(&mut session, &w, true, None)?),
        (Accuracy::Against(kept), Some(w)) => Some(score(&mut session, &w, false, Some(kept))?),
    };
    Ok(BuildResult {
        name,
        ternary,
        compile,
        weight_bytes,
        read_per_token,
        prefill_tok_s: speed.prefill_tok_s(),
        decode_tok_s: speed.decode_tok_s(),
        latencies: speed.latencies,
        peak_rss,
        batches,
        scores,
    })
}

fn print_table(report: &serde_json::Value, builds: &[BuildResult], bandwidth: f64) {
    println!(
        "model {}  threads {}  head {}  dense {}{}  context {}  read bandwidth {:.1} GB/s",
        report["model"].as_str().unwrap_or(""),
        report["threads"],
        report["head_dtype"].as_str().unwrap_or(""),
        report["dense_dtype"].as_str().unwrap_or(""),
        report["quantize"]
            .as_str()
            .map_or(String::new(), |q| format!("  quantize {q} (lossy)")),
        report["context"],
        bandwidth / 1e9
    );
    println!(
        "{:<15} {:>9} {:>12} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "build",
        "compile",
        "weights",
        "read/token",
        "prefill",
        "decode",
        "P50",
        "P95",
        "P99",
        "peak RSS",
        "ceiling"
    );
    for b in builds {
        let ceiling = bandwidth / b.read_per_token as f64;
        println!(
            "{:<15} {:>8.1}s {:>9.1} MB {:>9.1} MB {:>6.1} t/s {:>6.1} t/s {:>6.1} ms {:>6.1} ms {:>6.1} ms {:>10} {:>4.0}% of {:.1}",
            b.name,
            b.compile.as_secs_f64(),
            b.weight_bytes as f64 / 1e6,
            b.read_per_token as f64 / 1e6,
            b.prefill_tok_s,
            b.decode_tok_s,
            b.percentile(50.0),
            b.percentile(95.0),
            b.percentile(99.0),
            b.peak_rss.map_or_else(
                || "n/a".to_string(),
                |r| format!("{:.1} MB", r as f64 / 1e6)
            ),
            100.0 * b.decode_tok_s / ceiling,
            ceiling
        );
    }
    for b in builds.iter().filter(|b| !b.batches.is_empty()) {
        println!("batched decode ({}): sequences sharing each step", b.name);
        print_batches(&b.batches);
    }
    if let Some(r) = report.get("vs_full_precision") {
        println!(
            "vs full precision: decode {:.2}x faster, prefill {:.2}x, weights {:.2}x smaller, peak RSS {}",
            r["decode_speedup"].as_f64().unwrap_or(f64::NAN),
            r["prefill_speedup"].as_f64().unwrap_or(f64::NAN),
            r["weight_memory_reduction"].as_f64().unwrap_or(f64::NAN),
            r["peak_rss_reduction"]
                .as_f64()
                .map_or_else(|| "n/a".to_string(), |x| format!("{x:.2}x smaller")),
        );
        let a = &r["accuracy"];
        if a.is_object() {
            println!(
                "accuracy vs full precision (head {}; {} positions of {} windows of fixed ids): mean KL {:.5}, max KL {:.5}, same top-1 {:.1}%",
                report["head_dtype"].as_str().unwrap_or(""),
                a["positions"],
                a["windows"],
                a["mean_kl"].as_f64().unwrap_or(f64::NAN),
                a["max_kl"].as_f64().unwrap_or(f64::NAN),
                100.0 * a["same_top1"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
}

#[cfg(feature = "cuda-runtime")]
fn cuda(args: &BenchArgs, model: &Path, audit: &mut serde_json::Value) -> Result<ExitCode> {
    let bench = super::bench_cuda::CudaBench {
        prompt_len: args.prompt_len,
        steps: args.steps,
        repeat: args.repeat,
        json: args.json,
    };
    super::bench_cuda::run(&bench, model, audit)
}

#[cfg(not(feature = "cuda-runtime"))]
fn cuda(_args: &BenchArgs, _model: &Path, _audit: &mut serde_json::Value) -> Result<ExitCode> {
    bail!(
        "--backend cuda: this bitnetc is built without the CUDA runtime (build it with --features cuda-runtime, or cuda to compile models too)"
    )
}
