//! `bitnetc profile --trace`: the profiled steps as a Chrome trace (the JSON object format's
//! `traceEvents`, which Perfetto and `chrome://tracing` open).
//!
//! Each step is a complete event (`"ph": "X"`, category `step`) and each launch one inside it
//! (category `launch` and the phase), on the thread that ran the step; times are microseconds
//! since profiling started. A launch's `args` hold its index in the launch plan, its layer
//! (`null` outside the layers), its kernel and its step.

use super::report::{group_key, layer_number, phase_of};
use bitnet_runtime::Program;
use bitnet_runtime::executor::StepProfile;
use serde_json::{Value, json};

/// The process and thread ids the events carry.
const PID: u32 = 1;
const TID: u32 = 1;

/// Microseconds from nanoseconds, as the trace format counts time.
fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// The trace of `profile` over `program`'s launches; `title` names the process.
pub fn chrome_trace(program: &Program, profile: &StepProfile, title: &str) -> Value {
    let mut events = vec![
        json!({"name": "process_name", "ph": "M", "pid": PID, "tid": TID, "args": {"name": title}}),
        json!({"name": "thread_name", "ph": "M", "pid": PID, "tid": TID, "args": {"name": "step (calling thread)"}}),
    ];
    for s in &profile.step_events {
        let phase = phase_of(s.step);
        events.push(json!({
            "name": format!("{phase} step {} ({} tokens)", s.step, s.tokens),
            "cat": "step",
            "ph": "X",
            "ts": us(s.start_ns),
            "dur": us(s.dur_ns),
            "pid": PID,
            "tid": TID,
            "args": {"step": s.step, "phase": phase, "tokens": s.tokens, "sequences": s.feeds},
        }));
    }
    for e in &profile.launches {
        let Some(l) = program.launches.get(e.launch as usize) else {
            continue;
        };
        let kernel = program
            .kernels
            .get(l.kernel)
            .map_or("?", |(name, _)| name.as_str());
        events.push(json!({
            "name": l.label,
            "cat": format!("launch,{}", phase_of(e.step)),
            "ph": "X",
            "ts": us(e.start_ns),
            "dur": us(e.dur_ns),
            "pid": PID,
            "tid": TID,
            "args": {
                "launch": e.launch,
                "layer": layer_number(&l.label),
                "group": group_key(&l.label),
                "kernel": kernel,
                "step": e.step,
            },
        }));
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"dropped_events": profile.dropped},
    })
}
