//! The `bitnetc` command line: the arguments, parsing and dispatch. Each command lives in a module of
//! its own under `cli/`: its arguments, its body, and what the audit log records about it.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

/// bitnetc: a compiler for ternary (BitNet b1.58) neural networks.
#[derive(Parser)]
#[command(name = "bitnetc", version, about)]
struct Cli {
    /// Append a record of compile, run, chat, bench, validate, profile, logits, export and train, and
    /// of what `serve` handles, to this hash-chained log (`off`: none; default $BITNETC_AUDIT_LOG,
    /// else audit.jsonl in bitnetc's data folder).
    #[arg(long, global = true, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a model (or load a .bnx artifact), run a prompt and stream the generated text.
    Run(cli::run::RunArgs),
    /// Serve models over HTTP with OpenAI's API (chat and text completions, streamed or not),
    /// several requests at once per model; /health and /metrics for operations.
    Serve(cli::serve::ServeArgs),
    /// Talk with a model: each input line is a message, the reply streams back (/reset, /exit).
    Chat(cli::chat::ChatArgs),
    /// Measure prefill and decode speed, latency, memory and compile time on this machine, against
    /// the same model compiled with full-precision weights in the same run.
    Bench(cli::bench::BenchArgs),
    /// Profile a prefill and decode steps launch by launch and layer by layer: percentiles, threads'
    /// busy share, memory, a Chrome trace, and a regression check against a saved profile.
    Profile(cli::profile::ProfileArgs),
    /// Say whether a compiled model is good enough to ship: memory, speed and accuracy against a
    /// reference in the same run, judged by gates (exit 1 when one fails).
    Validate(cli::validate::ValidateArgs),
    /// Report checked facts about an artifact, the audit chain, input validation, the source tree
    /// and test evidence, with a score; exit 1 when the level is not met.
    Compliance(cli::compliance::ComplianceArgs),
    /// Parse and verify a .bir file; print every error (exit 1) or a one-line summary.
    Check(cli::check::CheckArgs),
    /// Print a .bir file in canonical form.
    Print(cli::print::PrintArgs),
    /// Run a function of a .bir file with the reference interpreter.
    Eval(cli::eval::EvalArgs),
    /// Import a model (HF folder, .gguf, .onnx) and print its IR, weights as references.
    Import(cli::import::ImportArgs),
    /// Run a pass pipeline on IR (a .bir file) or on an imported model, and print the result.
    Opt(cli::opt::OptArgs),
    /// Compile a model with the default pipeline and report its memory plan: arena bytes against the
    /// lower bound and the naive sum, the KV cache, and every buffer.
    Plan(cli::plan::PlanArgs),
    /// Describe a model: architecture, parameters, bytes by dtype, tensors.
    Inspect(cli::inspect::InspectArgs),
    /// Run a prompt through a model and print or save the logits of every position.
    Logits(cli::logits::LogitsArgs),
    /// Compile a model ahead of time into an artifact (.bnx) the runtime loads without the compiler.
    Compile(cli::compile::CompileArgs),
    /// Work with audit logs (see --audit-log).
    Audit(cli::audit::AuditArgs),
    /// Write a deterministic random BitNet b1.58 checkpoint (HF layout of microsoft/bitnet-b1.58-2B-4T).
    Synth(cli::synth::SynthArgs),
    /// Train a BitNet b1.58 model on a text (quantization-aware, resumable; docs/training.md).
    Train(cli::train::TrainArgs),
    /// Write a model as an HF folder in BitNet's packed form or a GGUF (TQ2_0, I2_S) with its vocabulary.
    Export(cli::export::ExportArgs),
}

impl Command {
    /// What the audit log records about the command before it runs, and the record's kind; `None`
    /// for the commands that are not logged.
    fn audit(&self) -> Option<(&'static str, serde_json::Value)> {
        match self {
            Command::Run(args) => Some(args.audit()),
            Command::Chat(args) => Some(args.audit()),
            Command::Bench(args) => Some(args.audit()),
            Command::Profile(args) => Some(args.audit()),
            Command::Validate(args) => Some(args.audit()),
            Command::Logits(args) => Some(args.audit()),
            Command::Compile(args) => Some(args.audit()),
            Command::Train(args) => Some(args.audit()),
            Command::Export(args) => Some(args.audit()),
            Command::Check(_)
            | Command::Print(_)
            | Command::Eval(_)
            | Command::Import(_)
            | Command::Opt(_)
            | Command::Plan(_)
            | Command::Inspect(_)
            | Command::Audit(_)
            | Command::Synth(_)
            | Command::Serve(_)
            | Command::Compliance(_) => None,
        }
    }

    /// Runs the command; the commands that measure something add it to `audit` for the log. `log`
    /// is the audit log for the commands that write their own records (`serve`).
    fn run(
        self,
        audit: &mut serde_json::Value,
        log: Option<cli::audit_log::Target>,
    ) -> anyhow::Result<ExitCode> {
        match self {
            Command::Run(args) => cli::run::run(&args, audit),
            Command::Chat(args) => cli::chat::run(&args, audit),
            Command::Bench(args) => cli::bench::run(&args, audit),
            Command::Profile(args) => cli::profile::run(&args, audit),
            Command::Validate(args) => cli::validate::run(&args, audit),
            Command::Check(args) => cli::check::run(&args),
            Command::Print(args) => cli::print::run(&args),
            Command::Eval(args) => cli::eval::run(&args),
            Command::Import(args) => cli::import::run(&args),
            Command::Opt(args) => cli::opt::run(&args),
            Command::Plan(args) => cli::plan::run(&args),
            Command::Inspect(args) => cli::inspect::run(&args),
            Command::Logits(args) => cli::logits::run(&args),
            Command::Compile(args) => cli::compile::run(&args),
            Command::Audit(args) => cli::audit::run(&args),
            Command::Synth(args) => cli::synth::run(&args),
            Command::Train(args) => cli::train::run(&args, audit),
            Command::Export(args) => cli::export::run(&args, audit),
            Command::Serve(args) => cli::serve::run(&args, log),
            Command::Compliance(args) => cli::compliance::run(&args, log.as_ref()),
        }
    }
}

fn main() -> ExitCode {
    let Cli { audit_log, command } = Cli::parse();
    let target = cli::audit_log::resolve(audit_log);
    let result = match (target, command.audit()) {
        (Some(target), Some(record)) => {
            cli::audit_log::run_logged(&target, record, |audit| command.run(audit, None))
        }
        (target, _) => command.run(&mut serde_json::json!({}), target),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cli::message::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
