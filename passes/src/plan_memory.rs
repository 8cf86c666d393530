//! `plan-memory`: schedules each function and gives every activation a place in one arena, so nothing
//! is allocated while a program runs.
//!
//! Needs: verified IR (after lowering and fusion). Guarantees: two buffers that are live at the same
//! time never overlap; views (`nn.reshape`, `nn.squeeze`, `nn.unsqueeze`) share their operand's bytes;
//! an elementwise or row-wise op whose operand dies at it writes in place when the sizes match; the KV
//! caches (the `nn.attention` cache operands and results, which alias) get fixed slots in a separate
//! region laid out at compile time for the declared context length. The plan is deterministic.
//!
//! Sizes use every symbol at its bound (`T<=4096` plans for 4096 tokens). Offsets are assigned
//! greedily, largest buffer first, at the lowest 64-byte-aligned offset that does not collide with an
//! already placed buffer whose lifetime overlaps (the "greedy by size" heuristic); the report gives the
//! arena next to the lower bound (the most bytes live at any one step) and the naive sum.
//!
//! The dependency graph is a petgraph `DiGraph`; the schedule is its topological order that keeps the
//! blocks' order wherever data allows (so it is the program order for IR that verifies).

use crate::{Pass, PassContext, PassError};
use bitnet_ir::module::{Function, Module, OpId, ValueDef};
use bitnet_ir::{Dim, ElemType, OpKind, TensorType, ValueId};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::BTreeMap;

/// Arena offsets are multiples of this.
pub const ALIGN: u64 = 64;

/// One arena buffer: the values stored in it (a value, its views and in-place successors).
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// The values that live in this buffer, in definition order.
    pub values: Vec<ValueId>,
    /// A readable name (the first value's name).
    pub label: String,
    /// Size in bytes (with symbols at their bounds).
    pub bytes: u64,
    /// Offset in the arena.
    pub offset: u64,
    /// First schedule step at which it is live (its definition).
    pub start: usize,
    /// Last schedule step at which it is read (or the end, for returned values).
    pub end: usize,
}

/// A KV-cache slot: a cache argument and the results that alias it.
#[derive(Clone, Debug, PartialEq)]
pub struct KvSlot {
    /// The cache argument.
    pub arg: ValueId,
    /// Its name.
    pub label: String,
    /// Offset in the KV region.
    pub offset: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// The memory plan of one function.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// The function.
    pub function: String,
    /// The schedule: ops in execution order.
    pub schedule: Vec<OpId>,
    /// The arena buffers, by offset then label.
    pub buffers: Vec<Buffer>,
    /// Which buffer holds each planned value.
    pub buffer_of: BTreeMap<ValueId, usize>,
    /// Arena size in bytes.
    pub arena_bytes: u64,
    /// The most bytes live at any one step: no plan can use less.
    pub lower_bound: u64,
    /// The sum of all buffers: what allocating each value separately would take.
    pub naive_bytes: u64,
    /// The KV-cache region.
    pub kv_slots: Vec<KvSlot>,
    /// Its size in bytes.
    pub kv_bytes: u64,
    /// Bytes of values computed from weights alone (folded at compile time, stored with the weights).
    pub constant_bytes: u64,
}

/// The pass.
pub struct PlanMemory;

impl Pass for PlanMemory {
    fn name(&self) -> &'static str {
        "plan-memory"
    }

    fn summary(&self) -> &'static str {
        "schedule each function and place every activation in one arena (KV caches in their own region)"
    }

    fn run(&self, module: &mut Module, cx: &mut PassContext) -> Result<bool, PassError> {
        cx.plans.clear();
        for f in &module.functions {
            let plan = plan_function(f)?;
            cx.notes.push(format!(
                "plan-memory @{}: arena {} bytes, lower bound {} ({:.3}×), naive {} bytes, KV cache {} bytes",
                f.name,
                plan.arena_bytes,
                plan.lower_bound,
                plan.arena_bytes as f64 / plan.lower_bound.max(1) as f64,
                plan.naive_bytes,
                plan.kv_bytes
            ));
            cx.plans.push(plan);
        }
        Ok(false)
    }
}

