//! The quality gates of `bitnetc validate`: each a figure of the report, a bound, and whether the
//! figure met it. The seed's three are on by default: weight memory ≥ 8× on the projections
//! BitNet quantizes, decode ≥ 2× the full-precision build, and at most 10 % accuracy degradation,
//! measured two ways that must both hold: the perplexity on the text at most 10 % above the
//! reference's (`max_ppl_increase`), and the mean `KL(reference ‖ model)` at most ln 1.1
//! (`max_kl_mean`): the mean extra log-loss of the model's predictions when the reference's are
//! taken as the truth, so exp(KL) − 1 is the perplexity increase against the reference's own
//! predictions. The second catches what text perplexity alone misses on weak or random models,
//! whose perplexity a corrupted weight can leave unchanged or even lower. The other gates are off
//! until a gate file sets them. A gate file is a JSON object
//! whose keys are gate names and values the bounds (`null` turns a gate off); an unknown key is
//! an error naming the file and the key.
//!
//! A figure is compared as the report prints it (ratios rounded to two decimals, the perplexity
//! increase and same-top-1 share to four, KL divergences to six), so a reader can check each
//! verdict from the printed numbers: a 2-bit projection stored with its scale is 7.9999× smaller
//! than its bf16 master, which the report prints, and the gate judges, as 8.

use crate::Error;
use std::path::Path;

/// Whether a gate bounds its figure from below or from above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The figure must be at least the threshold.
    AtLeast,
    /// The figure must be at most the threshold.
    AtMost,
}

/// One gate's definition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateSpec {
    /// Its name in gate files and reports.
    pub name: &'static str,
    /// What it measures, for people.
    pub what: &'static str,
    /// Its direction.
    pub bound: Bound,
    /// The default threshold; `None`: off unless a gate file sets it.
    pub default: Option<f64>,
    /// Decimals the figure is compared at.
    pub decimals: i32,
}

/// Every gate, in report order.
pub const GATES: &[GateSpec] = &[
    GateSpec {
        name: "min_projection_weight_reduction",
        what: "bf16 bytes of the ternary projections ÷ their stored bytes",
        bound: Bound::AtLeast,
        default: Some(8.0),
        decimals: 2,
    },
    GateSpec {
        name: "min_model_weight_reduction",
        what: "the reference's weight bytes ÷ the model's",
        bound: Bound::AtLeast,
        default: None,
        decimals: 2,
    },
    GateSpec {
        name: "min_decode_speedup",
        what: "decode tok/s ÷ the reference's",
        bound: Bound::AtLeast,
        default: Some(2.0),
        decimals: 2,
    },
    GateSpec {
        name: "min_prefill_speedup",
        what: "prefill tok/s ÷ the reference's",
        bound: Bound::AtLeast,
        default: None,
        decimals: 2,
    },
    GateSpec {
        name: "max_ppl_increase",
        what: "perplexity ÷ the reference's − 1",
        bound: Bound::AtMost,
        default: Some(0.10),
        decimals: 4,
    },
    GateSpec {
        name: "max_kl_mean",
        what: "mean KL(reference ‖ model) per token (nats)",
        bound: Bound::AtMost,
        // ln 1.1: the model's perplexity against the reference's own predictions at most 10 %
        // above the reference's (mean KL is the mean extra log-loss; see the module doc).
        default: Some(0.0953),
        decimals: 6,
    },
    GateSpec {
        name: "max_kl_p99",
        what: "99th percentile of KL per token",
        bound: Bound::AtMost,
        default: None,
        decimals: 6,
    },
    GateSpec {
        name: "max_kl_max",
        what: "largest KL of any token",
        bound: Bound::AtMost,
        default: None,
        decimals: 6,
    },
    GateSpec {
        name: "min_same_top1",
        what: "share of positions whose top token is the reference's",
        bound: Bound::AtLeast,
        default: None,
        decimals: 4,
    },
    GateSpec {
        name: "max_peak_rss_bytes",
        what: "peak resident memory while the model compiled and ran",
        bound: Bound::AtMost,
        default: None,
        decimals: 0,
    },
];

