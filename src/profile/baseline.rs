//! A profile against a saved one (`bitnetc profile --baseline`, the report `--save` wrote).
//!
//! Both must profile the same program (the same launch labels, in order) with the same prompt
//! length; anything else is an error, not a comparison. Per phase, the step, every kernel group
//! and every layer are compared by their time per step. One has regressed when it got slower by
//! more than `threshold` (a fraction of its baseline time) and the slowdown is at least
//! `MIN_STEP_SHARE` of the baseline's step time, so that doubling a launch that takes a fraction
//! of a percent of the step is not reported, but a launch that grows to matter is.

use super::report::PHASES;
use crate::Error;
use serde_json::{Value, json};
use std::path::Path;

/// What a saved profile's `format` says.
pub const FORMAT: &str = "bitnetc-profile/1";

/// The least slowdown that counts, as a share of the baseline's mean step time.
pub const MIN_STEP_SHARE: f64 = 0.01;

/// One compared item that got slower than the threshold allows.
pub struct Regression {
    /// `prefill` or `decode`.
    pub phase: &'static str,
    /// `step`, `group` or `layer`.
    pub kind: &'static str,
    /// The group or layer (`q_proj: bit.ternary_matmul`, `layer 3`), or `step`.
    pub name: String,
    /// Milliseconds per step in the baseline and now.
    pub base_ms: f64,
    /// Milliseconds per step now.
    pub now_ms: f64,
}

impl Regression {
    /// The regression as the report's JSON.
    pub fn json(&self) -> Value {
        json!({
            "phase": self.phase,
            "kind": self.kind,
            "name": self.name,
            "baseline_ms_per_step": self.base_ms,
            "ms_per_step": self.now_ms,
            "slowdown": self.now_ms / self.base_ms - 1.0,
        })
    }

    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "{} {} {:?}: {:.3} → {:.3} ms per step ({:+.0}%)",
            self.phase,
            self.kind,
            self.name,
            self.base_ms,
            self.now_ms,
            100.0 * (self.now_ms / self.base_ms - 1.0)
        )
    }
}

/// Reads a saved profile, checking that it is one.
pub fn read(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Profile(format!("{}: cannot read the baseline: {e}", path.display()))
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        Error::Profile(format!(
            "{}: not JSON (a baseline is a `profile --save` file): {e}",
            path.display()
        ))
    })?;
    check_format(&value, &path.display().to_string())?;
    Ok(value)
}

/// Checks that `value` (from `source`) is a saved profile.
pub fn check_format(value: &Value, source: &str) -> Result<(), Error> {
    if value["format"].as_str() != Some(FORMAT) {
        return Err(Error::Profile(format!(
            "{source}: field `format` is {}, not {FORMAT:?}: not a profile saved by `bitnetc profile --save`",
            value["format"]
        )));
    }
    Ok(())
}

/// Compares `now` against `base` (read from `source`), as the module doc says.
pub fn compare(
    now: &Value,
    base: &Value,
    source: &str,
    threshold: f64,
) -> Result<Vec<Regression>, Error> {
    let labels = |v: &Value| -> Vec<String> {
        v["labels"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| l.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (ours, theirs) = (labels(now), labels(base));
    if ours != theirs {
        let first = ours.iter().zip(&theirs).position(|(a, b)| a != b);
        let detail = match first {
            Some(i) => format!("launch {i} is {:?} here and {:?} there", ours[i], theirs[i]),
            None => "one launch plan is a prefix of the other".to_string(),
        };
        return Err(Error::Profile(format!(
            "{source}: the baseline profiles another program ({} launches, model {}), this run {} \
             launches of {}; {detail}. Compare profiles of the same model and build flags",
            theirs.len(),
            base["model"],
            ours.len(),
            now["model"]
        )));
    }
    if now["prompt_len"] != base["prompt_len"] {
        return Err(Error::Profile(format!(
            "{source}: the baseline's prefill ran {} tokens, this run {}: give the same prompt length (--prompt-len)",
            base["prompt_len"], now["prompt_len"]
        )));
    }
    let mut found = Vec::new();
    for phase in PHASES {
        let (n, b) = (&now["phases"][phase], &base["phases"][phase]);
        let step_ms = b["step"]["mean_ms"].as_f64().unwrap_or(0.0);
        let floor = MIN_STEP_SHARE * step_ms;
        let mut check = |kind: &'static str, name: String, base_ms: f64, now_ms: f64| {
            if now_ms - base_ms > threshold * base_ms && now_ms - base_ms >= floor {
                found.push(Regression {
                    phase,
                    kind,
                    name,
                    base_ms,
                    now_ms,
                });
            }
        };
        check(
            "step",
            "step".into(),
            step_ms,
            n["step"]["mean_ms"].as_f64().unwrap_or(0.0),
        );
        for kind in ["groups", "layers"] {
            let per_step = |v: &Value| -> Vec<(String, f64)> {
                v[kind]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        (
                            r["name"].as_str().unwrap_or("").to_string(),
                            r["ms_per_step"].as_f64().unwrap_or(0.0),
                        )
                    })
                    .collect()
            };
            let theirs = per_step(b);
            for (name, now_ms) in per_step(n) {
                let base_ms = theirs.iter().find(|(t, _)| *t == name).map_or(0.0, |t| t.1);
                check(
                    if kind == "groups" { "group" } else { "layer" },
                    name,
                    base_ms,
                    now_ms,
                );
            }
        }
    }
    Ok(found)
}

/// Compares `report` against `base` (read from `source`) and adds what regressed to it, as
/// `regressions` (the report's JSON of each); returns them.
pub fn annotate(
    report: &mut Value,
    base: &Value,
    source: &str,
    threshold: f64,
) -> Result<Vec<Regression>, Error> {
    if !(threshold.is_finite() && threshold >= 0.0) {
        return Err(Error::Profile(format!(
            "threshold {threshold}: give a fraction of at least 0 (0.10 is 10%)"
        )));
    }
    let found = compare(report, base, source, threshold)?;
    report["regressions"] = found.iter().map(Regression::json).collect();
    Ok(found)
}
