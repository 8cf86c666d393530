//! `bitnetc compliance`: the checked facts about an artifact (or a model compiled into one), the
//! audit log, the source tree and the last test campaigns, as a table, JSON or Markdown; exit 1
//! when the level is not met. The checks are `bitnetc::compliance`'s.

use super::audit_log::Target;
use anyhow::{Result, bail};
use bitnetc::compliance::{ComplianceOptions, Level, Report, run as check};
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc compliance`.
#[derive(clap::Args, Debug)]
pub struct ComplianceArgs {
    /// An artifact (.bnx), or a model to compile into one (twice, to check the rebuild).
    pub target: Option<PathBuf>,
    /// The model an artifact was compiled from, to rebuild it.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// standard, enhanced or defense-grade: which checks must run and pass.
    #[arg(long, default_value = "standard", value_parser = parse_level)]
    pub level: Level,
    /// The bitnetc source tree, for the source scans and the malformed-input corpus (default:
    /// the current folder when it holds bitnetc's Cargo.toml).
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// llvm-cov's JSON summary (`scripts/coverage.sh`, or `cargo llvm-cov --json --summary-only`).
    #[arg(long)]
    pub coverage: Option<PathBuf>,
    /// A fuzzing campaign's summary: `{"targets": {"NAME": {"runs": N, "crashes": N}}}`.
    #[arg(long)]
    pub fuzz: Option<PathBuf>,
    /// cargo-deny's output (`cargo deny --format json check licenses`).
    #[arg(long)]
    pub licences: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, conflicts_with = "md")]
    pub json: bool,
    /// Print Markdown.
    #[arg(long)]
    pub md: bool,
    #[command(flatten)]
    pub precision: super::flags::PrecisionArgs,
}

/// The source tree to scan: `given`, else the current folder when it holds bitnetc's Cargo.toml.
pub fn source_tree(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        let here = PathBuf::from(".");
        std::fs::read_to_string(here.join("Cargo.toml"))
            .ok()
            .filter(|t| t.contains("name = \"bitnetc\""))
            .map(|_| here)
    })
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s).ok_or_else(|| format!("{s:?}: expected standard, enhanced or defense-grade"))
}

/// Runs the command; `log` is the audit log in force (its chain is one of the checks).
pub fn run(args: &ComplianceArgs, log: Option<&Target>) -> Result<ExitCode> {
    if args.precision.quantize.is_some() {
        bail!("--quantize: a compliance check compiles the model as published");
    }
    let source = source_tree(args.source.clone());
    let options = ComplianceOptions {
        target: args.target.clone(),
        model: args.model.clone(),
        level: args.level,
        audit_log: log.map(|t| t.path.clone()),
        source,
        coverage: args.coverage.clone(),
        fuzz: args.fuzz.clone(),
        licences: args.licences.clone(),
        cpu: bitnetc::CpuOptions {
            head: args.precision.head_dtype,
            dense: args.precision.dense_dtype,
            ..bitnetc::CpuOptions::default()
        },
    };
    let report = check(&options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else if args.md {
        print!("{}", report.markdown());
    } else {
        print_table(&report);
    }
    Ok(if report.pass() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(r: &Report) {
    let (ran, passed) = r.counts();
    for c in &r.checks {
        println!(
            "{:<8} {:<22} {}{}",
            c.status.name(),
            c.id,
            c.evidence,
            if r.level.required().contains(&c.id) {
                ""
            } else {
                "  (not required at this level)"
            }
        );
    }
    println!(
        "level {}: {}; score {passed}/{ran} = {:.0} % of the checks that ran{}",
        r.level.name(),
        if r.pass() { "met" } else { "NOT met" },
        100.0 * r.score(),
        match r.missing().as_slice() {
            [] => String::new(),
            m => format!(
                "; required and not passed: {}",
                m.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
            ),
        }
    );
}
