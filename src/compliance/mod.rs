//! `bitnetc compliance`: a report of checked facts about an artifact (or a model compiled into one),
//! the audit log, the source tree and the evidence of the last test campaigns, each with its
//! evidence and a verdict, and a score: the share of the checks that ran and passed. A check that
//! could not run (no source tree, no coverage file given) is listed as not run and not counted;
//! the level (`standard`, `enhanced`, `defense-grade`) says which checks must have run and passed.
//!
//! The checks live in `checks` (the artifact, its rebuild, the audit chain, the malformed-input
//! corpus), `source_scan` (unsafe blocks with their SAFETY comments, panics in library code) and
//! `evidence` (coverage, fuzzing and licence reports written by other tools).

pub mod checks;
pub mod evidence;
pub mod source_scan;

use crate::Error;
use std::path::PathBuf;

/// A compliance level: which checks must run and pass, and the coverage it asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The artifact, its rebuild, the audit chain, the malformed inputs, unsafe and panics.
    Standard,
    /// Standard, plus line coverage ≥ 80 %, a fuzzing campaign without crashes, licences allowed.
    Enhanced,
    /// Enhanced with line coverage ≥ 95 % (the seed's gate).
    DefenseGrade,
}

impl Level {
    /// Parses `standard`, `enhanced`, `defense-grade`.
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "standard" => Some(Level::Standard),
            "enhanced" => Some(Level::Enhanced),
            "defense-grade" => Some(Level::DefenseGrade),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Level::Standard => "standard",
            Level::Enhanced => "enhanced",
            Level::DefenseGrade => "defense-grade",
        }
    }

    /// The checks it requires, by id.
    pub fn required(self) -> &'static [&'static str] {
        const STANDARD: &[&str] = &[
            "artifact_hashes",
            "rebuild_identical",
            "audit_chain",
            "malformed_inputs",
            "unsafe_documented",
            "no_panics_in_library",
        ];
        const ENHANCED: &[&str] = &[
            "artifact_hashes",
            "rebuild_identical",
            "audit_chain",
            "malformed_inputs",
            "unsafe_documented",
            "no_panics_in_library",
            "coverage",
            "fuzzing",
            "licences",
        ];
        match self {
            Level::Standard => STANDARD,
            Level::Enhanced | Level::DefenseGrade => ENHANCED,
        }
    }

    /// The line coverage it asks for, in percent.
    pub fn coverage_percent(self) -> f64 {
        match self {
            Level::Standard | Level::Enhanced => 80.0,
            Level::DefenseGrade => 95.0,
        }
    }
}

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// It ran and held.
    Pass,
    /// It ran and did not hold.
    Fail,
    /// It could not run (its input is missing); not counted in the score.
    NotRun,
}

impl Status {
    /// `pass`, `fail`, `not run`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::NotRun => "not run",
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Its id.
    pub id: &'static str,
    /// What it checks, for people.
    pub what: &'static str,
    /// Its verdict.
    pub status: Status,
    /// What it saw: numbers, paths, the first problems found.
    pub evidence: String,
}

impl Check {
    /// A check that ran: `pass` when `ok`.
    pub fn ran(id: &'static str, what: &'static str, ok: bool, evidence: String) -> Check {
        Check {
            id,
            what,
            status: if ok { Status::Pass } else { Status::Fail },
            evidence,
        }
    }

    /// A check that could not run, and why.
    pub fn not_run(id: &'static str, what: &'static str, why: String) -> Check {
        Check {
            id,
            what,
            status: Status::NotRun,
            evidence: why,
        }
    }
}

