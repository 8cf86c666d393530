//! Decode and prefill throughput of the CPU backend (Cranelift JIT) on a synthetic preset, against
//! the machine's memory-bandwidth ceiling measured in the same run (and, for `tiny`, the reference
//! interpreter on the same model).
//!
//! `cargo bench --bench decode` uses the `tiny` preset. Environment:
//! - `BITNETC_BENCH_PRESET=2b4t` measures the 2B-4T shapes (writes 1.2 GB to a temp dir);
//! - `BITNETC_BENCH_THREADS` (default: every core), `BITNETC_BENCH_STEPS` (decode steps, 32);
//! - `BITNETC_BENCH_HEAD`: the lm_head dtypes to compile, comma-separated (`auto`, `f16`, `i8`;
//!   default `auto`), one compile and one measurement each;
//! - `BITNETC_BENCH_PROFILE=0` skips the per-launch profile (printed by default);
//! - `BITNETC_BENCH_BANDWIDTH_MB` sizes the bandwidth buffer (default 1024).
//!
//! The ceiling: weight bytes read per decode step (every weight buffer a launch reads, once, except
//! the embedding table, of which one row) ÷ the streaming-read bandwidth measured here on the same
//! thread count.

use bitnet_backends::cpu::HeadDtype;
use bitnet_runtime::{Executor, Region};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let preset_name = std::env::var("BITNETC_BENCH_PRESET").unwrap_or_else(|_| "tiny".into());
    let threads: usize = env_or(
        "BITNETC_BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let steps: usize = env_or("BITNETC_BENCH_STEPS", 32);
    let profile: bool = std::env::var("BITNETC_BENCH_PROFILE").map_or(true, |v| v != "0");
    let heads: Vec<HeadDtype> = std::env::var("BITNETC_BENCH_HEAD")
        .unwrap_or_else(|_| "auto".into())
        .split(',')
        .map(|s| HeadDtype::parse(s.trim()).ok_or_else(|| anyhow::anyhow!("unknown head {s}")))
        .collect::<anyhow::Result<_>>()?;
    let bw_mb: usize = env_or("BITNETC_BENCH_BANDWIDTH_MB", 1024);
    println!("load before: {}", load_average());
    let bw_1 = bandwidth(bw_mb << 20, 1);
    let bw_n = if threads > 1 {
        bandwidth(bw_mb << 20, threads)
    } else {
        bw_1
    };
    println!(
        "memory bandwidth (streaming read, {bw_mb} MiB, best of 5): {:.1} GB/s on 1 thread, {:.1} GB/s on {threads}",
        bw_1 / 1e9,
        bw_n / 1e9
    );
    let preset = bitnet_frontend::synth::preset(&preset_name)
        .ok_or_else(|| anyhow::anyhow!("unknown preset {preset_name}"))?;
    let dir = std::env::temp_dir().join(format!(
        "bitnetc-bench-{}-{preset_name}",
        std::process::id()
    ));
    let t0 = Instant::now();
    bitnet_frontend::synth::write_checkpoint(&preset, &dir, 0)?;
    println!(
        "synth {preset_name} into {}: {:.2} s",
        dir.display(),
        t0.elapsed().as_secs_f64()
    );
    let result = (|| -> anyhow::Result<Vec<(HeadDtype, Measured)>> {
        let mut all = Vec::new();
        for &head in &heads {
            all.push((head, run(&dir, head, threads, steps, profile, bw_n)?));
        }
        if preset_name == "tiny" {
            interpreter_baseline(&dir)?;
        }
        Ok(all)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let all = result?;
    // Other work on the machine lowers both measurements; the ceiling takes the better one.
    let bw_end = bandwidth(bw_mb << 20, threads);
    let bw = bw_n.max(bw_end);
    println!(
        "summary: {preset_name}, {threads} thread(s), load after {}; bandwidth {:.1} GB/s at the start, {:.1} at the end",
        load_average(),
        bw_n / 1e9,
        bw_end / 1e9
    );
    for (head, m) in all {
        let ceiling = bw / m.bytes as f64;
        println!(
            "  head {:>4}: decode {:.1} tok/s (P50 {:.1} ms, P95 {:.1} ms), prefill 128: {:.1} tok/s; {:.0} MB/token, ceiling {ceiling:.1} tok/s, {:.0}% of it",
            head.name(),
            m.decode,
            m.p50 * 1e3,
            m.p95 * 1e3,
            m.prefill,
            m.bytes as f64 / 1e6,
            100.0 * m.decode / ceiling
        );
    }
    Ok(())
}

/// One head dtype's results.
struct Measured {
    /// Decode tokens per second (steps ÷ their total time).
    decode: f64,
    /// Median and 95th-percentile step time, seconds.
    p50: f64,
    p95: f64,
    /// Prefill tokens per second.
    prefill: f64,
    /// Weight bytes read per token.
    bytes: u64,
}

/// Compiles the checkpoint at `dir` with `head` and measures prefill, decode and the launch profile.
fn run(
    dir: &std::path::Path,
    head: HeadDtype,
    threads: usize,
    steps: usize,
    profile: bool,
    bandwidth: f64,
) -> anyhow::Result<Measured> {
    let prompt: Vec<i64> = (0..128).map(|i| (i * 37 % 900 + 3) as i64).collect();
    let context = (prompt.len() + 2 * steps + 2) as u64;
    let t0 = Instant::now();
    let mut model = bitnetc::OpenOptions {
        context: Some(context),
        ..Default::default()
    }
    .open(dir)?;
    let options = bitnetc::CpuOptions {
        threads,
        head,
        ..bitnetc::CpuOptions::default()
    };
    let mut exec = bitnetc::compile_cpu(&mut model, &options)?;
    drop(model);
    let name = head.name();
    println!(
        "[head {name}] compile (import, passes, packing, JIT): {:.2} s, {threads} thread(s)",
        t0.elapsed().as_secs_f64()
    );
    let per_token = weight_bytes_per_token(&exec);
    let ceiling = bandwidth / per_token as f64;
    println!(
        "[head {name}] weights read per token: {:.1} MB; ceiling at the measured bandwidth: {ceiling:.1} tok/s",
        per_token as f64 / 1e6
    );
    let t0 = Instant::now();
    let logits = exec.forward_last(&prompt, 0)?;
    let mut next = argmax(logits);
    let prefill = t0.elapsed().as_secs_f64();
    println!(
        "[head {name}] cpu prefill {} tokens (logits of the last): {:.3} s = {:.1} tok/s",
        prompt.len(),
        prefill,
        prompt.len() as f64 / prefill
    );
    let mut pos = prompt.len() as u64;
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        next = argmax(exec.forward_last(&[next], pos)?);
        times.push(t.elapsed().as_secs_f64());
        pos += 1;
    }
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
    let rate = steps as f64 / times.iter().sum::<f64>();
    println!(
        "[head {name}] cpu decode: {rate:.1} tok/s (P50 {:.2} ms, P95 {:.2} ms) = {:.0}% of the ceiling",
        p50 * 1e3,
        p95 * 1e3,
        100.0 * rate / ceiling
    );
    if profile {
        exec.set_profiling(true);
        for _ in 0..steps {
            next = argmax(exec.forward_last(&[next], pos)?);
            pos += 1;
        }
        print_profile(&exec, name);
    }
    Ok(Measured {
        decode: rate,
        p50,
        p95,
        prefill: prompt.len() as f64 / prefill,
        bytes: per_token,
    })
}

/// Bytes of weights one decode step reads: every weight buffer a launch reads, counted once,
/// except the embedding table (one row of it).
fn weight_bytes_per_token(exec: &Executor) -> u64 {
    let p = exec.program();
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for l in &p.launches {
        let embedding = p
            .kernels
            .get(l.kernel)
            .is_some_and(|(s, _)| s.starts_with("bitnet_embedding"));
        for b in l.bufs.iter().filter(|b| b.region == Region::Weights) {
            if seen.insert((b.offset, b.bytes)) {
                total += if embedding {
                    b.bytes / p.vocab.max(1)
                } else {
                    b.bytes
                };
            }
        }
    }
    total
}

/// Prints where a profiled step's time went, by kernel (launches of one kernel summed).
fn print_profile(exec: &Executor, name: &str) {
    let Some(prof) = exec.profile() else { return };
    let p = exec.program();
    let steps = prof.steps.max(1) as f64;
    let mut by_kernel: BTreeMap<&str, (u64, usize, u64)> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (l, &ns) in p.launches.iter().zip(&prof.launch_ns) {
        let symbol = p.kernels.get(l.kernel).map_or("?", |(s, _)| s.as_str());
        let e = by_kernel.entry(symbol).or_default();
        e.0 += ns;
        e.1 += 1;
        for b in l.bufs.iter().filter(|b| b.region == Region::Weights) {
            if seen.insert((b.offset, b.bytes)) && !symbol.starts_with("bitnet_embedding") {
                e.2 += b.bytes;
            }
        }
    }
    let total: u64 = prof.launch_ns.iter().sum();
    let mut rows: Vec<_> = by_kernel.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
    println!(
        "[head {name}] launch profile, {} steps: {:.2} ms per step in {} launches",
        prof.steps,
        total as f64 / steps / 1e6,
        p.launches.len()
    );
    for (symbol, (ns, count, bytes)) in rows.iter().take(14) {
        let ms = *ns as f64 / steps / 1e6;
        let gbs = if *bytes > 0 {
            format!(", {:.1} GB/s of weights", *bytes as f64 / (ms * 1e-3) / 1e9)
        } else {
            String::new()
        };
        println!(
            "  {:>7.3} ms {:>5.1}%  {count:>4} launches  {symbol}{gbs}",
            ms,
            100.0 * *ns as f64 / total.max(1) as f64
        );
    }
}

/// Best-of-5 streaming-read bandwidth over `bytes` on `threads` threads, in bytes per second: each
/// thread reads one word of every 64-byte line of its contiguous share (the memory system moves
/// whole lines, so this is the line traffic, with too little arithmetic for the core to limit it).
fn bandwidth(bytes: usize, threads: usize) -> f64 {
    let words = bytes / 8;
    let data: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads);
    let mut best = f64::INFINITY;
    let mut check = 0u64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let sums: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = data
                .chunks(chunk)
                .map(|part| s.spawn(move || sum_words(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        best = best.min(t0.elapsed().as_secs_f64());
        check = check.wrapping_add(sums.iter().fold(0, |a, &b| a.wrapping_add(b)));
    }
    std::hint::black_box(check);
    (words * 8) as f64 / best
}

/// The wrapping sum of the first word of every 64-byte line of `words`, four lines at a time into
/// independent accumulators.
fn sum_words(words: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let blocks = words.chunks_exact(32);
    let rest = blocks.remainder();
    for b in blocks {
        for (i, a) in acc.iter_mut().enumerate() {
            *a = a.wrapping_add(b[8 * i]);
        }
    }
    acc.iter()
        .chain(rest.iter().step_by(8))
        .fold(0u64, |a, &b| a.wrapping_add(b))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The reference interpreter on the same (unoptimized) model, one token (the `tiny` preset only).
fn interpreter_baseline(dir: &std::path::Path) -> anyhow::Result<()> {
    let open = bitnetc::OpenOptions {
        context: Some(16),
        ..Default::default()
    };
    let model = open.open(dir)?;
    let mut exec =
        bitnetc::compile_cpu(&mut open.open(dir)?, &bitnetc::CpuOptions::with_threads(1))?;
    let n = 8;
    let t0 = Instant::now();
    for _ in 0..n {
        bitnetc::prompt_logits(&model.module, model.weights.as_ref(), &[1])?;
    }
    let interp = t0.elapsed().as_secs_f64() / n as f64;
    let t0 = Instant::now();
    for _ in 0..n {
        exec.forward_last(&[1], 0)?;
    }
    let cpu = t0.elapsed().as_secs_f64() / n as f64;
    println!(
        "interpreter, one token: {:.2} ms = {:.1} tok/s; cpu (1 thread) {:.3} ms: {:.0}× faster",
        interp * 1e3,
        1.0 / interp,
        cpu * 1e3,
        interp / cpu
    );
    Ok(())
}

fn argmax(logits: &[f32]) -> i64 {
    logits
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |a, (i, &x)| if x > a.1 { (i, x) } else { a },
        )
        .0 as i64
}
