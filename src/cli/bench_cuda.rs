//! `bitnetc bench --backend cuda`: how fast a model runs on CUDA device 0, measured against the
//! device's own memory bandwidth in the same run.
//!
//! It measures, in order: a device-to-device copy (bytes read and written per second: the
//! bandwidth reference); each distinct ternary matmul kernel of the plan at one token, its launches
//! of every layer in a row (each reads its own weights, so the round is not served from the L2
//! cache as one launch repeated would be), and then every ternary matmul of a step in a row
//! (weight bytes read per second, and their share of the copy's bandwidth); then prefill
//! of `--prompt-len` tokens and greedy decode of `--steps` tokens through a session, with the decode
//! step replayed as a CUDA graph and then with every launch queued by the host. Times are the
//! device's (CUDA events) for the kernels and the copy, wall clock for prefill and decode.

use anyhow::{Context, Result};
use bitnet_runtime::gpu::Device;
use bitnet_runtime::program::Region;
use bitnetc::speed::{self, percentile_ms};
use std::path::Path;
use std::process::ExitCode;

/// Bytes of each buffer of the copy measurement.
const COPY_BYTES: u64 = 1 << 30;
/// Copies timed.
const COPY_REPS: u32 = 10;
/// Rounds of each measured group of launches.
const KERNEL_REPS: u32 = 50;

/// A group of ternary matmul launches measured in a row.
struct KernelSpeed {
    /// The kernel, or `every ternary matmul`.
    name: String,
    /// How many launches a round has.
    launches: usize,
    /// Weight bytes a round reads.
    weight_bytes: u64,
    /// Device seconds per round.
    seconds: f64,
}

/// What `bench --backend cuda` measures.
pub struct CudaBench {
    /// Prompt length for the prefill measurement.
    pub prompt_len: usize,
    /// Decode steps measured after the prefill.
    pub steps: usize,
    /// Prefill and decode runs (the fastest prefill counts; decode latencies pool).
    pub repeat: usize,
    /// Print JSON instead of text.
    pub json: bool,
}

/// Runs the measurement on `model`; adds the results to `audit`.
pub fn run(args: &CudaBench, model: &Path, audit: &mut serde_json::Value) -> Result<ExitCode> {
    let options = bitnetc::jit::Options {
        context: Some((args.prompt_len + args.steps + 1) as u64),
        ..Default::default()
    };
    let mut m = bitnetc::gpu::open_gpu(model, &options, 0)
        .with_context(|| format!("{}", model.display()))?;
    let exec = &mut m.executor;
    let device = exec.device().name();
    // The bandwidth reference: a copy between two buffers on the device.
    let dev = exec.device_mut();
    let a = dev.alloc(COPY_BYTES, "copy source")?;
    let b = dev.alloc(COPY_BYTES, "copy destination")?;
    dev.copy(b, a, COPY_BYTES)?;
    dev.start_timer()?;
    for _ in 0..COPY_REPS {
        dev.copy(b, a, COPY_BYTES)?;
    }
    let copy_s = dev.stop_timer()?;
    let copy_bw = 2.0 * COPY_BYTES as f64 * f64::from(COPY_REPS) / copy_s;
    // Each distinct ternary matmul kernel at one token (its launches of every layer in a row),
    // then all of them.
    let mut groups: std::collections::BTreeMap<String, (Vec<usize>, u64)> = Default::default();
    let mut all: (Vec<usize>, u64) = (Vec::new(), 0);
    for (i, g) in exec.launches().iter().enumerate() {
        let Some(name) = exec.kernels().get(g.launch.kernel) else {
            continue;
        };
        if !name.starts_with("bitnet_ternary_matmul") {
            continue;
        }
        let bytes: u64 = g
            .launch
            .bufs
            .iter()
            .filter(|b| b.region == Region::Weights)
            .map(|b| b.bytes)
            .sum();
        let e = groups.entry(name.clone()).or_default();
        e.0.push(i);
        e.1 += bytes;
        all.0.push(i);
        all.1 += bytes;
    }
    let mut kernels: Vec<KernelSpeed> = Vec::new();
    let every = (String::from("every ternary matmul of a step"), all);
    for (name, (indices, weight_bytes)) in groups.into_iter().chain(std::iter::once(every)) {
        if indices.is_empty() {
            continue;
        }
        let seconds = exec.time_launches(&indices, KERNEL_REPS)?;
        kernels.push(KernelSpeed {
            name,
            launches: indices.len(),
            weight_bytes,
            seconds,
        });
    }
    let weight_bytes = exec.weight_bytes();
    let (import_s, compile_s, load_s) = (
        m.import_time.as_secs_f64(),
        m.compile_time.as_secs_f64(),
        m.load_time.as_secs_f64(),
    );
    let mut session = m.token_session();
    let graph = speed::measure(&mut session, args.prompt_len, args.steps, args.repeat)?;
    if let Some(d) = session.device_mut() {
        d.set_graphs(false);
    }
    let plain = speed::measure(&mut session, args.prompt_len, args.steps, args.repeat)?;
    let report = serde_json::json!({
        "model": model.display().to_string(),
        "device": device,
        "import_s": import_s,
        "compile_s": compile_s,
        "load_s": load_s,
        "weight_bytes": weight_bytes,
        "copy_bandwidth_gb_s": copy_bw / 1e9,
        "ternary_kernels": kernels.iter().map(|k| serde_json::json!({
            "kernel": k.name,
            "launches": k.launches,
            "weight_bytes": k.weight_bytes,
            "us": k.seconds * 1e6,
            "read_gb_s": k.weight_bytes as f64 / k.seconds / 1e9,
            "share_of_copy_bandwidth": k.weight_bytes as f64 / k.seconds / copy_bw,
        })).collect::<Vec<_>>(),
        "prompt_len": args.prompt_len,
        "steps": args.steps,
        "prefill_tok_s": graph.prefill_tok_s(),
        "decode_graph_tok_s": graph.decode_tok_s(),
        "decode_graph_p50_ms": percentile_ms(&graph.latencies, 50.0),
        "decode_no_graph_tok_s": plain.decode_tok_s(),
        "decode_no_graph_p50_ms": percentile_ms(&plain.latencies, 50.0),
    });
    audit["result"] = report.clone();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("model   {}", model.display());
    println!("device  {device}");
    println!(
        "load    import {import_s:.2} s, compile {compile_s:.2} s, to the device {load_s:.2} s; {:.1} MB of weights",
        weight_bytes as f64 / 1e6
    );
    println!(
        "copy    {:.0} GB/s (device to device, bytes read + written)",
        copy_bw / 1e9
    );
    println!("ternary matmul kernels, one token, every layer's launch in a row:");
    for k in &kernels {
        let bw = k.weight_bytes as f64 / k.seconds;
        println!(
            "  {:<48} x{:<4} {:>9.1} us  {:>7.1} MB  {:>6.0} GB/s  {:>5.1} % of the copy",
            k.name,
            k.launches,
            k.seconds * 1e6,
            k.weight_bytes as f64 / 1e6,
            bw / 1e9,
            100.0 * bw / copy_bw
        );
    }
    println!(
        "prefill {:.0} tok/s ({} tokens)",
        graph.prefill_tok_s(),
        args.prompt_len
    );
    println!(
        "decode  {:.1} tok/s with the CUDA graph (p50 {:.3} ms), {:.1} tok/s without (p50 {:.3} ms)",
        graph.decode_tok_s(),
        percentile_ms(&graph.latencies, 50.0),
        plain.decode_tok_s(),
        percentile_ms(&plain.latencies, 50.0)
    );
    Ok(ExitCode::SUCCESS)
}
