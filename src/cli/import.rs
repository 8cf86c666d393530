//! `bitnetc import MODEL`: the IR a model imports to, its weights as references into its files.

use super::output::write_or_print;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The model.
    pub model: PathBuf,
    /// Write the IR here instead of stdout (an existing file is not overwritten).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Build the function for this context length (default: the model's maximum).
    #[arg(long)]
    pub context: Option<u64>,
}

/// Runs the command.
pub fn run(args: &ImportArgs) -> Result<ExitCode> {
    let m = bitnetc::OpenOptions {
        context: args.context,
        ..Default::default()
    }
    .open(&args.model)?;
    let text = bitnet_ir::text::print_module(&m.module);
    write_or_print(args.output.as_deref(), &text)?;
    Ok(ExitCode::SUCCESS)
}
