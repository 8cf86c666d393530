//! Checks on evidence other tools wrote: line coverage from llvm-cov's JSON summary, a
//! fuzzing campaign's crash count, and cargo-deny's licence check. Without the file, the check did
//! not run and is not counted.

use super::Check;
use std::path::Path;

const COVERAGE: &str = "line coverage of the test suite (llvm-cov)";
const FUZZING: &str = "the last fuzzing campaign found no crash";
const LICENCES: &str = "every dependency's licence is allowed (cargo-deny)";

/// Reads a JSON file, or says why not.
fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

/// `coverage`: the summary's line coverage at least `percent`.
pub fn coverage(path: Option<&Path>, percent: f64) -> Check {
    let Some(path) = path else {
        return Check::not_run(
            "coverage",
            COVERAGE,
            "no coverage summary given (--coverage FILE from scripts/coverage.sh)".into(),
        );
    };
    let totals = read_json(path).and_then(|v| {
        let lines = &v["data"][0]["totals"]["lines"];
        match (lines["covered"].as_u64(), lines["count"].as_u64()) {
            (Some(covered), Some(count)) if count > 0 => Ok((covered, count)),
            _ => Err(format!(
                "{}: no data[0].totals.lines with covered and count",
                path.display()
            )),
        }
    });
    match totals {
        Ok((covered, count)) => {
            let p = 100.0 * covered as f64 / count as f64;
            Check::ran(
                "coverage",
                COVERAGE,
                p >= percent,
                format!(
                    "{}: {covered} of {count} lines = {p:.1} % (the level asks {percent} %)",
                    path.display()
                ),
            )
        }
        Err(e) => Check::ran("coverage", COVERAGE, false, e),
    }
}

/// `fuzzing`: a campaign summary `{"targets": {name: {"runs": n, "crashes": n}}}` with runs and
/// no crash.
pub fn fuzzing(path: Option<&Path>) -> Check {
    let Some(path) = path else {
        return Check::not_run(
            "fuzzing",
            FUZZING,
            "no campaign summary given (--fuzz FILE)".into(),
        );
    };
    let summary = read_json(path).and_then(|v| {
        let targets = v["targets"]
            .as_object()
            .ok_or_else(|| format!("{}: no \"targets\" object", path.display()))?;
        let mut runs = 0u64;
        let mut crashed = Vec::new();
        for (name, t) in targets {
            let (Some(r), Some(c)) = (t["runs"].as_u64(), t["crashes"].as_u64()) else {
                return Err(format!(
                    "{}: target {name} lacks \"runs\" or \"crashes\"",
                    path.display()
                ));
            };
            runs += r;
            if c > 0 {
                crashed.push(format!("{name} ({c})"));
            }
        }
        Ok((targets.len(), runs, crashed))
    });
    match summary {
        Ok((targets, runs, crashed)) => Check::ran(
            "fuzzing",
            FUZZING,
            targets > 0 && runs > 0 && crashed.is_empty(),
            format!(
                "{}: {targets} targets, {runs} runs, crashes: {}",
                path.display(),
                if crashed.is_empty() {
                    "none".to_string()
                } else {
                    crashed.join(", ")
                }
            ),
        ),
        Err(e) => Check::ran("fuzzing", FUZZING, false, e),
    }
}

/// `licences`: cargo-deny's JSON-lines output holds no error diagnostic.
pub fn licences(path: Option<&Path>) -> Check {
    let Some(path) = path else {
        return Check::not_run(
            "licences",
            LICENCES,
            "no cargo-deny output given (--licences FILE from `cargo deny --format json check licenses`)"
                .into(),
        );
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Check::ran(
                "licences",
                LICENCES,
                false,
                format!("{}: {e}", path.display()),
            );
        }
    };
    let mut errors = Vec::new();
    let mut lines = 0usize;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        lines += 1;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return Check::ran(
                "licences",
                LICENCES,
                false,
                format!("{}: line {lines} is not JSON", path.display()),
            );
        };
        if v["fields"]["severity"] == "error" {
            errors.push(v["fields"]["message"].as_str().unwrap_or("?").to_string());
        }
    }
    Check::ran(
        "licences",
        LICENCES,
        errors.is_empty(),
        format!(
            "{}: {lines} diagnostics, {} errors{}",
            path.display(),
            errors.len(),
            errors.first().map_or(String::new(), |e| format!(": {e}"))
        ),
    )
}
