//! `bitnetc inspect MODEL`: a model's format, architecture, parameters, bytes by dtype and tensors,
//! as text or JSON.

use anyhow::Result;
use bitnet_frontend::model::ModelSummary;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc inspect`.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The model.
    pub model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: &InspectArgs) -> Result<ExitCode> {
    let m = bitnetc::Model::open(&args.model)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary_json(&m.summary))?
        );
    } else {
        print!("{}", summary_text(&m.summary));
    }
    Ok(ExitCode::SUCCESS)
}

/// The text report.
fn summary_text(s: &ModelSummary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "format: {}\narchitecture: {}\nparameters: {}",
        s.format, s.architecture, s.parameters
    );
    for (k, v) in &s.config {
        let _ = writeln!(out, "{k}: {v}");
    }
    let _ = writeln!(out, "bytes by dtype:");
    for (k, v) in s.bytes_by_dtype() {
        let _ = writeln!(out, "  {k}: {v}");
    }
    let _ = writeln!(out, "tensors ({}):", s.tensors.len());
    for t in &s.tensors {
        let _ = writeln!(
            out,
            "  {} {} {:?} ({} bytes)",
            t.name, t.dtype, t.shape, t.bytes
        );
    }
    out
}

/// The `--json` report.
fn summary_json(s: &ModelSummary) -> serde_json::Value {
    serde_json::json!({
        "format": s.format,
        "architecture": s.architecture,
        "parameters": s.parameters,
        "config": s.config,
        "bytes_by_dtype": s.bytes_by_dtype(),
        "tensors": s.tensors.iter().map(|t| serde_json::json!({
            "name": t.name, "dtype": t.dtype, "shape": t.shape, "bytes": t.bytes,
        })).collect::<Vec<_>>(),
    })
}