/// The thresholds in force, by gate (in `GATES` order; `None`: off).
#[derive(Clone, Debug, PartialEq)]
pub struct Gates {
    thresholds: Vec<Option<f64>>,
}

impl Default for Gates {
    fn default() -> Gates {
        Gates {
            thresholds: GATES.iter().map(|g| g.default).collect(),
        }
    }
}

/// One gate's verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The gate.
    pub gate: GateSpec,
    /// Its threshold.
    pub threshold: f64,
    /// The figure, as compared (rounded); `None` when the run could not measure it (a failure).
    pub value: Option<f64>,
    /// Whether the figure met the threshold.
    pub pass: bool,
}

impl Gates {
    /// The defaults overridden by the gate file at `path`.
    pub fn from_file(path: &Path) -> Result<Gates, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Gates::parse(&text, &path.display().to_string())
    }

    /// The defaults overridden by a gate file's text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Gates, Error> {
        let bad = |m: String| Error::Validate(format!("{source}: {m}"));
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| bad("expected a JSON object of gate names and bounds".into()))?;
        let mut gates = Gates::default();
        for (key, v) in object {
            let i = GATES.iter().position(|g| g.name == key).ok_or_else(|| {
                bad(format!(
                    "unknown gate \"{key}\"; the gates are {}",
                    GATES.iter().map(|g| g.name).collect::<Vec<_>>().join(", ")
                ))
            })?;
            gates.thresholds[i] = match v {
                serde_json::Value::Null => None,
                v => Some(
                    v.as_f64()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| bad(format!("\"{key}\": {v} is not a number or null")))?,
                ),
            };
        }
        Ok(gates)
    }

    /// Judges the figures, given by gate name (`None`: not measured).
    pub fn judge(&self, figure: impl Fn(&str) -> Option<f64>) -> Vec<Verdict> {
        GATES
            .iter()
            .zip(&self.thresholds)
            .filter_map(|(gate, t)| {
                let threshold = (*t)?;
                let value = figure(gate.name)
                    .filter(|x| x.is_finite())
                    .map(|x| round(x, gate.decimals));
                let pass = value.is_some_and(|x| match gate.bound {
                    Bound::AtLeast => x >= threshold,
                    Bound::AtMost => x <= threshold,
                });
                Some(Verdict {
                    gate: *gate,
                    threshold,
                    value,
                    pass,
                })
            })
            .collect()
    }
}

/// `x` rounded to `decimals` decimals.
fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_file_overrides_turns_off_and_rejects_unknown_names() {
        let g = Gates::parse(
            r#"{"min_decode_speedup": 3, "max_ppl_increase": null, "max_kl_mean": 0.01}"#,
            "g.json",
        )
        .unwrap();
        let v = g.judge(|name| match name {
            "min_projection_weight_reduction" => Some(7.9999),
            "min_decode_speedup" => Some(2.5),
            "max_kl_mean" => Some(0.001),
            _ => None,
        });
        let names: Vec<_> = v.iter().map(|v| (v.gate.name, v.pass)).collect();
        assert_eq!(
            names,
            [
                ("min_projection_weight_reduction", true),
                ("min_decode_speedup", false),
                ("max_kl_mean", true)
            ]
        );
        let e = Gates::parse(r#"{"min_speed": 2}"#, "g.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("g.json") && e.contains("min_speed"), "{e}");
        let e = Gates::parse(r#"{"max_kl_mean": "low"}"#, "g.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_kl_mean"), "{e}");
    }

    #[test]
    fn an_unmeasured_figure_fails_its_gate() {
        let v = Gates::default().judge(|_| None);
        assert_eq!(v.len(), 4);
        assert!(v.iter().all(|v| !v.pass && v.value.is_none()));
    }
}
