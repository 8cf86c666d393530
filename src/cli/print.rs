//! `bitnetc print FILE.bir`: the IR in canonical form (the printer's deterministic text).

use super::bir_file::load_or_report;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc print`.
#[derive(clap::Args)]
pub struct PrintArgs {
    /// The IR file.
    pub file: PathBuf,
}

/// Runs the command.
pub fn run(args: &PrintArgs) -> Result<ExitCode> {
    let Some(m) = load_or_report(&args.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    print!("{}", bitnet_ir::text::print_module(&m));
    Ok(ExitCode::SUCCESS)
}