fn fail(message: String) -> PassError {
    PassError::Failed {
        pass: "plan-memory",
        message,
    }
}

/// Bytes of a value of type `ty` with every symbol at its bound.
pub fn bytes_of(f: &Function, ty: &TensorType) -> Result<u64, PassError> {
    let mut n: u64 = 1;
    for d in &ty.dims {
        let size = match d {
            Dim::Static(s) => *s,
            Dim::Sym(s) => f
                .symbols
                .iter()
                .find(|x| &x.name == s)
                .map(|x| x.max)
                .ok_or_else(|| fail(format!("@{}: undeclared symbol {s}", f.name)))?,
        };
        n = n
            .checked_mul(size)
            .ok_or_else(|| fail(format!("@{}: {ty} overflows", f.name)))?;
    }
    let bits = match ty.elem {
        // Ternary values are weights; if one ever lives in the arena it takes a byte per element.
        ElemType::Ternary => 8,
        e => e.bits(),
    };
    n.checked_mul(bits / 8)
        .ok_or_else(|| fail(format!("@{}: {ty} overflows", f.name)))
}

/// Ops whose result is a view of their first operand (same bytes, no copy).
fn is_view(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Reshape | OpKind::Squeeze | OpKind::Unsqueeze | OpKind::StopGradient
    )
}

/// Ops that may write their result over their first operand (elementwise or row by row) when that
/// operand dies at the op and the sizes match.
fn may_write_in_place(kind: OpKind) -> bool {
    match kind {
        OpKind::Add
        | OpKind::Sub
        | OpKind::Mul
        | OpKind::Div
        | OpKind::Pow
        | OpKind::Max
        | OpKind::Min
        | OpKind::Neg
        | OpKind::Sqrt
        | OpKind::Reciprocal
        | OpKind::Abs
        | OpKind::Round
        | OpKind::Relu
        | OpKind::Relu2
        | OpKind::Silu
        | OpKind::Sigmoid
        | OpKind::Tanh
        | OpKind::Erf
        | OpKind::Exp
        | OpKind::Clip
        | OpKind::Softmax
        | OpKind::RmsNorm
        | OpKind::LayerNorm
        | OpKind::Relu2Mul
        | OpKind::SiluMul
        | OpKind::Rope => true,
        OpKind::Equal
        | OpKind::ReduceMean
        | OpKind::ReduceMax
        | OpKind::ReduceSum
        | OpKind::Reshape
        | OpKind::Unsqueeze
        | OpKind::Squeeze
        | OpKind::Expand
        | OpKind::Transpose
        | OpKind::Concat
        | OpKind::Slice
        | OpKind::Gather
        | OpKind::Embedding
        | OpKind::Cast
        | OpKind::Where
        | OpKind::MatMul
        | OpKind::Attention
        | OpKind::Constant
        | OpKind::Weight
        | OpKind::ActQuant
        | OpKind::TernaryMatmul
        | OpKind::RmsNormQuant
        | OpKind::TernaryMatmulPacked
        | OpKind::StopGradient
        | OpKind::CrossEntropy
        | OpKind::Vjp => false,
    }
}

