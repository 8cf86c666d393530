//! `bitnetc train`: quantization-aware training of a BitNet b1.58 decoder on a text, from a preset's
//! sizes or a checkpoint of an earlier run, with a progress line (loss, tokens/s, ETA), the held-out
//! loss every `--eval-every` steps against the unigram baseline, and checkpoints that resume bit for
//! bit.
//!
//! The output folder follows Hugging Face's trainer: `OUT/checkpoint-N/` every `--checkpoint-every`
//! steps and at the end, each written whole; at the end the last checkpoint's files are also put in
//! `OUT/` itself (config.json last), so `bitnetc run OUT` loads the trained model.

use anyhow::{Context, Result, bail};
use bitnet_train::checkpoint::{self, ModelShape};
use bitnet_train::data::{BUNDLED_TEXT, Corpus, load_tokenizer, train_bpe};
use bitnet_train::optim::{AdamW, Schedule};
use bitnet_train::trainer::{Engine, TrainOptions, Trainer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// The arguments of `bitnetc train`.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// Train a fresh model of this preset's sizes (see `bitnetc synth`).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(bitnet_frontend::synth::PRESETS.iter().copied()), conflicts_with_all = ["resume", "init"], required_unless_present_any = ["resume", "init"])]
    pub preset: Option<String>,
    /// Start from this model's weights (a Hugging Face BitNet b1.58 folder in any of its forms: online
    /// master weights as they are, ternary projections as γ·t, or the master_weights.safetensors that
    /// `export --with-masters` keeps); its tokenizer.json unless --tokenizer is given.
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Continue the run saved in this checkpoint folder (its options, weights, optimizer state and
    /// sampler), to `--steps` steps in all; the options that shape the run (batch, seq, lr, schedule,
    /// decay, clipping, seed) are the checkpoint's and cannot be given again.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// The training text (UTF-8); default: the bundled book of Genesis (KJV, public domain).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// A tokenizer.json to use; default with --preset: a byte-level BPE trained on the text to the
    /// preset's vocabulary size (saved in the output).
    #[arg(long, conflicts_with = "resume")]
    pub tokenizer: Option<PathBuf>,
    /// Steps in all.
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    /// Sequences per step.
    #[arg(long, conflicts_with = "resume", default_value_t = 4)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, conflicts_with = "resume", default_value_t = 64)]
    pub seq: usize,
    /// Peak learning rate.
    #[arg(long, conflicts_with = "resume", default_value_t = 2e-3)]
    pub lr: f64,
    /// Warmup steps (default: a tenth of --steps).
    #[arg(long, conflicts_with = "resume")]
    pub warmup: Option<u64>,
    /// The schedule after warmup: cosine (to a tenth of the peak), constant, or two-stage (BitNet
    /// b1.58's: the first half cosine from the peak to half of it with weight decay, then an abrupt
    /// drop to a quarter of the peak, cosine to a fortieth, without weight decay).
    #[arg(long, conflicts_with = "resume", default_value = "cosine", value_parser = ["cosine", "constant", "two-stage"])]
    pub schedule: String,
    /// AdamW's decoupled weight decay (matrices only).
    #[arg(long, conflicts_with = "resume", default_value_t = 0.1)]
    pub weight_decay: f64,
    /// The global gradient norm is clipped to this.
    #[arg(long, conflicts_with = "resume", default_value_t = 1.0)]
    pub clip: f64,
    /// Seed of the initialization and of the sampler.
    #[arg(long, conflicts_with = "resume", default_value_t = 0)]
    pub seed: u64,
    /// Measure the held-out loss every K steps (and at the end).
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    /// Held-out windows per measurement.
    #[arg(long, conflicts_with = "resume", default_value_t = 8)]
    pub eval_windows: usize,
    /// Gradient checkpointing per decoder block: keep only each block's input in the forward pass
    /// and recompute the block in the backward pass (the same gradients, less memory, more time).
    #[arg(long)]
    pub checkpoint_blocks: bool,
    /// Threads that sweep a batch's sequences side by side (default: the cores here); the results
    /// do not depend on it.
    #[arg(long, value_parser = super::flags::threads)]
    pub threads: Option<usize>,
    /// How a step computes its gradients: `compiled` (the step function with f32 cotangents,
    /// lowered for the CPU; the default) or `interpreter` (the reverse sweep in f64, the
    /// reference). A checkpoint records it, and a resumed run uses it again.
    #[arg(long, conflicts_with = "resume", value_parser = ["interpreter", "compiled"])]
    pub engine: Option<String>,
    /// Write a checkpoint every K steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u64,
    /// The output folder (it must not exist).
    #[arg(short, long)]
    pub output: PathBuf,
}

impl TrainArgs {
    /// The audit record (kind and fields) of this run.
    pub fn audit(&self) -> (&'static str, serde_json::Value) {
        (
            "run",
            serde_json::json!({
                "command": "train",
                "model": self.resume.as_ref().or(self.init.as_ref()).map(|p| p.display().to_string()),
                "flags": {
                    "preset": self.preset,
                    "text": self.text.as_ref().map(|p| p.display().to_string()),
                    "tokenizer": self.tokenizer.as_ref().map(|p| p.display().to_string()),
                    "steps": self.steps, "batch": self.batch, "seq": self.seq, "lr": self.lr,
                    "warmup": self.warmup, "schedule": self.schedule,
                    "weight_decay": self.weight_decay, "clip": self.clip, "seed": self.seed,
                    "checkpoint_blocks": self.checkpoint_blocks, "threads": self.threads,
                    "engine": self.engine,
                    "output": self.output.display().to_string(),
                },
            }),
        )
    }
}

/// The text to train on and the path errors name.
fn text_of(args: &TrainArgs) -> Result<(String, PathBuf)> {
    match &args.text {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("reading the training text {}", p.display()))?;
            Ok((t, p.clone()))
        }
        None => Ok((
            BUNDLED_TEXT.to_string(),
            PathBuf::from("<bundled kjv-genesis.txt>"),
        )),
    }
}

