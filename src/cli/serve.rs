//! `bitnetc serve`: an OpenAI-compatible HTTP server (`bitnet_serve`) over one or more models, each
//! compiled at start (or loaded from a `.bnx` artifact) into `--slots` sibling executors that share
//! its code and weights.
//!
//! The server listens at once (the address goes to stderr) and answers `/health` with 503 until
//! every model is loaded; a model that fails to load stops it with an error. A model is named by
//! its folder or file stem (`tiny-i2_s` for `tiny-i2_s.gguf`), or as given with `NAME=PATH`.

use super::flags::PrecisionArgs;
use anyhow::{Result, bail};
use bitnet_runtime::chat::BUILTIN_NAME;
use bitnet_serve::{LoadedModel, ModelSource, ServeConfig, Server, SlotBatch};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
    #[arg(long)]
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
    #[command(flatten)]
    pub precision: PrecisionArgs,
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

/// How to load one model into `slots` slots.
fn loader(
    path: PathBuf,
    id: String,
    options: bitnetc::Options,
    slots: usize,
) -> bitnet_serve::Loader {
    Box::new(move || {
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let model = bitnetc::compile(&path, &options).map_err(|e| at(&e))?;
        let (how, secs) = (
            format!("{:?}", model.origin).to_lowercase(),
            (model.import_time + model.compile_time).as_secs_f64(),
        );
        let chat_template = model.chat_template().map_err(|e| at(&e))?.cloned();
        match &chat_template {
            Some(t) => eprintln!("{id}: chat template: the model's ({})", t.origin),
            None => {
                eprintln!("{id}: chat template: built-in {BUILTIN_NAME} (the model has none)")
            }
        }
        let (exec, tokenizer) = model.into_parts().map_err(|e| at(&e))?;
        let tokenizer = tokenizer
            .ok_or_else(|| at(&"the model carries no tokenizer, which the server needs"))?;
        let context = exec.program().context;
        let slots = SlotBatch::new(&exec, slots).map_err(|e| at(&e))?;
        eprintln!(
            "{id}: ready ({how} in {secs:.1} s; {slots_n} slots of {context} tokens)",
            slots_n = bitnet_serve::StepModel::slots(&slots)
        );
        Ok(LoadedModel {
            model: Box::new(slots),
            tokenizer,
            chat_template,
        })
    })
}

/// Runs the command until SIGTERM or Ctrl-C.
pub fn run(args: &ServeArgs) -> Result<ExitCode> {
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
        models.push(ModelSource {
            load: loader(path, id.clone(), options.clone(), args.slots),
            id,
        });
    }
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
    let server = Server::start(config, models)?;
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
