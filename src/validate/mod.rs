//! `bitnetc validate`: whether a compiled model is good enough to ship, measured in one run against
//! a reference, and judged by gates a build pipeline can stop on.
//!
//! The model is compiled (or loaded) as asked; the reference is the same model compiled by
//! bitnetc with full-precision weights (`CpuOptions::full_precision`, no post-training
//! quantization: a ternary model's projections as bf16 dense matmuls on unquantized activations,
//! a dense model as it is), or another model with the same vocabulary. For each, one after the
//! other, it measures:
//! - memory: the weight bytes, the arena, one KV cache, and the peak resident memory while it
//!   compiled and ran the speed measurement (the model first, so its figure holds nothing of the
//!   reference's; the reference's includes the model's kept logits);
//! - speed: prefill and greedy decode tok/s (`crate::speed`);
//! - accuracy: perplexity on a text cut into windows (`score`), and, for the reference,
//!   per-position KL divergence against the model's distribution and top-1 agreement.
//!
//! The projection memory figure counts the projections the model runs ternary: their bf16
//! masters (2 bytes per weight) against the bytes they are stored in (packed weights and scales).

pub mod gates;
pub mod score;

use crate::machine;
use crate::speed::{self, Speed};
use crate::{Compiled, Error, Options};
use bitnet_runtime::tokenizer::Tokenizer;
pub use gates::{Gates, Verdict};
use score::{Scores, Windows};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The text `validate` scores unless given another: Genesis 1–3 of the King James Version (public
/// domain; `data/README.md`).
pub const DEFAULT_TEXT: &str = include_str!("../../data/kjv-genesis-1-3.txt");

/// What the model is measured against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// The same model compiled with full-precision weights.
    FullPrecision,
    /// Another model (HF folder, GGUF, ONNX or artifact) with the same vocabulary, compiled with
    /// the default options.
    Model(PathBuf),
}

/// How to validate.
#[derive(Clone, Debug)]
pub struct ValidateOptions {
    /// How the model is compiled (threads, precision flags; the context is set here).
    pub compile: Options,
    /// The reference.
    pub reference: Reference,
    /// The text scored.
    pub text: String,
    /// Where the text came from, for the report and errors.
    pub text_source: String,
    /// A tokenizer to use instead of the model's (`tokenizer.json` or a GGUF vocabulary), for
    /// models that carry none.
    pub tokenizer: Option<PathBuf>,
    /// Tokens per scored window.
    pub window: usize,
    /// At most this many windows.
    pub windows: usize,
    /// The speed measurement's prompt length, decode steps and repeats.
    pub prompt_len: usize,
    /// See `prompt_len`.
    pub steps: usize,
    /// See `prompt_len`.
    pub repeat: usize,
    /// The gates the report is judged by.
    pub gates: Gates,
}

impl Default for ValidateOptions {
    fn default() -> ValidateOptions {
        ValidateOptions {
            compile: Options::default(),
            reference: Reference::FullPrecision,
            text: DEFAULT_TEXT.to_string(),
            text_source: "built-in text (KJV Genesis 1-3)".into(),
            tokenizer: None,
            window: 256,
            windows: 4,
            prompt_len: 64,
            steps: 16,
            repeat: 2,
            gates: Gates::default(),
        }
    }
}

/// One build's figures.
#[derive(Clone, Debug)]
pub struct BuildReport {
    /// What it is (`model`, `reference`).
    pub name: &'static str,
    /// The file or folder it came from.
    pub source: PathBuf,
    /// Import and compile (or load) time.
    pub compile: Duration,
    /// Bytes of weights the program reads.
    pub weight_bytes: u64,
    /// bf16 bytes of the projections it runs ternary (0: none).
    pub projection_master_bytes: u64,
    /// The bytes those projections are stored in.
    pub projection_stored_bytes: u64,
    /// Arena bytes (activations and scratch).
    pub arena_bytes: u64,
    /// Bytes of one KV cache at the full context.
    pub kv_bytes: u64,
    /// Peak resident memory while it compiled and ran the speed measurement, where measurable.
    pub peak_rss: Option<u64>,
    /// Prefill and decode speed.
    pub speed: Speed,
    /// Perplexity on the text.
    pub perplexity: f64,
}