/// The model at `path` (an HF folder) as a starting point, imported for sequences of `seq` tokens.
fn init_from(path: &Path, seq: u64) -> Result<bitnet_train::init::Init> {
    let config = path.join("config.json");
    if !config.is_file() {
        bail!(
            "{}: --init takes a Hugging Face BitNet folder (config.json, model.safetensors)",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: malformed JSON", config.display()))?;
    let field = |k: &str, default: u64| cfg[k].as_u64().unwrap_or(default);
    let max_positions = field("max_position_embeddings", seq);
    let opts = bitnet_frontend::model::ImportOptions {
        context: Some(seq.min(max_positions)),
        quantize: None,
    };
    let model = bitnet_frontend::import_model(path, &opts)?;
    let mut init = bitnet_train::init::from_model(
        path,
        &model,
        max_positions,
        field("bos_token_id", 1),
        field("eos_token_id", 2),
    )?;
    // `bitnetc export --with-masters` keeps the latent weights beside the packed ones: start from them.
    let masters = path.join(bitnet_frontend::export::MASTERS_FILE);
    if masters.is_file() {
        for (name, t) in bitnet_train::checkpoint::f32_tensors(&masters)? {
            match init.params.get(&name) {
                Some(p) if p.shape == t.shape => {
                    init.params.insert(name, t);
                }
                _ => bail!(
                    "{}: tensor \"{name}\" {:?} is not one of the model's weights",
                    masters.display(),
                    t.shape
                ),
            }
        }
        eprintln!("starting from the master weights in {}", masters.display());
    }
    Ok(init)
}

/// Links (or copies) every file of the finished checkpoint `from` into `out`, config.json last.
fn publish(from: &Path, out: &Path) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(from)
        .with_context(|| format!("reading {}", from.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| (n == "config.json", n.clone()));
    for name in names {
        let (src, dst) = (from.join(&name), out.join(&name));
        if std::fs::hard_link(&src, &dst).is_err() {
            let bytes =
                std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            super::output::write_new(&dst, &bytes)?;
        }
    }
    Ok(())
}

/// Runs the command.
pub fn run(args: &TrainArgs, audit: &mut serde_json::Value) -> Result<ExitCode> {
    bitnetc::heap::keep_freed_memory();
    if args.output.exists() {
        bail!(
            "{}: already exists; give a new folder (nothing there was changed)",
            args.output.display()
        );
    }
    let (text, text_path) = text_of(args)?;
    let (mut trainer, tokenizer_json) = match &args.resume {
        Some(dir) => {
            let ckpt = checkpoint::load(dir)?;
            if args.steps <= ckpt.state.step {
                bail!(
                    "--steps {}: the checkpoint {} is already at step {}",
                    args.steps,
                    dir.display(),
                    ckpt.state.step
                );
            }
            let tk = ckpt.tokenizer_json.clone();
            (Trainer::resume(ckpt, args.steps)?, tk)
        }
        None => {
            let (model, params) = match &args.init {
                Some(path) => {
                    let init = init_from(path, args.seq as u64)?;
                    (init.model, Some(init.params))
                }
                None => {
                    let name = args.preset.as_deref().unwrap_or("micro");
                    let p = bitnet_frontend::synth::preset(name)
                        .with_context(|| format!("--preset {name}: no such preset"))?;
                    let model = ModelShape {
                        vocab: p.vocab,
                        hidden: p.hidden,
                        intermediate: p.intermediate,
                        layers: p.layers,
                        heads: p.heads,
                        kv_heads: p.kv_heads,
                        max_positions: p.max_positions,
                        rms_eps: bitnet_frontend::synth::RMS_EPS,
                        rope_theta: bitnet_frontend::synth::ROPE_THETA,
                        bos: p.bos,
                        eos: p.eos,
                    };
                    (model, None)
                }
            };
            let init_tokenizer = args
                .init
                .as_ref()
                .map(|d| d.join("tokenizer.json"))
                .filter(|p| p.is_file());
            let tokenizer = match (&args.tokenizer, init_tokenizer.as_ref(), &args.init) {
                (Some(path), _, _) | (None, Some(path), _) => load_tokenizer(path)?,
                (None, None, Some(init)) => bail!(
                    "{}: has no tokenizer.json; give one with --tokenizer",
                    init.display()
                ),
                (None, None, None) => train_bpe(&text, &text_path, model.vocab as usize)?,
            };
            let tk = tokenizer
                .to_string(false)
                .map_err(|e| anyhow::anyhow!("saving the tokenizer: {e}"))?;
            let options = TrainOptions {
                steps: args.steps,
                batch: args.batch,
                seq: args.seq,
                lr: args.lr,
                warmup: args.warmup.unwrap_or(args.steps / 10),
                schedule: Schedule::parse(&args.schedule).unwrap_or(Schedule::Cosine),
                adamw: AdamW {
                    weight_decay: args.weight_decay,
                    ..AdamW::default()
                },
                clip: args.clip,
                seed: args.seed,
                eval_windows: args.eval_windows,
                checkpoint_blocks: args.checkpoint_blocks,
                engine: match args.engine.as_deref() {
                    Some("interpreter") => Engine::Interpreter,
                    _ => Engine::Compiled,
                },
            };
            let trainer = match params {
                Some(params) => Trainer::with_params(model, options, params)?,
                None => Trainer::new(model, options)?,
            };
            (trainer, tk)
        }
    };
    trainer.threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |c| c.get()));
    let tokenizer: bitnet_train::data::Tokenizer = tokenizer_json
        .parse()
        .map_err(|e| anyhow::anyhow!("the run's tokenizer: {e}"))?;
    let o = trainer.options.clone();
    let corpus = Corpus::new(
        &text,
        &text_path,
        &tokenizer,
        trainer.model.vocab as usize,
        o.seq,
    )?;
    let unigram = corpus.unigram_loss(trainer.model.vocab as usize);
    let params: usize = trainer.params.values().map(|t| t.numel()).sum();
    eprintln!(
        "training {params} parameters ({} layers, hidden {}, vocab {}) on {} tokens ({} held out) from {}; \
         {} steps of {}×{} tokens from step {}; unigram baseline {unigram:.4} nats/token",
        trainer.model.layers,
        trainer.model.hidden,
        trainer.model.vocab,
        corpus.train.len(),
        corpus.heldout.len(),
        text_path.display(),
        o.steps,
        o.batch,
        o.seq,
        trainer.step
    );
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(o.steps), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} ETA {eta}]")
        {
            bar.set_style(style);
        }
        bar.set_position(trainer.step);
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let first_step = trainer.step;
    let mut tokens = 0usize;
    let mut last_loss = f64::NAN;
    let mut peak_bytes = 0u64;
    while trainer.step < o.steps {
        let r = trainer.train_step(&corpus)?;
        tokens += r.tokens;
        last_loss = r.loss;
        peak_bytes = peak_bytes.max(r.peak_value_bytes);
        let rate = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(r.step);
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} |g| {:.3} {rate:.0} tok/s",
            r.loss, r.lr, r.grad_norm
        ));
        let eval_now = args.eval_every > 0 && r.step.is_multiple_of(args.eval_every);
        if eval_now || r.step == o.steps {
            let h = trainer.evaluate(&corpus)?;
            bar.suspend(|| {
                eprintln!(
                    "step {:>6}  loss {:.4}  held-out {h:.4} (unigram {unigram:.4})  {rate:.0} tok/s",
                    r.step, r.loss
                )
            });
        }
        if args.checkpoint_every > 0
            && r.step.is_multiple_of(args.checkpoint_every)
            && r.step != o.steps
        {
            let dir = args.output.join(format!("checkpoint-{}", r.step));
            bar.suspend(|| eprintln!("checkpoint {}", dir.display()));
            trainer.save(&dir, &tokenizer_json)?;
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let last = args.output.join(format!("checkpoint-{}", trainer.step));
    trainer.save(&last, &tokenizer_json)?;
    publish(&last, &args.output)?;
    let heldout = trainer.history.heldout.last().map_or(f64::NAN, |h| h.1);
    let rate = tokens as f64 / secs.max(1e-9);
    let held = format!(
        "; {} held at most {:.1} MiB per sequence{}",
        match o.engine {
            Engine::Compiled => "the compiled step's values",
            Engine::Interpreter => "forward values",
        },
        peak_bytes as f64 / (1u64 << 20) as f64,
        if o.checkpoint_blocks {
            " (checkpointed per block)"
        } else {
            ""
        }
    );
    println!(
        "trained {} steps ({}..{}) in {secs:.1} s, {rate:.0} tokens/s: loss {last_loss:.4}, held-out {heldout:.4} \
         (unigram baseline {unigram:.4}){held}; wrote {}",
        trainer.step - first_step,
        first_step,
        trainer.step,
        args.output.display()
    );
    audit["result"] = serde_json::json!({
        "steps": trainer.step,
        "loss": last_loss,
        "heldout_loss": heldout,
        "unigram_loss": unigram,
        "tokens_per_second": rate,
        "seconds": secs,
        "peak_value_bytes": peak_bytes,
    });
    Ok(ExitCode::SUCCESS)
}