/// What to check.
#[derive(Clone, Debug)]
pub struct ComplianceOptions {
    /// An artifact, or a model to compile into one (twice: the rebuild check).
    pub target: Option<PathBuf>,
    /// The model an artifact was compiled from (for its rebuild).
    pub model: Option<PathBuf>,
    /// The level.
    pub level: Level,
    /// The audit log to verify.
    pub audit_log: Option<PathBuf>,
    /// The bitnetc source tree (for the source scans and the malformed-input corpus).
    pub source: Option<PathBuf>,
    /// llvm-cov's JSON summary (`scripts/coverage.sh`, or `cargo llvm-cov --json --summary-only`).
    pub coverage: Option<PathBuf>,
    /// A fuzzing campaign's summary (JSON: `{"targets": {name: {"runs": n, "crashes": n}}}`).
    pub fuzz: Option<PathBuf>,
    /// cargo-deny's licence check output (its JSON lines, `cargo deny --format json check licenses`).
    pub licences: Option<PathBuf>,
    /// How the rebuild compiles (its lm_head and dense storage, as the artifact was compiled).
    pub cpu: crate::CpuOptions,
}

/// The whole report.
#[derive(Clone, Debug)]
pub struct Report {
    /// The level judged.
    pub level: Level,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// Checks that ran, and of those, passed.
    pub fn counts(&self) -> (usize, usize) {
        let ran = self
            .checks
            .iter()
            .filter(|c| c.status != Status::NotRun)
            .count();
        let passed = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Pass)
            .count();
        (ran, passed)
    }

    /// The share of the checks that ran that passed (0 when none ran).
    pub fn score(&self) -> f64 {
        let (ran, passed) = self.counts();
        if ran == 0 {
            0.0
        } else {
            passed as f64 / ran as f64
        }
    }

    /// The checks the level requires that did not pass (failed or not run).
    pub fn missing(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| self.level.required().contains(&c.id) && c.status != Status::Pass)
            .collect()
    }

    /// Whether the level is met: every check that ran passed, and every required one ran.
    pub fn pass(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail) && self.missing().is_empty()
    }

    /// The report as JSON.
    pub fn json(&self) -> serde_json::Value {
        let (ran, passed) = self.counts();
        serde_json::json!({
            "level": self.level.name(),
            "pass": self.pass(),
            "score": self.score(),
            "checks_run": ran,
            "checks_passed": passed,
            "missing_for_level": self.missing().iter().map(|c| c.id).collect::<Vec<_>>(),
            "checks": self.checks.iter().map(|c| serde_json::json!({
                "id": c.id,
                "what": c.what,
                "status": c.status.name(),
                "required": self.level.required().contains(&c.id),
                "evidence": c.evidence,
            })).collect::<Vec<_>>(),
        })
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let (ran, passed) = self.counts();
        let mut s = format!(
            "# bitnetc compliance: {}\n\nLevel **{}**: {}. Score {passed}/{ran} checks run = {:.0} % (checks that did not run are not counted).\n\n| check | status | required | evidence |\n|---|---|---|---|\n",
            if self.pass() { "pass" } else { "FAIL" },
            self.level.name(),
            if self.pass() { "met" } else { "not met" },
            100.0 * self.score()
        );
        for c in &self.checks {
            s.push_str(&format!(
                "| `{}` ({}) | {} | {} | {} |\n",
                c.id,
                c.what,
                c.status.name(),
                if self.level.required().contains(&c.id) {
                    "yes"
                } else {
                    "no"
                },
                c.evidence.replace('|', "\\|").replace('\n', "<br>")
            ));
        }
        s
    }
}

/// Runs every check `options` allow.
pub fn run(options: &ComplianceOptions) -> Result<Report, Error> {
    let mut checks = checks::artifact_checks(options)?;
    checks.push(checks::audit_chain(options.audit_log.as_deref()));
    checks.push(checks::malformed_inputs(options.source.as_deref()));
    checks.extend(source_scan::checks(options.source.as_deref()));
    checks.push(evidence::coverage(
        options.coverage.as_deref(),
        options.level.coverage_percent(),
    ));
    checks.push(evidence::fuzzing(options.fuzz.as_deref()));
    checks.push(evidence::licences(options.licences.as_deref()));
    Ok(Report {
        level: options.level,
        checks,
    })
}