/// The whole report.
#[derive(Clone, Debug)]
pub struct Report {
    /// The model's figures.
    pub model: BuildReport,
    /// The reference's.
    pub reference: BuildReport,
    /// `full-precision` or `model`.
    pub reference_kind: &'static str,
    /// Where the text came from.
    pub text_source: String,
    /// Tokens in the text.
    pub text_tokens: usize,
    /// Tokens per window, windows scored, positions scored.
    pub window: usize,
    /// See `window`.
    pub windows: usize,
    /// See `window`.
    pub scored: usize,
    /// Mean, 99th percentile and largest `KL(reference ‖ model)` per scored position (nats).
    pub kl_mean: f64,
    /// See `kl_mean`.
    pub kl_p99: f64,
    /// See `kl_mean`.
    pub kl_max: f64,
    /// Share of scored positions whose top token is the reference's.
    pub same_top1: f64,
    /// The gates' verdicts.
    pub verdicts: Vec<Verdict>,
}

impl Report {
    /// A figure by gate name (`None`: not measurable in this run).
    pub fn figure(&self, gate: &str) -> Option<f64> {
        let (m, r) = (&self.model, &self.reference);
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        match gate {
            "min_projection_weight_reduction" => ratio(
                m.projection_master_bytes as f64,
                m.projection_stored_bytes as f64,
            ),
            "min_model_weight_reduction" => ratio(r.weight_bytes as f64, m.weight_bytes as f64),
            "min_decode_speedup" => ratio(m.speed.decode_tok_s(), r.speed.decode_tok_s()),
            "min_prefill_speedup" => ratio(m.speed.prefill_tok_s(), r.speed.prefill_tok_s()),
            "max_ppl_increase" => ratio(m.perplexity, r.perplexity).map(|x| x - 1.0),
            "max_kl_mean" => Some(self.kl_mean),
            "max_kl_p99" => Some(self.kl_p99),
            "max_kl_max" => Some(self.kl_max),
            "min_same_top1" => Some(self.same_top1),
            "max_peak_rss_bytes" => m.peak_rss.map(|b| b as f64),
            _ => None,
        }
    }

    /// Whether every gate passed.
    pub fn pass(&self) -> bool {
        self.verdicts.iter().all(|v| v.pass)
    }

    /// The report as JSON (`bitnetc validate --json`).
    pub fn json(&self) -> serde_json::Value {
        let figures: serde_json::Map<String, serde_json::Value> = gates::GATES
            .iter()
            .map(|g| {
                (
                    g.name
                        .trim_start_matches("min_")
                        .trim_start_matches("max_")
                        .to_string(),
                    self.figure(g.name).into(),
                )
            })
            .collect();
        serde_json::json!({
            "pass": self.pass(),
            "model": build_json(&self.model),
            "reference": build_json(&self.reference),
            "reference_kind": self.reference_kind,
            "text": {
                "source": self.text_source,
                "tokens": self.text_tokens,
                "window": self.window,
                "windows": self.windows,
                "scored": self.scored,
            },
            "accuracy": {
                "ppl": self.model.perplexity,
                "ppl_reference": self.reference.perplexity,
                "kl_mean": self.kl_mean,
                "kl_p99": self.kl_p99,
                "kl_max": self.kl_max,
                "same_top1": self.same_top1,
            },
            "figures": figures,
            "gates": self.verdicts.iter().map(|v| serde_json::json!({
                "gate": v.gate.name,
                "what": v.gate.what,
                "bound": match v.gate.bound { gates::Bound::AtLeast => ">=", gates::Bound::AtMost => "<=" },
                "threshold": v.threshold,
                "value": v.value,
                "pass": v.pass,
            })).collect::<Vec<_>>(),
        })
    }
}

fn build_json(b: &BuildReport) -> serde_json::Value {
    serde_json::json!({
        "source": b.source.display().to_string(),
        "compile_s": b.compile.as_secs_f64(),
        "weight_bytes": b.weight_bytes,
        "projection_master_bytes": b.projection_master_bytes,
        "projection_stored_bytes": b.projection_stored_bytes,
        "arena_bytes": b.arena_bytes,
        "kv_bytes": b.kv_bytes,
        "peak_rss_bytes": b.peak_rss,
        "prefill_tok_s": b.speed.prefill_tok_s(),
        "decode_tok_s": b.speed.decode_tok_s(),
        "ppl": b.perplexity,
    })
}