/// The schedule: a topological order of the dependency graph that follows block order.
fn schedule(f: &Function) -> Result<Vec<OpId>, PassError> {
    let order: Vec<OpId> = f.op_order().collect();
    let mut graph: DiGraph<OpId, ()> = DiGraph::new();
    let mut node_of: BTreeMap<OpId, NodeIndex> = BTreeMap::new();
    for &op in &order {
        node_of.insert(op, graph.add_node(op));
    }
    for &op in &order {
        for v in &f.op(op).operands {
            if let ValueDef::OpResult { op: def, .. } = f.value(*v).def
                && let (Some(&a), Some(&b)) = (node_of.get(&def), node_of.get(&op))
            {
                graph.add_edge(a, b, ());
            }
        }
    }
    // Kahn's algorithm, always taking the ready op that comes first in block order.
    let position: BTreeMap<OpId, usize> = order.iter().enumerate().map(|(i, &o)| (o, i)).collect();
    let mut indegree: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, petgraph::Incoming).count())
        .collect();
    let mut ready: std::collections::BTreeSet<(usize, usize)> = graph
        .node_indices()
        .filter(|n| indegree[n.index()] == 0)
        .map(|n| (position[&graph[n]], n.index()))
        .collect();
    let mut out = Vec::with_capacity(order.len());
    while let Some(&first) = ready.iter().next() {
        ready.remove(&first);
        let n = NodeIndex::new(first.1);
        out.push(graph[n]);
        for m in graph.neighbors_directed(n, petgraph::Outgoing) {
            indegree[m.index()] -= 1;
            if indegree[m.index()] == 0 {
                ready.insert((position[&graph[m]], m.index()));
            }
        }
    }
    if out.len() != order.len() {
        return Err(fail(format!("@{}: the dataflow has a cycle", f.name)));
    }
    Ok(out)
}

