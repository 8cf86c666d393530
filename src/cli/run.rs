//! `bitnetc run`: compile a model (or load an artifact), run a prompt and stream the generated text.
//!
//! Text goes to stdout as it is generated; a summary (tokens, time to first token, decode speed,
//! why it stopped) goes to stderr. `--json` prints one JSON object instead, for scripts. Without a
//! tokenizer, or with `--tokens`, the ids are what matters: they are printed as they come.

use super::progress::Progress;
use anyhow::{Context, Result, bail};
use bitnet_runtime::chat::Message;
use bitnet_runtime::session::{GenerateParams, Generation, StopReason};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The model (HF folder, .gguf, .onnx) or a compiled artifact (.bnx).
    pub model: PathBuf,
    /// The prompt text (encoded with the model's tokenizer, with its special tokens).
    #[arg(long, conflicts_with = "tokens")]
    pub prompt: Option<String>,
    /// The prompt as token ids, comma-separated (e.g. 1,17,256).
    #[arg(long, value_delimiter = ',')]
    pub tokens: Option<Vec<u32>>,
    /// The most new tokens.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 64)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: super::flags::SamplingArgs,
    /// Stop when the text contains this string (repeatable); it is cut from the output.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Stop at this token id (repeatable), besides the model's end-of-sequence ids.
    #[arg(long = "stop-token", value_name = "ID")]
    pub stop_tokens: Vec<u32>,
    /// Do not stop at the model's end-of-sequence ids.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Format the prompt as a user message with the model's chat template (the BitNet b1.58 2B-4T
    /// format when it has none, which needs <|eot_id|>) and stop at the end of the reply.
    #[arg(long)]
    pub chat: bool,
    /// With --chat: a system message before the user's.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Print one JSON object (prompt and new token ids, text, stop reason, timings) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Threads (default: every core).
    #[arg(long, value_parser = super::flags::threads)]
    pub threads: Option<usize>,
    /// The longest context in tokens (default: the model's limit; fixed for artifacts).
    #[arg(long)]
    pub context: Option<u64>,
    #[command(flatten)]
    pub precision: super::flags::PrecisionArgs,
    #[command(flatten)]
    pub head_bound: super::flags::HeadBoundArgs,
    /// Where to run: `cpu` (the default) or `cuda` (CUDA device 0: a `--target cuda` artifact, or a
    /// model compiled for the device here; needs a bitnetc built with `--features cuda-runtime`,
    /// or `cuda` for models).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub backend: String,
}

impl RunArgs {
    /// The audit record's kind (`run`) and what it says before the command runs.
    pub fn audit(&self) -> (&'static str, serde_json::Value) {
        (
            "run",
            serde_json::json!({
                "command": "run",
                "model": self.model.display().to_string(),
                "flags": {
                    "max_tokens": self.max_tokens,
                    "precision": self.precision.audit(),
                    "chat": self.chat,
                    "threads": self.threads,
                    "context": self.context,
                    "stop": self.stop,
                    "stop_tokens": self.stop_tokens,
                    "ignore_eos": self.ignore_eos,
                    "backend": self.backend,
                },
            }),
        )
    }
}

