//! The profile report: from the executor's launch and step events, per phase (the prefill step,
//! then the decode steps) the step times, and per launch, per kernel group and per layer the
//! count, total, mean and percentiles of the launches' wall times; each pool thread's busy share.
//!
//! A launch's label (`layer 3 q_proj: bit.ternary_matmul → %43`) names its layer (`layer 3`, or
//! `model` for the embedding, final norm and lm_head) and its group: the label without the layer
//! and the result (`q_proj: bit.ternary_matmul`), so a group gathers one projection over every layer.

use crate::speed::percentile_ms;
use bitnet_runtime::Program;
use bitnet_runtime::executor::StepProfile;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// The two phases of a profiled run: its first step is the prefill, the others decode steps.
pub const PHASES: [&str; 2] = ["prefill", "decode"];

/// The phase of profiled step `step`.
pub fn phase_of(step: u32) -> &'static str {
    if step == 0 { PHASES[0] } else { PHASES[1] }
}

/// The layer a launch label names: `layer N`, or `model` for a launch outside the layers.
pub fn layer_key(label: &str) -> String {
    layer_number(label).map_or_else(|| "model".to_string(), |n| format!("layer {n}"))
}

/// The layer number of a launch label, if it names one.
pub fn layer_number(label: &str) -> Option<u64> {
    let rest = label.strip_prefix("layer ")?;
    rest.split(' ').next()?.parse().ok()
}

/// A launch label's group: without its layer and its result (`q_proj: bit.ternary_matmul`, with
/// anything after the result kept: ` (cache write)`).
pub fn group_key(label: &str) -> String {
    let rest = match layer_number(label) {
        Some(n) => label.strip_prefix(&format!("layer {n} ")).unwrap_or(label),
        None => label,
    };
    match rest.split_once(" → %") {
        Some((head, tail)) => {
            let after = tail.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{head}{after}")
        }
        None => rest.to_string(),
    }
}

/// Count, total, mean and percentiles of `ns` (launch or step wall times) in milliseconds, and
/// the total per step over `steps` steps.
fn stats(ns: &[u64], steps: usize) -> Value {
    let mut sorted: Vec<Duration> = ns.iter().map(|&n| Duration::from_nanos(n)).collect();
    sorted.sort();
    let total: u64 = ns.iter().sum();
    let ms = total as f64 / 1e6;
    json!({
        "count": ns.len(),
        "total_ms": ms,
        "mean_ms": if ns.is_empty() { 0.0 } else { ms / ns.len() as f64 },
        "p50_ms": percentile_ms(&sorted, 50.0),
        "p95_ms": percentile_ms(&sorted, 95.0),
        "p99_ms": percentile_ms(&sorted, 99.0),
        "ms_per_step": ms / steps.max(1) as f64,
    })
}

/// Named rows of stats, each with its share of the phase's step time; sorted by `order`.
fn rows(samples: BTreeMap<String, Vec<u64>>, steps: usize, step_ms: f64) -> Vec<Value> {
    samples
        .into_iter()
        .map(|(name, ns)| {
            let mut row = stats(&ns, steps);
            let per_step = row["ms_per_step"].as_f64().unwrap_or(0.0);
            row["name"] = name.into();
            row["share"] = (if step_ms > 0.0 {
                per_step / step_ms
            } else {
                0.0
            })
            .into();
            row
        })
        .collect()
}

/// One phase of the profile: its steps, launches, groups, layers and the threads' busy shares
/// (`busy_ns`: each thread's busy nanoseconds during the phase).
pub fn phase(program: &Program, profile: &StepProfile, name: &str, busy_ns: &[u64]) -> Value {
    let steps: Vec<_> = profile
        .step_events
        .iter()
        .filter(|s| phase_of(s.step) == name)
        .collect();
    let step_ns: Vec<u64> = steps.iter().map(|s| s.dur_ns).collect();
    let wall_ns: u64 = step_ns.iter().sum();
    let step_stats = stats(&step_ns, steps.len());
    let step_ms = step_stats["mean_ms"].as_f64().unwrap_or(0.0);
    let mut by_launch: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut by_group: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut by_layer: BTreeMap<(Option<u64>, String), Vec<u64>> = BTreeMap::new();
    for e in profile.launches.iter().filter(|e| phase_of(e.step) == name) {
        let Some(l) = program.launches.get(e.launch as usize) else {
            continue;
        };
        by_launch.entry(e.launch).or_default().push(e.dur_ns);
        by_group
            .entry(group_key(&l.label))
            .or_default()
            .push(e.dur_ns);
        let layer = (layer_number(&l.label), layer_key(&l.label));
        by_layer.entry(layer).or_default().push(e.dur_ns);
    }
    let n = steps.len();
    let mut groups = rows(by_group, n, step_ms);
    groups.sort_by(|a, b| {
        f64::total_cmp(
            &b["total_ms"].as_f64().unwrap_or(0.0),
            &a["total_ms"].as_f64().unwrap_or(0.0),
        )
    });
    // Layers in model order: the layers by number, then the launches outside them.
    let mut layers = Vec::new();
    let mut outside = Vec::new();
    for ((number, key), ns) in by_layer {
        let row = rows(BTreeMap::from([(key, ns)]), n, step_ms);
        if number.is_some() {
            layers.extend(row);
        } else {
            outside.extend(row);
        }
    }
    layers.extend(outside);
    let launches: Vec<Value> = by_launch
        .into_iter()
        .map(|(i, ns)| {
            let label = program
                .launches
                .get(i as usize)
                .map_or("", |l| l.label.as_str());
            let mut row = rows(BTreeMap::from([(label.to_string(), ns)]), n, step_ms);
            let mut row = row.pop().unwrap_or(Value::Null);
            row["index"] = i.into();
            row
        })
        .collect();
    let busy: Vec<f64> = busy_ns
        .iter()
        .map(|&b| {
            if wall_ns > 0 {
                b as f64 / wall_ns as f64
            } else {
                0.0
            }
        })
        .collect();
    json!({
        "steps": n,
        "tokens": steps.iter().map(|s| u64::from(s.tokens)).sum::<u64>(),
        "step": step_stats,
        "launch_ms_per_step": profile.launches.iter().filter(|e| phase_of(e.step) == name).map(|e| e.dur_ns).sum::<u64>() as f64 / 1e6 / n.max(1) as f64,
        "busy": busy,
        "groups": groups,
        "layers": layers,
        "launches": launches,
    })
}

#[cfg(test)]
mod tests {
    use super::{group_key, layer_key};

    #[test]
    fn keys_of_labels() {
        let l = "layer 3 q_proj: bit.ternary_matmul → %43";
        assert_eq!(
            (layer_key(l), group_key(l)),
            ("layer 3".into(), "q_proj: bit.ternary_matmul".into())
        );
        let c = "layer 0 attention: nn.attention → %16 (cache write)";
        assert_eq!(group_key(c), "attention: nn.attention (cache write)");
        let h = "lm_head: nn.matmul → %170";
        assert_eq!(
            (layer_key(h), group_key(h)),
            ("model".into(), "lm_head: nn.matmul".into())
        );
    }
}