/// Plans one function.
pub fn plan_function(f: &Function) -> Result<MemoryPlan, PassError> {
    let schedule = schedule(f)?;
    let step_of: BTreeMap<OpId, usize> = schedule
        .iter()
        .enumerate()
        .map(|(i, &o)| (o, i + 1))
        .collect();
    let end = schedule.len() + 1;
    // KV caches: the cache operands of nn.attention (arguments) and the results that alias them.
    let mut kv_of: BTreeMap<ValueId, ValueId> = BTreeMap::new();
    for &op in &schedule {
        let o = f.op(op);
        if o.kind == OpKind::Attention {
            for (operand, result) in [(3usize, 1usize), (4, 2)] {
                if let (Some(&c), Some(&r)) = (o.operands.get(operand), o.results.get(result)) {
                    let root = *kv_of.get(&c).unwrap_or(&c);
                    kv_of.insert(c, root);
                    kv_of.insert(r, root);
                }
            }
        }
    }
    // Values computed from weights and literals alone (a transposed lm_head, a folded table) are
    // compile-time constants: they are stored with the weights, not in the arena.
    let mut constant: std::collections::BTreeSet<ValueId> = std::collections::BTreeSet::new();
    let mut constant_bytes = 0u64;
    for &op in &schedule {
        let o = f.op(op);
        if matches!(o.kind, OpKind::Weight | OpKind::Constant)
            || (!o.operands.is_empty() && o.operands.iter().all(|v| constant.contains(v)))
        {
            constant.extend(o.results.iter().copied());
            if !matches!(o.kind, OpKind::Weight | OpKind::Constant) {
                for r in &o.results {
                    constant_bytes += bytes_of(f, f.ty(*r))?;
                }
            }
        }
    }
    // Values that need arena space: arguments (inputs) and op results, except constants and caches.
    let mut planned: Vec<ValueId> = f
        .args
        .iter()
        .copied()
        .filter(|a| !kv_of.contains_key(a))
        .collect();
    for &op in &schedule {
        planned.extend(
            f.op(op)
                .results
                .iter()
                .copied()
                .filter(|r| !kv_of.contains_key(r) && !constant.contains(r)),
        );
    }
    // Last use of each value (the end for returned values).
    let mut last_use: BTreeMap<ValueId, usize> = BTreeMap::new();
    for &op in &schedule {
        for v in &f.op(op).operands {
            last_use.insert(*v, step_of[&op]);
        }
    }
    for v in &f.returns {
        last_use.insert(*v, end);
    }
    let def_step = |v: ValueId| match f.value(v).def {
        ValueDef::OpResult { op, .. } => step_of.get(&op).copied().unwrap_or(0),
        ValueDef::Arg(_) | ValueDef::Undefined => 0,
    };
    // Group values into buffers: views join their operand's buffer; in-place results join their
    // operand's buffer when the operand's last use is this op and the sizes match.
    let mut buffer_of: BTreeMap<ValueId, usize> = BTreeMap::new();
    let mut buffers: Vec<Buffer> = Vec::new();
    for &v in &planned {
        let bytes = bytes_of(f, f.ty(v))?;
        let start = def_step(v);
        let mut joined = None;
        if let ValueDef::OpResult { op, index: 0 } = f.value(v).def {
            let o = f.op(op);
            if let Some(&x) = o.operands.first()
                && let Some(&b) = buffer_of.get(&x)
            {
                let dies_here = last_use.get(&x) == Some(&start);
                let same_size = bytes_of(f, f.ty(x))? == bytes;
                // The operand's buffer must not hold a value still needed after this op.
                let buffer_free_after = buffers[b]
                    .values
                    .iter()
                    .all(|w| last_use.get(w).copied().unwrap_or(0) <= start);
                if is_view(o.kind)
                    || (may_write_in_place(o.kind) && dies_here && same_size && buffer_free_after)
                {
                    joined = Some(b);
                }
            }
        }
        let b = match joined {
            Some(b) => {
                buffers[b].values.push(v);
                buffers[b].bytes = buffers[b].bytes.max(bytes);
                b
            }
            None => {
                let label = f
                    .value(v)
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}", v.0));
                buffers.push(Buffer {
                    values: vec![v],
                    label,
                    bytes,
                    offset: 0,
                    start,
                    end: start,
                });
                buffers.len() - 1
            }
        };
        let last = last_use.get(&v).copied().unwrap_or(start);
        buffers[b].end = buffers[b].end.max(last);
        buffer_of.insert(v, b);
    }
    // Offsets: several greedy placements (different orders, first fit or best fit), keep the smallest.
    let offsets = best_placement(&buffers);
    for (b, off) in buffers.iter_mut().zip(offsets) {
        b.offset = off;
    }
    let arena_bytes = buffers
        .iter()
        .map(|b| b.offset + b.bytes)
        .max()
        .unwrap_or(0);
    let naive_bytes = buffers.iter().map(|b| b.bytes).sum();
    let lower_bound = lower_bound(&buffers);
    // The KV region: one slot per cache argument, in argument order.
    let mut kv_slots = Vec::new();
    let mut kv_bytes = 0u64;
    for &a in &f.args {
        if kv_of.get(&a) == Some(&a) {
            let bytes = bytes_of(f, f.ty(a))?;
            let label = f
                .value(a)
                .name
                .clone()
                .unwrap_or_else(|| format!("{}", a.0));
            kv_slots.push(KvSlot {
                arg: a,
                label,
                offset: kv_bytes,
                bytes,
            });
            kv_bytes += bytes.div_ceil(ALIGN) * ALIGN;
        }
    }
    Ok(MemoryPlan {
        function: f.name.clone(),
        schedule,
        buffers,
        buffer_of,
        arena_bytes,
        lower_bound,
        naive_bytes,
        kv_slots,
        kv_bytes,
        constant_bytes,
    })
}