/// Runs the command; adds what the audit record should say to `audit`.
pub fn run(args: &RunArgs, audit: &mut serde_json::Value) -> Result<ExitCode> {
    if args.prompt.is_none() && args.tokens.is_none() {
        bail!("give a prompt: --prompt TEXT or --tokens ID,ID,...");
    }
    if args.chat && args.prompt.is_none() {
        bail!("--chat formats a text prompt: give --prompt TEXT");
    }
    let sampling = args.sampling.params();
    sampling.validate()?;
    let mut options = args.precision.run_options(args.context, args.threads)?;
    if args.backend == "cuda" && args.head_bound.head_kl_bound.is_some() {
        bail!("--head-kl-bound measures CPU builds; --backend cuda takes the exact head");
    }
    if let Some(choice) =
        args.head_bound
            .apply(&args.model, args.precision.head_dtype, &mut options)?
    {
        audit["head_choice"] = choice;
    }
    let progress = Progress::start(&args.model);
    options.on_stage = Some(progress.stage_callback());
    let (mut session, template) = if args.backend == "cuda" {
        open_cuda(args, &options, audit, &progress)?
    } else {
        let model = bitnetc::compile(&args.model, &options)
            .with_context(|| format!("{}", args.model.display()));
        progress.finish();
        let model = model?;
        audit["origin"] = format!("{:?}", model.origin).to_lowercase().into();
        audit["compile_s"] = model.compile_time.as_secs_f64().into();
        // Taken before the session consumes the model; a template that cannot be read matters only here.
        let template = if args.chat {
            model
                .chat_template()
                .with_context(|| format!("{}", args.model.display()))?
                .cloned()
        } else {
            None
        };
        let session = if args.tokens.is_some() {
            // Token ids need no tokenizer: one that cannot be read only takes away the text and the
            // model's end-of-sequence ids.
            match model.tokenizer().err() {
                None => model.session()?,
                Some(e) => {
                    warn_no_tokenizer(args, &e);
                    model.token_session()
                }
            }
        } else {
            model
                .session()
                .with_context(|| format!("{}", args.model.display()))?
        };
        (session, template)
    };
    let mut params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling,
        stop_tokens: args.stop_tokens.clone(),
        stop_strings: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        cancel: None,
    };
    let prompt: Vec<u32> = match (&args.tokens, &args.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(text)) if args.chat => {
            let tok = session.tokenizer().with_context(|| {
                format!("{}: the model carries no tokenizer", args.model.display())
            })?;
            let format = super::chat::chat_format(template, tok)?;
            audit["chat_template"] = format.describe().into();
            let mut messages = Vec::new();
            if let Some(system) = &args.system {
                messages.push(Message::system(system));
            }
            messages.push(Message::user(text));
            params.stop_tokens.extend(format.stop_tokens());
            format.encode(tok, &messages, true)?
        }
        (None, Some(text)) => session
            .encode(text)
            .with_context(|| format!("{}", args.model.display()))?,
        (None, None) => Vec::new(),
    };
    audit["prompt_sha256"] = bitnet_runtime::audit::sha256_hex(&ids_bytes(&prompt)).into();
    audit["prompt_tokens"] = prompt.len().into();
    audit["sampling"] = serde_json::json!({
        "temperature": params.sampling.temperature,
        "top_k": params.sampling.top_k,
        "top_p": params.sampling.top_p,
        "repetition_penalty": params.sampling.repetition_penalty,
        "seed": params.sampling.seed,
    });
    let text_out = session.tokenizer().is_some() && args.tokens.is_none();
    let mut stdout = std::io::stdout().lock();
    let mut first = true;
    let result = session.generate(&prompt, &params, &mut |id, piece| {
        if args.json {
            return;
        }
        // Printing is best effort: a closed pipe must not lose the run's record.
        if text_out {
            let _ = stdout.write_all(piece.as_bytes());
        } else if let Some(id) = id {
            let _ = write!(stdout, "{}{id}", if first { "" } else { " " });
            first = false;
        }
        let _ = stdout.flush();
    });
    let out = result.with_context(|| format!("{}", args.model.display()))?;
    record(audit, &out);
    if args.json {
        println!("{}", json(&prompt, &out));
    } else {
        let _ = writeln!(stdout);
        eprintln!("{}", summary(&out));
    }
    Ok(ExitCode::SUCCESS)
}

fn warn_no_tokenizer(args: &RunArgs, e: &dyn std::fmt::Display) {
    eprintln!(
        "warning: {}: {e}; running on token ids alone (no text, no end-of-sequence stop)",
        args.model.display()
    );
}

