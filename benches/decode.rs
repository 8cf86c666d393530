//! Decode and prefill throughput of the CPU backend (Cranelift JIT) on a synthetic preset, with the
//! reference interpreter on the same model as the baseline measured in the same run.
//!
//! `cargo bench --bench decode` uses the `tiny` preset; `BITNETC_BENCH_PRESET=2b4t` (and optionally
//! `BITNETC_BENCH_THREADS`, `BITNETC_BENCH_STEPS`) measures the 2B-4T shapes (writes 1.2 GB to a temp dir).

use bitnet_frontend::import_model;
use bitnet_frontend::model::ImportOptions;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let preset_name = std::env::var("BITNETC_BENCH_PRESET").unwrap_or_else(|_| "tiny".into());
    let threads: usize = std::env::var("BITNETC_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let steps: usize = std::env::var("BITNETC_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let preset = bitnet_frontend::synth::preset(&preset_name)
        .ok_or_else(|| anyhow::anyhow!("unknown preset {preset_name}"))?;
    let dir = std::env::temp_dir().join(format!(
        "bitnetc-bench-{}-{preset_name}",
        std::process::id()
    ));
    let t0 = Instant::now();
    bitnet_frontend::synth::write_checkpoint(&preset, &dir, 0)?;
    println!("synth {preset_name}: {:.2} s", t0.elapsed().as_secs_f64());
    let prompt: Vec<i64> = (0..128).map(|i| (i * 37 % 900 + 3) as i64).collect();
    let context = (prompt.len() + steps) as u64;
    let t0 = Instant::now();
    let mut model = import_model(
        &dir,
        &ImportOptions {
            context: Some(context),
        },
    )?;
    let mut exec = bitnetc::compile_cpu(&mut model, threads)?;
    println!(
        "compile (import, passes, packing, JIT): {:.2} s, {threads} thread(s)",
        t0.elapsed().as_secs_f64()
    );
    let vocab = exec.program().vocab as usize;
    let t0 = Instant::now();
    let logits = exec.forward(&prompt, 0)?;
    let mut next = argmax(logits, vocab, prompt.len() - 1);
    let prefill = t0.elapsed().as_secs_f64();
    println!(
        "cpu prefill {} tokens: {:.3} s = {:.1} tok/s",
        prompt.len(),
        prefill,
        prompt.len() as f64 / prefill
    );
    let mut times = Vec::with_capacity(steps);
    for s in 0..steps {
        let t = Instant::now();
        let l = exec.forward(&[next], (prompt.len() + s) as u64)?;
        next = argmax(l, vocab, 0);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    let total: f64 = times.iter().sum();
    println!(
        "cpu decode: {:.1} tok/s (P50 {:.2} ms, P95 {:.2} ms)",
        steps as f64 / total,
        p50 * 1e3,
        times[times.len() * 95 / 100] * 1e3
    );
    // Baseline: the reference interpreter on the same (unoptimized) model, a short prompt.
    if preset_name == "tiny" {
        let model = import_model(&dir, &ImportOptions { context: Some(16) })?;
        let t0 = Instant::now();
        let n = 8;
        for _ in 0..n {
            bitnetc::prompt_logits(&model, &[1])?;
        }
        let interp = t0.elapsed().as_secs_f64() / n as f64;
        println!(
            "interpreter, one token: {:.2} ms = {:.1} tok/s; cpu/interpreter speed-up at decode: {:.0}×",
            interp * 1e3,
            1.0 / interp,
            interp / p50
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn argmax(logits: &[f32], vocab: usize, row: usize) -> i64 {
    let r = &logits[row * vocab..(row + 1) * vocab];
    r.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |a, (i, &x)| if x > a.1 { (i, x) } else { a },
        )
        .0 as i64
}
