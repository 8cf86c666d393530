//! `bitnetc chat`: a conversation with a model, one line of input per message.
//!
//! Each turn renders the whole conversation with the model's chat template (the built-in 2B-4T
//! format when it has none) and generates the reply, streamed to stdout, until a token that ends
//! the turn. The KV cache is kept between turns: only the tokens after what the session already
//! holds are prefilled, and if the new prompt differs earlier (a reply that re-tokenizes
//! differently, a template that rewrites history) the session rewinds to where they agree.
//! `/reset` starts a new conversation (the system message stays), `/exit` or the end of input
//! quits. Prompts and per-turn statistics go to stderr; `--json` prints one JSON object per turn
//! instead of the text.

use super::progress::Progress;
use anyhow::{Context, Result, bail};
use bitnet_runtime::chat::{ChatFormat, ChatTemplate, Message};
use bitnet_runtime::session::{GenerateParams, Generation, Session, StopReason};
use bitnet_runtime::tokenizer::Tokenizer;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc chat`.
#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    /// The model (HF folder, .gguf, .onnx) or a compiled artifact (.bnx).
    pub model: PathBuf,
    /// A system message at the start of the conversation (kept by /reset).
    #[arg(long)]
    pub system: Option<String>,
    /// The most new tokens per reply.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 512)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: super::flags::SamplingArgs,
    /// Print one JSON object per turn (prompt ids, reused and new tokens, text, stop reason)
    /// instead of the text.
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
}

impl ChatArgs {
    /// The audit record's kind (`chat`) and what it says before the command runs.
    pub fn audit(&self) -> (&'static str, serde_json::Value) {
        (
            "chat",
            serde_json::json!({
                "command": "chat",
                "model": self.model.display().to_string(),
                "flags": {
                    "max_tokens": self.max_tokens,
                    "precision": self.precision.audit(),
                    "system": self.system.is_some(),
                    "threads": self.threads,
                    "context": self.context,
                },
            }),
        )
    }
}

/// The model's chat format for `tokenizer` (the built-in one when `template` is `None`), after
/// telling stderr which template it is.
pub fn chat_format(template: Option<ChatTemplate>, tokenizer: &Tokenizer) -> Result<ChatFormat> {
    let format = ChatFormat::new(template, tokenizer)?;
    eprintln!("chat template: {}", format.describe());
    Ok(format)
}

/// Runs the command; adds what the audit record should say to `audit`.
pub fn run(args: &ChatArgs, audit: &mut serde_json::Value) -> Result<ExitCode> {
    let sampling = args.sampling.params();
    sampling.validate()?;
    let mut options = args.precision.run_options(args.context, args.threads)?;
    if let Some(choice) =
        args.head_bound
            .apply(&args.model, args.precision.head_dtype, &mut options)?
    {
        audit["head_choice"] = choice;
    }
    let name = args.model.display().to_string();
    let progress = Progress::start(&args.model);
    options.on_stage = Some(progress.stage_callback());
    let model = bitnetc::compile(&args.model, &options).with_context(|| name.clone());
    progress.finish();
    let model = model?;
    let template = model
        .chat_template()
        .with_context(|| name.clone())?
        .cloned();
    let mut session = model.session().with_context(|| name.clone())?;
    let Some(tokenizer) = session.tokenizer() else {
        bail!("{name}: the model carries no tokenizer, so it cannot chat");
    };
    let format = chat_format(template, tokenizer)?;
    audit["chat_template"] = format.describe().into();
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling,
        stop_tokens: format.stop_tokens().to_vec(),
        ..GenerateParams::default()
    };
    let start: Vec<Message> = args.system.iter().map(|s| Message::system(s)).collect();
    let mut messages = start.clone();
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("Type a message. /reset starts over, /exit (or end of input) quits.");
    }
    let mut turns = 0usize;
    let mut line = String::new();
    let mut stdin = std::io::stdin().lock();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        line.clear();
        if stdin.read_line(&mut line)? == 0 {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        match text.trim() {
            "" => continue,
            "/exit" => break,
            "/reset" => {
                messages.clone_from(&start);
                session.reset();
                eprintln!("(a new conversation)");
                continue;
            }
            t if t.starts_with('/') && !t.contains(' ') => {
                eprintln!("unknown command {t}: /reset starts over, /exit quits");
                continue;
            }
            _ => {}
        }
        messages.push(Message::user(text));
        turns += 1;
        match turn(&mut session, &format, &messages, &params, args.json, turns) {
            Ok(reply) => messages.push(Message::assistant(&reply)),
            Err(e) => {
                // The conversation goes on without the message that failed.
                eprintln!("error: {}", super::message::one_line(&e));
                messages.pop();
            }
        }
    }
    audit["turns"] = turns.into();
    Ok(ExitCode::SUCCESS)
}

/// One turn: the conversation's prompt, with only what the session does not hold prefilled; the
/// reply streamed (or printed as JSON); returns the reply's text.
fn turn(
    session: &mut Session,
    format: &ChatFormat,
    messages: &[Message],
    params: &GenerateParams,
    json: bool,
    number: usize,
) -> Result<String> {
    let tokenizer = session
        .tokenizer()
        .context("the model carries no tokenizer")?;
    let prompt = format.encode(tokenizer, messages, true)?;
    let reused = session.reuse_prefix(&prompt);
    let mut stdout = std::io::stdout().lock();
    let out = session.generate(&prompt[reused..], params, &mut |_, piece| {
        if !json {
            // Printing is best effort: a closed pipe must not end the conversation.
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
    })?;
    if json {
        let object = serde_json::json!({
            "turn": number,
            "prompt_tokens": prompt,
            "reused": reused,
            "tokens": out.tokens,
            "text": out.text,
            "stop": out.stop.name(),
        });
        let _ = writeln!(stdout, "{object}");
    } else {
        let _ = writeln!(stdout);
        eprintln!("{}", stats(prompt.len(), reused, &out));
    }
    Ok(out.text)
}

/// The stderr line after a reply.
fn stats(prompt: usize, reused: usize, out: &Generation) -> String {
    let decode: f64 = out.decode.iter().map(|d| d.as_secs_f64()).sum();
    let speed = if decode > 0.0 {
        format!(", {:.1} tok/s", out.decode.len() as f64 / decode)
    } else {
        String::new()
    };
    let end = match &out.stop {
        StopReason::StopToken(_) => String::new(),
        StopReason::MaxTokens => "; cut at the token limit (-n)".into(),
        StopReason::StopString(s) => format!("; stopped at {s:?}"),
        StopReason::ContextFull => "; the context is full: /reset to start over".into(),
        StopReason::Cancelled => "; cancelled".into(),
    };
    format!(
        "[{prompt} prompt tokens ({reused} reused), {} new{speed}{end}]",
        out.tokens.len()
    )
}