/// Validates the model at `path` as `options` say.
pub fn validate(path: &Path, options: &ValidateOptions) -> Result<Report, Error> {
    let o = options;
    if o.windows == 0 || o.prompt_len == 0 || o.steps == 0 || o.repeat == 0 {
        return Err(Error::Validate(
            "--windows, --prompt-len, --steps and --repeat must be at least 1".into(),
        ));
    }
    let context = (o.window as u64).max((o.prompt_len + o.steps + 1) as u64);
    let mut compile = o.compile.clone();
    compile.context = Some(context);
    let reference = match &o.reference {
        Reference::FullPrecision if bitnet_runtime::artifact::is_artifact(path) => {
            return Err(Error::Validate(format!(
                "{}: an artifact has no full-precision form; give --reference with the model it was compiled from",
                path.display()
            )));
        }
        Reference::FullPrecision => {
            let mut r = compile.clone();
            r.cpu.full_precision = true;
            r.cpu.head = bitnet_backends::cpu::HeadDtype::Auto;
            r.cpu.dense = bitnet_backends::cpu::HeadDtype::Auto;
            r.quantize = None;
            (path.to_path_buf(), r, "full-precision")
        }
        Reference::Model(p) => {
            let r = Options {
                cpu: crate::CpuOptions {
                    threads: compile.cpu.threads,
                    ..crate::CpuOptions::default()
                },
                context: Some(context),
                on_stage: compile.on_stage.clone(),
                ..Options::default()
            };
            (p.clone(), r, "model")
        }
    };

    let mut text = None;
    let (model, scores) = measure("model", path, &compile, o, &mut text, None)?;
    let Some((windows, text_tokens)) = text.clone() else {
        return Err(Error::Validate("internal: the text was not cut".into()));
    };
    let (reference_report, compared) = measure(
        "reference",
        &reference.0,
        &reference.1,
        o,
        &mut text,
        Some(&scores),
    )?;
    drop(scores);
    let mut kl = compared.kl.clone();
    kl.sort_by(f64::total_cmp);
    let n = kl.len().max(1) as f64;
    let mut report = Report {
        model,
        reference: reference_report,
        reference_kind: reference.2,
        text_source: o.text_source.clone(),
        text_tokens,
        window: windows.window,
        windows: windows.ids.len(),
        scored: windows.scored(),
        kl_mean: kl.iter().sum::<f64>() / n,
        kl_p99: percentile(&kl, 0.99),
        kl_max: kl.last().copied().unwrap_or(0.0),
        same_top1: compared.same_top1.iter().filter(|&&s| s).count() as f64 / n,
        verdicts: Vec::new(),
    };
    report.verdicts = o.gates.judge(|g| report.figure(g));
    Ok(report)
}

