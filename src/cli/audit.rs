//! `bitnetc audit verify LOG`: check an audit log's hash chain.

use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc audit`.
#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: AuditCommand,
}

/// What to do with an audit log.
#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Check an audit log's hash chain: print "ok: N records" or the first broken link (exit 1),
    /// and the operations that started and never ended ("interrupted: …", killed or still running).
    Verify {
        /// The log.
        path: PathBuf,
    },
}

/// Runs the command.
pub fn run(args: &AuditArgs) -> Result<ExitCode> {
    let AuditCommand::Verify { path } = &args.action;
    let report = bitnet_runtime::audit::verify(path)?;
    if let Some(p) = &report.problem {
        println!(
            "{}: {p} ({} whole record(s) before it verify)",
            path.display(),
            report.records
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("ok: {} records", report.records);
    for line in &report.skipped {
        println!("note: line {line} is a record cut off by a crash; the chain links across it");
    }
    for u in &report.unfinished {
        let pid = u.pid.map_or_else(String::new, |p| format!(", pid {p}"));
        let alive = u
            .pid
            .is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        println!(
            "interrupted: line {}: {} started at {}{pid} and never ended{} (op {})",
            u.line,
            u.command,
            u.time,
            if alive {
                " (that process id is running now: it may still be at work)"
            } else {
                ""
            },
            u.op
        );
    }
    if let Some(line) = report.incomplete_tail {
        println!("note: line {line} onwards is an incomplete record (a write was cut off)");
    }
    Ok(ExitCode::SUCCESS)
}
