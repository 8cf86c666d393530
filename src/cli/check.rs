//! `bitnetc check FILE.bir`: parse and verify IR; every error (exit 1), or a one-line summary.

use super::bir_file::load_or_report;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// The IR file.
    pub file: PathBuf,
}

/// Runs the command.
pub fn run(args: &CheckArgs) -> Result<ExitCode> {
    let Some(m) = load_or_report(&args.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let ops: usize = m.functions.iter().map(|f| f.ops.len()).sum();
    println!(
        "{}: ok ({} function(s), {ops} op(s))",
        args.file.display(),
        m.functions.len()
    );
    Ok(ExitCode::SUCCESS)
}