/// Places buffers greedily in `order`: each at the lowest aligned offset (first fit) or in the smallest
/// gap (best fit) that avoids every placed buffer whose lifetime overlaps. Returns the offsets and the
/// arena size.
fn place(buffers: &[Buffer], order: &[usize], best_fit: bool) -> (Vec<u64>, u64) {
    let mut offsets = vec![0u64; buffers.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(order.len());
    let mut arena = 0u64;
    for &i in order {
        let (s, e, size) = (buffers[i].start, buffers[i].end, buffers[i].bytes);
        let mut busy: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&j| buffers[j].start <= e && s <= buffers[j].end)
            .map(|&j| (offsets[j], offsets[j] + buffers[j].bytes))
            .collect();
        busy.sort_unstable();
        // The gaps between busy ranges (and the open end after the last one).
        let mut chosen: Option<(u64, u64)> = None; // (offset, gap size)
        let mut cursor = 0u64;
        for &(lo, hi) in busy.iter().chain(std::iter::once(&(u64::MAX, u64::MAX))) {
            if lo >= cursor && lo - cursor >= size {
                let gap = lo - cursor;
                if chosen.is_none_or(|(_, g)| best_fit && gap < g) {
                    chosen = Some((cursor, gap));
                }
                if !best_fit {
                    break;
                }
            }
            cursor = cursor.max(hi.div_ceil(ALIGN).saturating_mul(ALIGN));
        }
        let offset = chosen.map_or(cursor, |(o, _)| o);
        offsets[i] = offset;
        arena = arena.max(offset + size);
        placed.push(i);
    }
    (offsets, arena)
}

/// The smallest of several greedy placements (deterministic: ties keep the first tried).
fn best_placement(buffers: &[Buffer]) -> Vec<u64> {
    let n = buffers.len();
    let by = |key: &dyn Fn(&Buffer) -> (u64, u64)| {
        let mut o: Vec<usize> = (0..n).collect();
        o.sort_by(|&a, &b| key(&buffers[a]).cmp(&key(&buffers[b])).then(a.cmp(&b)));
        o
    };
    let orders = [
        by(&|b| (u64::MAX - b.bytes, b.start as u64)),
        by(&|b| (b.start as u64, u64::MAX - b.bytes)),
        by(&|b| {
            (
                u64::MAX - b.bytes.saturating_mul((b.end - b.start + 1) as u64),
                b.start as u64,
            )
        }),
        by(&|b| (u64::MAX - (b.end - b.start) as u64, u64::MAX - b.bytes)),
    ];
    let mut best: Option<(Vec<usize>, bool, Vec<u64>, u64)> = None;
    for order in &orders {
        for best_fit in [false, true] {
            let (offsets, arena) = place(buffers, order, best_fit);
            if best.as_ref().is_none_or(|b| arena < b.3) {
                best = Some((order.clone(), best_fit, offsets, arena));
            }
        }
    }
    let Some((mut order, best_fit, mut offsets, mut arena)) = best else {
        return Vec::new();
    };
    // Local search: swap two buffers in the placement order and keep the swap when the arena does
    // not grow. A fixed-seed xorshift keeps the plan deterministic; the budget bounds the work to
    // about 2·10^8 interval checks.
    let lower = lower_bound(buffers);
    let budget = (200_000_000 / (n * n).max(1)).min(4000);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..budget {
        if arena <= lower || n < 2 {
            break;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let (i, j) = (
            (state % n as u64) as usize,
            ((state >> 32) % n as u64) as usize,
        );
        order.swap(i, j);
        let (o, a) = place(buffers, &order, best_fit);
        if a <= arena {
            offsets = o;
            arena = a;
        } else {
            order.swap(i, j);
        }
    }
    offsets
}

/// The most bytes live at any one step.
fn lower_bound(buffers: &[Buffer]) -> u64 {
    let end = buffers.iter().map(|b| b.end).max().unwrap_or(0);
    (0..=end)
        .map(|t| {
            buffers
                .iter()
                .filter(|b| b.start <= t && t <= b.end)
                .map(|b| b.bytes)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// Checks a plan's invariant: buffers live at the same time do not overlap. Returns the first clash.
pub fn find_overlap(plan: &MemoryPlan) -> Option<(String, String)> {
    for (i, a) in plan.buffers.iter().enumerate() {
        for b in &plan.buffers[i + 1..] {
            let time = a.start <= b.end && b.start <= a.end;
            let space = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
            if time && space && a.bytes > 0 && b.bytes > 0 {
                return Some((a.label.clone(), b.label.clone()));
            }
        }
    }
    None
}