/// The `p` quantile of sorted values (nearest rank; 0 when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let i = (p * n.saturating_sub(1) as f64).round() as usize;
    sorted
        .get(i.min(n.saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// Compiles one build, measures it, and scores the text (cut on the first build, with its
/// tokenizer or the one given, into `text`); the reference compares with `against`.
fn measure(
    name: &'static str,
    path: &Path,
    compile: &Options,
    o: &ValidateOptions,
    text: &mut Option<(Windows, usize)>,
    against: Option<&Scores>,
) -> Result<(BuildReport, Scores), Error> {
    let rss = machine::reset_peak_rss();
    let start = Instant::now();
    let compiled = crate::compile(path, compile)?;
    let compile_time = start.elapsed();
    if text.is_none() {
        *text = Some(cut_text(&compiled, o)?);
    }
    let Some((windows, _)) = text.as_ref() else {
        return Err(Error::Validate("internal: the text was not cut".into()));
    };
    if compiled.context() < windows.window as u64 {
        return Err(Error::Validate(format!(
            "{}: its context holds {} tokens, fewer than a window of {}; give a smaller --window",
            path.display(),
            compiled.context(),
            windows.window
        )));
    }
    let vocab = compiled.vocab();
    if let Some(max) = windows.ids.iter().flatten().max()
        && u64::from(*max) >= vocab
    {
        return Err(Error::Validate(format!(
            "{}: the text's token {max} is outside its vocabulary of {vocab}; the reference must share the model's vocabulary",
            path.display()
        )));
    }
    if let Some(other) = against
        && other.vocab != vocab
    {
        return Err(Error::Validate(format!(
            "{}: a vocabulary of {vocab}, the model's has {}; the reference must share it",
            path.display(),
            other.vocab
        )));
    }
    let (master, stored) = projection_bytes(&compiled);
    let weight_bytes = compiled.weight_bytes;
    let mut session = compiled.token_session();
    let exec = session
        .executor()
        .ok_or_else(|| Error::Validate("validate measures CPU builds only".into()))?;
    let (arena_bytes, kv_bytes) = (exec.program().arena_bytes, exec.kv_slot_bytes());
    let speed = speed::measure(&mut session, o.prompt_len, o.steps, o.repeat)?;
    let peak_rss = machine::peak_rss().filter(|_| rss);
    let scores = score::score(&mut session, windows, against.is_none(), against)?;
    Ok((
        BuildReport {
            name,
            source: path.to_path_buf(),
            compile: compile_time,
            weight_bytes,
            projection_master_bytes: master,
            projection_stored_bytes: stored,
            arena_bytes,
            kv_bytes,
            peak_rss,
            speed,
            perplexity: scores.perplexity(),
        },
        scores,
    ))
}

/// The text's ids in windows, with the tokenizer given or the model's; and the text's token count.
fn cut_text(compiled: &Compiled, o: &ValidateOptions) -> Result<(Windows, usize), Error> {
    let given = match &o.tokenizer {
        Some(p) => Some(load_tokenizer(p)?),
        None => None,
    };
    let tokenizer = match (&given, compiled.tokenizer()?) {
        (Some(t), _) => t,
        (None, Some(t)) => t,
        (None, None) => {
            return Err(Error::Validate(format!(
                "{}: the model carries no tokenizer; give one with --tokenizer (tokenizer.json or a .gguf with a vocabulary)",
                compiled.source.display()
            )));
        }
    };
    let ids = tokenizer.encode(&o.text, false)?;
    let bos = if tokenizer.adds_bos()? {
        tokenizer.bos()
    } else {
        None
    };
    let windows = Windows::cut(&ids, o.window, o.windows, bos, &o.text_source)?;
    Ok((windows, ids.len()))
}

/// A tokenizer from a `tokenizer.json` or a GGUF file's vocabulary.
fn load_tokenizer(path: &Path) -> Result<Tokenizer, Error> {
    if path.extension().is_some_and(|e| e == "gguf") {
        let file = bitnet_frontend::gguf::GgufFile::open(path)?;
        let source = path.display().to_string();
        let vocab = crate::tokenizer::gguf_vocab(&file.tokenizer()?, &source)?;
        Ok(Tokenizer::from_gguf_vocab(&vocab, &source)?)
    } else {
        Ok(Tokenizer::from_file(path)?)
    }
}

/// The bf16 bytes of the projections `compiled` runs ternary (2 per weight, `n × k` each, read
/// from the kernel's symbol `bitnet_ternary_matmul_{n}x{k}…`), and the distinct weight buffers
/// they read (packed weights and scales).
fn projection_bytes(compiled: &Compiled) -> (u64, u64) {
    let program = compiled.program();
    let mut seen = std::collections::BTreeSet::new();
    let (mut master, mut stored) = (0u64, 0u64);
    for l in &program.launches {
        let Some(dims) = program
            .kernels
            .get(l.kernel)
            .and_then(|(name, _)| name.strip_prefix("bitnet_ternary_matmul_"))
        else {
            continue;
        };
        let mut it = dims.split(['x', '_']);
        let (Some(n), Some(k)) = (
            it.next().and_then(|v| v.parse::<u64>().ok()),
            it.next().and_then(|v| v.parse::<u64>().ok()),
        ) else {
            continue;
        };
        // Buffer 2 is the packed weight (`KernelKind::TernaryMatmul`): one master per packed
        // weight, however many launches read it.
        if let Some(w) = l.bufs.get(2)
            && w.region == bitnet_runtime::Region::Weights
            && !seen.contains(&(w.offset, w.bytes))
        {
            master += 2 * n * k;
        }
        for b in &l.bufs {
            if b.region == bitnet_runtime::Region::Weights && seen.insert((b.offset, b.bytes)) {
                stored += b.bytes;
            }
        }
    }
    (master, stored)
}
