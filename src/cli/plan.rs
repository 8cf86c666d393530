//! `bitnetc plan MODEL`: compile a model with the default pipeline and report its memory plan: the
//! arena against the lower bound and the naive sum, the KV cache, and every buffer.

use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc plan`.
#[derive(clap::Args)]
pub struct PlanArgs {
    /// The model (HF folder, .gguf, .onnx).
    pub model: PathBuf,
    /// Plan for this context length (default: the model's maximum).
    #[arg(long)]
    pub context: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: &PlanArgs) -> Result<ExitCode> {
    let mut m = bitnetc::OpenOptions {
        context: args.context,
        ..Default::default()
    }
    .open(&args.model)?;
    let pipeline = format!("{},plan-memory", bitnet_passes::DEFAULT_PIPELINE);
    let opt = bitnetc::optimize(&mut m, &bitnetc::OptimizeOptions::passes(&pipeline))?;
    for plan in &opt.plans {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&plan_json(&m.module, plan))?
            );
        } else {
            print!("{}", plan_text(&m.module, plan));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--json` report of one plan.
fn plan_json(
    m: &bitnet_ir::Module,
    p: &bitnet_passes::plan_memory::MemoryPlan,
) -> serde_json::Value {
    let f = m.function(&p.function);
    let op_of = |v: &bitnet_ir::ValueId| {
        f.and_then(|f| f.def_op(*v))
            .and_then(|o| f.map(|f| f.op(o).kind.name()))
            .unwrap_or("argument")
    };
    serde_json::json!({
        "function": p.function,
        "arena_bytes": p.arena_bytes,
        "lower_bound_bytes": p.lower_bound,
        "arena_over_lower_bound": p.arena_bytes as f64 / p.lower_bound.max(1) as f64,
        "naive_bytes": p.naive_bytes,
        "kv_cache_bytes": p.kv_bytes,
        "constant_bytes": p.constant_bytes,
        "schedule_length": p.schedule.len(),
        "kv_slots": p.kv_slots.iter().map(|s| serde_json::json!({"name": s.label, "offset": s.offset, "bytes": s.bytes})).collect::<Vec<_>>(),
        "buffers": p.buffers.iter().map(|b| serde_json::json!({
            "name": b.label, "op": b.values.first().map(op_of).unwrap_or("?"), "values": b.values.len(),
            "offset": b.offset, "bytes": b.bytes, "live": [b.start, b.end],
        })).collect::<Vec<_>>(),
    })
}

/// The text report of one plan.
fn plan_text(m: &bitnet_ir::Module, p: &bitnet_passes::plan_memory::MemoryPlan) -> String {
    use std::fmt::Write;
    let f = m.function(&p.function);
    let mut out = String::new();
    let _ = writeln!(out, "@{}: {} ops scheduled", p.function, p.schedule.len());
    let _ = writeln!(out, "arena:        {:>14} bytes", p.arena_bytes);
    let _ = writeln!(
        out,
        "lower bound:  {:>14} bytes (arena / lower bound = {:.3})",
        p.lower_bound,
        p.arena_bytes as f64 / p.lower_bound.max(1) as f64
    );
    let _ = writeln!(
        out,
        "naive sum:    {:>14} bytes (arena / naive = {:.3})",
        p.naive_bytes,
        p.arena_bytes as f64 / p.naive_bytes.max(1) as f64
    );
    let _ = writeln!(
        out,
        "KV cache:     {:>14} bytes in {} slots",
        p.kv_bytes,
        p.kv_slots.len()
    );
    let _ = writeln!(
        out,
        "constants:    {:>14} bytes computed from weights at compile time",
        p.constant_bytes
    );
    let _ = writeln!(
        out,
        "{:>14} {:>12} {:>11}  {:<16} buffer",
        "offset", "bytes", "live", "op"
    );
    let mut order: Vec<&bitnet_passes::plan_memory::Buffer> = p.buffers.iter().collect();
    order.sort_by_key(|b| (b.start, b.offset));
    for b in order {
        let op = b
            .values
            .first()
            .and_then(|v| {
                f.and_then(|f| f.def_op(*v))
                    .and_then(|o| f.map(|f| f.op(o).kind.name()))
            })
            .unwrap_or("argument");
        let _ = writeln!(
            out,
            "{:>14} {:>12} {:>5}..{:<5}  {:<16} %{}{}",
            b.offset,
            b.bytes,
            b.start,
            b.end,
            op,
            b.label,
            if b.values.len() > 1 {
                format!(" (+{} in place)", b.values.len() - 1)
            } else {
                String::new()
            }
        );
    }
    out
}