/// The session and chat template of `--backend cuda`.
#[cfg(feature = "cuda-runtime")]
fn open_cuda(
    args: &RunArgs,
    options: &bitnetc::jit::Options,
    audit: &mut serde_json::Value,
    progress: &Progress,
) -> Result<(
    bitnet_runtime::session::Session,
    Option<bitnet_runtime::chat::ChatTemplate>,
)> {
    let model = bitnetc::gpu::open_gpu(&args.model, options, 0)
        .with_context(|| format!("{}", args.model.display()));
    progress.finish();
    let model = model?;
    audit["origin"] = format!("{:?}", model.origin).to_lowercase().into();
    audit["compile_s"] = model.compile_time.as_secs_f64().into();
    audit["device"] = bitnet_runtime::gpu::Device::name(model.executor.device()).into();
    let template = if args.chat {
        model
            .chat_template()
            .with_context(|| format!("{}", args.model.display()))?
            .cloned()
    } else {
        None
    };
    let session = if args.tokens.is_some() {
        match model.tokenizer().err() {
            None => model.session()?,
            Some(e) => {
                warn_no_tokenizer(args, &e);
                model.token_session()
            }
        }
    } else {
        model
            .session()
            .with_context(|| format!("{}", args.model.display()))?
    };
    Ok((session, template))
}

/// `--backend cuda` in a bitnetc built without the CUDA runtime.
#[cfg(not(feature = "cuda-runtime"))]
fn open_cuda(
    _args: &RunArgs,
    _options: &bitnetc::jit::Options,
    _audit: &mut serde_json::Value,
    progress: &Progress,
) -> Result<(
    bitnet_runtime::session::Session,
    Option<bitnet_runtime::chat::ChatTemplate>,
)> {
    progress.finish();
    bail!(
        "--backend cuda: this bitnetc is built without the CUDA runtime (build it with --features cuda-runtime, or cuda to compile models too)"
    )
}

/// Token ids as little-endian u32 bytes (what the audit log hashes).
fn ids_bytes(ids: &[u32]) -> Vec<u8> {
    ids.iter().flat_map(|i| i.to_le_bytes()).collect()
}

/// Decode speed: tokens per second over the decode steps.
fn decode_tok_s(out: &Generation) -> Option<f64> {
    let total: f64 = out.decode.iter().map(|d| d.as_secs_f64()).sum();
    (total > 0.0).then(|| out.decode.len() as f64 / total)
}

fn record(audit: &mut serde_json::Value, out: &Generation) {
    audit["new_tokens"] = out.tokens.len().into();
    audit["output_sha256"] = bitnet_runtime::audit::sha256_hex(&ids_bytes(&out.tokens)).into();
    audit["stop"] = out.stop.name().into();
    audit["prefill_ms"] = (out.prefill.as_secs_f64() * 1e3).into();
    audit["decode_tok_s"] = decode_tok_s(out).into();
}

/// The `--json` object.
fn json(prompt: &[u32], out: &Generation) -> serde_json::Value {
    let stop_detail = match &out.stop {
        StopReason::StopToken(id) => serde_json::json!(id),
        StopReason::StopString(s) => serde_json::json!(s),
        StopReason::MaxTokens | StopReason::ContextFull | StopReason::Cancelled => {
            serde_json::Value::Null
        }
    };
    serde_json::json!({
        "prompt_tokens": prompt,
        "tokens": out.tokens,
        "text": out.text,
        "stop": out.stop.name(),
        "stop_detail": stop_detail,
        "prefill_ms": out.prefill.as_secs_f64() * 1e3,
        "decode_tok_s": decode_tok_s(out),
    })
}

/// The stderr summary line.
fn summary(out: &Generation) -> String {
    let speed = decode_tok_s(out).map_or_else(String::new, |s| format!(", decode {s:.1} tok/s"));
    let stop = match &out.stop {
        StopReason::MaxTokens => "the token limit (-n)".to_string(),
        StopReason::StopToken(id) => format!("stop token {id}"),
        StopReason::StopString(s) => format!("stop string {s:?}"),
        StopReason::ContextFull => "a full context (raise --context)".to_string(),
        StopReason::Cancelled => "cancellation".to_string(),
    };
    if out.tokens.is_empty() {
        // Nothing was generated, so there is no first-token time to report.
        return format!(
            "; {} prompt + 0 new tokens; stopped at {stop}",
            out.prompt_tokens
        );
    }
    format!(
        "; {} prompt + {} new tokens; first token after {:.1} ms{speed}; stopped at {stop}",
        out.prompt_tokens,
        out.tokens.len(),
        out.prefill.as_secs_f64() * 1e3,
    )
}
