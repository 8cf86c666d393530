//! `bitnetc serve`: an OpenAI-compatible HTTP server (`bitnet_serve`) over one or more models, each
//! compiled at start (or loaded from a `.bnx` artifact) into `--slots` sibling executors that share
//! its code and weights.
//!
//! The server listens at once (the address goes to stderr) and answers `/health` with 503 until
//! every model is loaded; a model that fails to load stops it with an error. A model is named by
//! its folder or file stem (`tiny-i2_s` for `tiny-i2_s.gguf`), or as given with `NAME=PATH`.
//!
//! The gateway (`/v1/bitnetc/`) loads more models, compiles artifacts, and validates, profiles
//! and checks models through `toolchain::CliToolchain`; the audit log (`--audit-log`, as for the other commands) records
//! every request, load, unload and compile, with the prompt and output text only with
//! `--audit-text`.

mod toolchain;

use super::audit_log::Target;
use super::flags::PrecisionArgs;
use anyhow::{Result, bail};
use bitnet_serve::{GatewayConfig, ModelSource, ServeConfig, Server};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The arguments of `bitnetc serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The models (HF folder, .gguf, .onnx, or a compiled .bnx), each `PATH` or `NAME=PATH`.
    #[arg(required = true, value_name = "MODEL")]
    pub models: Vec<String>,
    /// The address to listen on (default: loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The port (0: any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests each model generates at once (each slot has its own KV cache).
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// Requests that may wait for a slot before the server answers 429.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health (default:
    /// $BITNETC_API_KEY, if set).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Threads for the model steps (default: every core).
    #[arg(long, value_parser = crate::cli::flags::threads)]
    pub threads: Option<usize>,
    /// The longest context of each slot, in tokens (default: the model's limit; fixed for
    /// artifacts).
    #[arg(long)]
    pub context: Option<u64>,
    /// The most prompt tokens a slot feeds in one step, so that a long prompt does not hold up
    /// the other slots for longer than that.
    #[arg(long, default_value_t = 64)]
    pub prefill_chunk: usize,
    /// The largest request body in bytes (413 past it).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Seconds that requests in flight may go on after SIGTERM or Ctrl-C before they are
    /// cancelled.
    #[arg(long, default_value_t = 10)]
    pub shutdown_timeout: u64,
    /// Keep each request's prompt and output text in the audit log (default: only their sha256).
    #[arg(long)]
    pub audit_text: bool,
    #[command(flatten)]
    pub precision: PrecisionArgs,
    // `--head-kl-bound` applies to each model given on the command line (each measured once,
    // before the server starts), not to models the gateway compiles later.
    #[command(flatten)]
    pub head_bound: super::flags::HeadBoundArgs,
}

/// A model argument's id and path: `NAME=PATH`, or the path's file stem.
fn model_id(arg: &str) -> Result<(String, PathBuf)> {
    if !Path::new(arg).exists()
        && let Some((name, path)) = arg.split_once('=')
        && !name.is_empty()
        && !name.contains('/')
    {
        return Ok((name.to_string(), PathBuf::from(path)));
    }
    let path = PathBuf::from(arg);
    let id = if path.is_dir() {
        path.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    } else {
        path.file_stem().map(|n| n.to_string_lossy().into_owned())
    };
    match id {
        Some(id) if !id.is_empty() => Ok((id, path)),
        _ => bail!("{arg}: cannot name this model; give it a name with NAME=PATH"),
    }
}

/// Runs the command until SIGTERM or Ctrl-C, logging to `audit` (`--audit-log` resolved; `None`:
/// logging is off).
pub fn run(args: &ServeArgs, audit: Option<Target>) -> Result<ExitCode> {
    if args.slots == 0 {
        bail!("--slots 0: give at least 1");
    }
    let options = args.precision.run_options(args.context, args.threads)?;
    let mut models = Vec::with_capacity(args.models.len());
    for arg in &args.models {
        let (id, path) = model_id(arg)?;
        if !path.exists() {
            bail!("{}: no such file or folder", path.display());
        }
        let mut model_options = options.clone();
        args.head_bound
            .apply(&path, args.precision.head_dtype, &mut model_options)?;
        models.push(ModelSource {
            load: toolchain::loader(path, id.clone(), model_options, args.slots),
            id,
        });
    }
    let log = match &audit {
        Some(target) => super::audit_log::open(target)?,
        None => None,
    };
    if args.audit_text && log.is_none() {
        eprintln!("warning: --audit-text: no audit log is written (see --audit-log)");
    }
    let logging = log.as_ref().map(|l| l.path().display().to_string());
    let gateway = GatewayConfig {
        toolchain: Some(Arc::new(toolchain::CliToolchain {
            options: options.clone(),
            slots: args.slots,
            audit_log: log.as_ref().map(|l| l.path().to_path_buf()),
        })),
        audit: log,
        audit_text: args.audit_text,
    };
    let config = ServeConfig {
        host: args.host.clone(),
        port: args.port,
        api_key: args
            .api_key
            .clone()
            .or_else(|| std::env::var("BITNETC_API_KEY").ok())
            .filter(|k| !k.is_empty()),
        queue: args.queue,
        prefill_chunk: args.prefill_chunk,
        max_body_bytes: args.max_body_bytes,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        signals: true,
    };
    let keyed = config.api_key.is_some();
    let server = Server::start_with(config, models, gateway)?;
    if let Some(path) = logging {
        eprintln!("audit log: {path}");
    }
    eprintln!(
        "listening on http://{} ({}; /health is 503 until the models are loaded)",
        server.addr(),
        if keyed {
            "API key required"
        } else {
            "no API key"
        }
    );
    server.wait()?;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}
