//! Gradient checkpointing for a lowered step: the order its ops run in when only the values at
//! block boundaries are kept from the forward pass, and each block's forward ops run again just
//! before the first backward op that reads one of their values.
//!
//! The forward ops are those before the function's first `nn.vjp` (where `emit_backward` puts
//! them); the boundaries cut those that read the arguments into segments (a boundary's op ends its
//! segment). The weight-only ops are in no segment: computed once (or read from `Frozen`), never
//! again. The last segment (the one that computes the loss) is not recomputed: the backward pass
//! reads it first; nor does reading a boundary, which is kept, recompute anything. The ops are
//! deterministic, so a recomputed value is the value the forward pass computed, bit for bit; what
//! is held at once is decided by each definition's last use (`mod.rs`).

use bitnet_ir::OpKind;
use bitnet_ir::module::{Function, OpId, ValueDef, ValueId};

/// One entry of the schedule: an op, and whether this is a recomputation of a forward op.
pub type Scheduled = (OpId, bool);

/// The ops of `f` in the order they run, each forward op of a segment before the last run a second
/// time ahead of the first backward op that reads one of that segment's values. With no
/// boundaries, the plain order.
pub fn schedule(f: &Function, boundaries: &[ValueId]) -> Vec<Scheduled> {
    let order: Vec<OpId> = f.op_order().collect();
    let plain = || order.iter().map(|&id| (id, false)).collect();
    if boundaries.is_empty() {
        return plain();
    }
    let split = order
        .iter()
        .position(|&id| f.op(id).kind == OpKind::Vjp)
        .unwrap_or(order.len());
    // The weight-only ops (and what follows from them alone) are computed once, as `Frozen` does,
    // and never recomputed.
    let free = bitnet_ir::frozen::argument_free_ops(f);
    // The segment of each forward op that reads the arguments, by op index.
    let mut segment_of: Vec<Option<usize>> = vec![None; f.ops.len()];
    let mut segments: Vec<Vec<OpId>> = vec![Vec::new()];
    for &id in &order[..split] {
        if free[id.index()] {
            continue;
        }
        let op = f.op(id);
        if let Some(last) = segments.last_mut() {
            last.push(id);
        }
        segment_of[id.index()] = Some(segments.len() - 1);
        if op.results.iter().any(|r| boundaries.contains(r)) {
            segments.push(Vec::new());
        }
    }
    if segments.last().is_some_and(Vec::is_empty) {
        segments.pop();
    }
    let last = segments.len().saturating_sub(1);
    if last == 0 {
        return plain();
    }
    let defined_in = |v: ValueId| match f.value(v).def {
        ValueDef::OpResult { op, .. } => segment_of.get(op.index()).copied().flatten(),
        ValueDef::Arg(_) | ValueDef::Undefined => None,
    };
    let mut out: Vec<Scheduled> = order[..split].iter().map(|&id| (id, false)).collect();
    let mut recomputed = vec![false; segments.len()];
    for &id in &order[split..] {
        let mut needed: Vec<usize> = f
            .op(id)
            .operands
            .iter()
            .filter(|v| !boundaries.contains(v))
            .filter_map(|&v| defined_in(v))
            .filter(|&s| s < last && !recomputed[s])
            .collect();
        needed.sort_unstable();
        needed.dedup();
        for s in needed {
            recomputed[s] = true;
            out.extend(segments[s].iter().map(|&op| (op, true)));
        }
        out.push((id, false));
    }
    out
}
