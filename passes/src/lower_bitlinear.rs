//! `lower-bitlinear`: finds every BitLinear layer, in whatever form the importer wrote it, and lowers
//! it to `bit.act_quant` + `bit.ternary_matmul` with the scales folded; full-precision matmuls (the
//! lm_head, attention) stay as they are.
//!
//! Needs: the module's weights in the pass context when a layer's ternary weights must be derived
//! from float values (a {-γ, 0, +γ} constant, or master weights ternarized by absmean); the derived
//! ternary weights and scales go into `PassContext::derived` as `<name>#ternary` / `<name>#gamma`.
//! Guarantees: the lowered function computes what the original does (up to float summation order),
//! because every rewrite is an equivalence under the facts its condition checks; a candidate whose
//! pieces do not check out (shapes, weights) is left alone.
//!
//! How: each function's dataflow becomes an e-graph (`bitlang`), the rules of `rules::bitlinear` run
//! under node and iteration limits (the stop reason is noted; no wall-clock limit, so the result
//! never depends on the machine's speed), and for every matmul (and the scalar multiply or divide
//! after it) whose cheapest form under `cost::BitCost` is a `bl` node, new ops are built. One `bit.act_quant` serves every projection of the same input (q/k/v, gate/up).
//!
//! Before → after (`tests/filetests/passes/lower_bitlinear.bir`):
//! ```text
//! %a = nn.abs %x …  %s = nn.div %c127, %m …  %q = nn.clip %r {max = 127.0, min = -128.0} …
//! %xh = nn.div %q, %s …  %y = nn.matmul %xh, %wt … %z = nn.mul %y, %g
//!   →  %xq, %xs = bit.act_quant %x {eps = 1e-5} …  %z = bit.ternary_matmul %xq, %xs, %w, %g
//! ```

use crate::bitlang::{BitLang, LeafInfo, Meta, Num};
use crate::cost::BitCost;
use crate::{Pass, PassContext, PassError};
use bitnet_ir::attr::{Attr, Attrs};
use bitnet_ir::module::{Function, Module, OpId, ValueDef};
use bitnet_ir::{Data, Dim, ElemType, OpKind, Tensor, TensorType, ValueId};
use egg::{EGraph, Extractor, Id, RecExpr, Runner, Symbol};
use std::collections::HashMap;
use std::time::Duration;

/// The pass.
pub struct LowerBitLinear;

/// Runner limits: always set, so a pathological graph cannot stall the compiler. Both count work,
/// not time, so the same module always stops at the same point and gives the same artifact.
const NODE_LIMIT: usize = 200_000;
const ITER_LIMIT: usize = 32;
/// egg's runner also stops at a wall-clock limit (5 s unless set); it is set beyond reach so that
/// only `NODE_LIMIT` and `ITER_LIMIT` decide where the rewriting stops.
const NO_TIME_LIMIT: Duration = Duration::MAX;

impl Pass for LowerBitLinear {
    fn name(&self) -> &'static str {
        "lower-bitlinear"
    }

    fn summary(&self) -> &'static str {
        "recognize BitLinear layers (every importer form) and lower them to bit.act_quant + bit.ternary_matmul"
    }

    fn run(&self, module: &mut Module, cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        for f in &mut module.functions {
            changed |= lower_function(f, cx)?;
        }
        Ok(changed)
    }
}

fn fail(message: String) -> PassError {
    PassError::Failed {
        pass: "lower-bitlinear",
        message,
    }
}

fn leaf_symbol(v: ValueId) -> Symbol {
    Symbol::from(format!("v{}", v.0))
}

/// The `nn.weight` name defining `v`, if any.
fn weight_name(f: &Function, v: ValueId) -> Option<&str> {
    let op = f.op(f.def_op(v)?);
    (op.kind == OpKind::Weight)
        .then(|| op.attrs.str("name"))
        .flatten()
}

/// If `t` holds exactly {-γ, 0, +γ} for one γ (zeros may be signed), that γ; an all-zero tensor is
/// ternary with γ = 0.
fn dense_gamma(t: &Tensor) -> Option<f32> {
    let mut gamma: Option<f32> = None;
    for v in t.data.to_f32() {
        let a = v.abs();
        if a == 0.0 {
            continue;
        }
        match gamma {
            None => gamma = Some(a),
            Some(g) if g == a => {}
            Some(_) => return None,
        }
    }
    Some(gamma.unwrap_or(0.0))
}

/// Float weights larger than this (elements) are not checked for {-γ, 0, +γ} values: no projection
/// of a supported model is that large, and the check would read the whole tensor.
const MAX_DENSE_CHECK: u64 = 1 << 26;

/// The values a matmul reads directly or through a transpose.
fn feeds_matmul(f: &Function) -> std::collections::HashSet<ValueId> {
    let mut set = std::collections::HashSet::new();
    for id in f.op_order() {
        let op = f.op(id);
        if op.kind != OpKind::MatMul {
            continue;
        }
        for &v in &op.operands {
            set.insert(v);
            if let Some(def) = f.def_op(v)
                && f.op(def).kind == OpKind::Transpose
            {
                set.extend(f.op(def).operands.iter().copied());
            }
        }
    }
    set
}

/// Facts about each value that can be a leaf.
fn leaf_infos(f: &Function, cx: &PassContext) -> HashMap<ValueId, LeafInfo> {
    let feeds = feeds_matmul(f);
    let mut infos = HashMap::new();
    for (i, v) in f.values.iter().enumerate() {
        let id = ValueId(i as u32);
        let ty = &v.ty;
        let scalar = ty
            .static_shape()
            .is_some_and(|s| s.iter().product::<u64>() == 1);
        let mut info = LeafInfo {
            scalar,
            ..LeafInfo::default()
        };
        if let Some(name) = weight_name(f, id)
            && ty.rank() == 2
        {
            info.ternary_weight = ty.elem == ElemType::Ternary;
            info.float_weight = ty.elem.is_float();
            // Only weights a matmul reads can be dense ternary projections; the check reads the
            // values, so skip everything else (an embedding table read by a gather) and tensors
            // too large to be one projection.
            if info.float_weight
                && feeds.contains(&id)
                && let (Some(store), Some(shape)) = (cx.weights, ty.static_shape())
                && shape.iter().product::<u64>() <= MAX_DENSE_CHECK
            {
                let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
                info.dense_ternary = store
                    .load(name, ElemType::F32, &shape)
                    .ok()
                    .as_ref()
                    .and_then(dense_gamma);
            }
        }
        infos.insert(id, info);
    }
    infos
}

/// The single literal value of a one-element `nn.constant`.
fn literal_scalar(f: &Function, v: ValueId) -> Option<f64> {
    let op = f.op(f.def_op(v)?);
    if op.kind != OpKind::Constant {
        return None;
    }
    let n: u64 = f.ty(v).static_shape()?.iter().product();
    let value = match op.attrs.get("value")? {
        Attr::Floats(x) if x.len() == 1 => x[0],
        Attr::Ints(x) if x.len() == 1 => x[0] as f64,
        _ => return None,
    };
    (n == 1).then_some(value)
}

/// The e-graph of a function, with the class of every value.
struct Graph {
    egraph: EGraph<BitLang, Meta>,
    /// The e-node id each value was added as (an uncanonical id: explanations need it).
    ids: Vec<Option<Id>>,
}

fn build_graph(f: &Function, infos: &HashMap<ValueId, LeafInfo>, explain: bool) -> Graph {
    let mut meta = Meta::default();
    for (v, info) in infos {
        meta.leaves.insert(leaf_symbol(*v), *info);
    }
    let mut egraph = EGraph::new(meta);
    if explain {
        egraph = egraph.with_explanations_enabled();
    }
    let mut ids: Vec<Option<Id>> = vec![None; f.values.len()];
    for &a in &f.args {
        ids[a.index()] = Some(egraph.add(BitLang::Leaf(leaf_symbol(a))));
    }
    let num = |eg: &mut EGraph<BitLang, Meta>, x: f64| eg.add(BitLang::Num(Num::new(x)));
    for op_id in f.op_order() {
        let op = f.op(op_id);
        let child = |i: usize| {
            op.operands
                .get(i)
                .and_then(|v| ids.get(v.index()).copied().flatten())
        };
        let Some(&result) = op.results.first() else {
            continue;
        };
        let rank = f.ty(result).rank();
        let node = match (op.kind, child(0), child(1)) {
            (OpKind::Abs, Some(a), _) => Some(BitLang::Abs([a])),
            (OpKind::ReduceMax, Some(a), _)
                if op.attrs.bool_or("keepdims", true)
                    && op
                        .attrs
                        .ints("axes")
                        .is_some_and(|ax| ax == [-1] || ax == [rank as i64 - 1]) =>
            {
                Some(BitLang::RMax([a]))
            }
            (OpKind::ReduceMean, Some(a), _) => {
                let in_rank = op.operands.first().map_or(0, |v| f.ty(*v).rank()) as i64;
                let all = op.attrs.ints("axes").is_none_or(|ax| {
                    let mut n: Vec<i64> = ax
                        .iter()
                        .map(|&x| if x < 0 { x + in_rank } else { x })
                        .collect();
                    n.sort_unstable();
                    n == (0..in_rank).collect::<Vec<_>>()
                });
                all.then_some(BitLang::RMean([a]))
            }
            (OpKind::Clip, Some(a), _) => {
                let lo = num(
                    &mut egraph,
                    op.attrs.float("min").unwrap_or(f64::NEG_INFINITY),
                );
                let hi = num(&mut egraph, op.attrs.float("max").unwrap_or(f64::INFINITY));
                Some(BitLang::Clip([a, lo, hi]))
            }
            (OpKind::Reciprocal, Some(a), _) => Some(BitLang::Recip([a])),
            (OpKind::Round, Some(a), _) => Some(BitLang::Round([a])),
            (OpKind::Mul, Some(a), Some(b)) => Some(BitLang::Mul([a, b])),
            (OpKind::Div, Some(a), Some(b)) => Some(BitLang::Div([a, b])),
            (OpKind::Max, Some(a), Some(b)) => Some(BitLang::Max([a, b])),
            (OpKind::Min, Some(a), Some(b)) => Some(BitLang::Min([a, b])),
            (OpKind::MatMul, Some(a), Some(b)) => Some(BitLang::MatMul([a, b])),
            (OpKind::Transpose, Some(a), _) if op.attrs.ints("perm") == Some(&[1, 0]) => {
                Some(BitLang::T([a]))
            }
            (OpKind::Cast, Some(a), _) => match op.attrs.elem_type("to") {
                Some(ElemType::F32) => Some(BitLang::F32([a])),
                Some(ElemType::I8) => Some(BitLang::I8([a])),
                _ => None,
            },
            (OpKind::Constant, _, _) => {
                literal_scalar(f, result).map(|x| BitLang::Num(Num::new(x)))
            }
            // A one-element value keeps its meaning through a reshape: treat it as its operand.
            (OpKind::Reshape | OpKind::Squeeze | OpKind::Unsqueeze, Some(a), _)
                if infos.get(&result).is_some_and(|i| i.scalar) =>
            {
                ids[result.index()] = Some(a);
                continue;
            }
            _ => None,
        };
        for &r in &op.results {
            let node = match (&node, r == result) {
                (Some(n), true) => n.clone(),
                _ => BitLang::Leaf(leaf_symbol(r)),
            };
            ids[r.index()] = Some(egraph.add(node));
        }
    }
    Graph { egraph, ids }
}

/// A piece of the lowered layer's scale, read off the e-graph.
enum Scale {
    One,
    Value(ValueId),
    Literal(f64),
    Inv(Box<Scale>),
    Mul(Box<Scale>, Box<Scale>),
}

/// Where the ternary weight comes from.
enum WeightSource {
    Ternary(ValueId),
    Dense {
        value: ValueId,
        transposed: bool,
    },
    Master {
        value: ValueId,
        transposed: bool,
        eps: f64,
    },
}

/// A lowered layer, as found in the e-graph.
struct Found {
    x: ValueId,
    eps: f64,
    /// The scale is `(1/max)·127` rather than `127/max`.
    reciprocal: bool,
    weight: WeightSource,
    scale: Scale,
}

struct Reader<'a> {
    extractor: Extractor<'a, BitCost, BitLang, Meta>,
    egraph: &'a EGraph<BitLang, Meta>,
    /// The earliest value of each canonical class.
    value_of: HashMap<Id, ValueId>,
}

impl Reader<'_> {
    fn value(&self, class: Id) -> Option<ValueId> {
        self.value_of.get(&self.egraph.find(class)).copied()
    }

    fn num(&self, class: Id) -> Option<f64> {
        self.egraph[class].nodes.iter().find_map(|n| match n {
            BitLang::Num(x) => Some(x.value()),
            _ => None,
        })
    }

    fn scale(&self, class: Id, depth: usize) -> Option<Scale> {
        if depth > 16 {
            return None;
        }
        if let Some(x) = self.num(class) {
            return Some(if x == 1.0 {
                Scale::One
            } else {
                Scale::Literal(x)
            });
        }
        match self.extractor.find_best_node(class) {
            BitLang::Inv([a]) => Some(Scale::Inv(Box::new(self.scale(*a, depth + 1)?))),
            BitLang::ScaleMul([a, b]) => Some(Scale::Mul(
                Box::new(self.scale(*a, depth + 1)?),
                Box::new(self.scale(*b, depth + 1)?),
            )),
            _ => self.value(class).map(Scale::Value),
        }
    }

    fn weight(&self, class: Id) -> Option<WeightSource> {
        match self.extractor.find_best_node(class) {
            BitLang::TernaryW([w]) => Some(WeightSource::Ternary(self.value(*w)?)),
            BitLang::DenseNK([w]) => Some(WeightSource::Dense {
                value: self.value(*w)?,
                transposed: false,
            }),
            BitLang::DenseKN([w]) => Some(WeightSource::Dense {
                value: self.value(*w)?,
                transposed: true,
            }),
            BitLang::MasterNK([w, e]) => Some(WeightSource::Master {
                value: self.value(*w)?,
                transposed: false,
                eps: self.num(*e)?,
            }),
            BitLang::MasterKN([w, e]) => Some(WeightSource::Master {
                value: self.value(*w)?,
                transposed: true,
                eps: self.num(*e)?,
            }),
            _ => None,
        }
    }

    fn found(&self, class: Id) -> Option<Found> {
        match self.extractor.find_best_node(class) {
            BitLang::BitLinear([x, e, form, w, s]) => Some(Found {
                x: self.value(*x)?,
                eps: self.num(*e)?,
                reciprocal: self.num(*form)? != 0.0,
                weight: self.weight(*w)?,
                scale: self.scale(*s, 0)?,
            }),
            _ => None,
        }
    }
}

/// Collects the rule names an explanation applies.
fn rules_of(terms: &[egg::FlatTerm<BitLang>], out: &mut Vec<String>) {
    for t in terms {
        for r in [&t.forward_rule, &t.backward_rule].into_iter().flatten() {
            let name = r.to_string();
            if !out.contains(&name) {
                out.push(name);
            }
        }
        rules_of(&t.children, out);
    }
}

fn lower_function(f: &mut Function, cx: &mut PassContext) -> Result<bool, PassError> {
    let matmuls = f
        .op_order()
        .filter(|&o| f.op(o).kind == OpKind::MatMul)
        .count();
    if matmuls == 0 {
        return Ok(false);
    }
    let infos = leaf_infos(f, cx);
    let graph = build_graph(f, &infos, cx.explain);
    let mut runner = Runner::default()
        .with_egraph(graph.egraph)
        .with_node_limit(NODE_LIMIT)
        .with_iter_limit(ITER_LIMIT)
        .with_time_limit(NO_TIME_LIMIT);
    if cx.explain {
        runner = runner.with_explanations_enabled();
    }
    let runner = runner.run(&crate::rules::bitlinear::all());
    let mut egraph = runner.egraph;
    cx.notes.push(format!(
        "lower-bitlinear @{}: e-graph {} nodes / {} classes after {} iteration(s), stopped: {}",
        f.name,
        egraph.total_number_of_nodes(),
        egraph.number_of_classes(),
        runner.iterations.len(),
        stop_reason_text(runner.stop_reason.as_ref())
    ));
    // Candidate roots: every value, from the last op back, so an outer multiply is lowered before
    // the matmul inside it (which then becomes dead).
    let order: Vec<OpId> = f.op_order().collect();
    let mut plans: Vec<(ValueId, Found, Option<Vec<String>>)> = Vec::new();
    {
        let mut value_of: HashMap<Id, ValueId> = HashMap::new();
        for (i, id) in graph.ids.iter().enumerate() {
            if let Some(id) = id {
                value_of
                    .entry(egraph.find(*id))
                    .or_insert(ValueId(i as u32));
            }
        }
        let reader = Reader {
            extractor: Extractor::new(&egraph, BitCost),
            egraph: &egraph,
            value_of,
        };
        let mut claimed = std::collections::HashSet::new();
        for &op_id in order.iter().rev() {
            let op = f.op(op_id);
            if !matches!(op.kind, OpKind::MatMul | OpKind::Mul | OpKind::Div) {
                continue;
            }
            let Some(&root) = op.results.first() else {
                continue;
            };
            let Some(Some(id)) = graph.ids.get(root.index()) else {
                continue;
            };
            let class = egraph.find(*id);
            if claimed.contains(&class) {
                continue;
            }
            if let Some(found) = reader.found(class) {
                claimed.insert(class);
                plans.push((root, found, None));
            }
        }
    }
    if cx.explain {
        for (root, _, rules) in &mut plans {
            if let Some(Some(id)) = graph.ids.get(root.index()) {
                let lowered: RecExpr<BitLang> = Extractor::new(&egraph, BitCost).find_best(*id).1;
                let original = egraph.id_to_expr(*id);
                let mut expl = egraph.explain_equivalence(&original, &lowered);
                let mut names = Vec::new();
                rules_of(expl.make_flat_explanation(), &mut names);
                *rules = Some(names);
            }
        }
    }
    let mut act: HashMap<(ValueId, u64, bool), (ValueId, ValueId)> = HashMap::new();
    let mut lowered = 0usize;
    for (root, found, rules) in plans {
        if !live_values(f).get(root.index()).copied().unwrap_or(false) {
            continue; // Already dead: an outer op was lowered.
        }
        match build(f, cx, root, &found, &mut act)? {
            Some(new) => {
                f.replace_uses(root, new);
                lowered += 1;
                if let Some(rules) = rules {
                    let name = f
                        .value(root)
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{}", root.0));
                    cx.notes
                        .push(format!("lowered %{name}: {}", rules.join(", ")));
                }
            }
            None => cx.notes.push(format!(
                "lower-bitlinear: value {} matched but did not check out; left as is",
                root.0
            )),
        }
    }
    f.remove_dead_ops();
    let remaining = f
        .op_order()
        .filter(|&o| f.op(o).kind == OpKind::MatMul)
        .count();
    cx.notes.push(format!(
        "lower-bitlinear @{}: lowered {lowered} ternary projection(s) to bit.ternary_matmul; {remaining} matmul(s) stay full precision",
        f.name
    ));
    Ok(lowered > 0)
}

/// Which values the function's results depend on.
fn live_values(f: &Function) -> Vec<bool> {
    let mut live = vec![false; f.values.len()];
    for v in &f.returns {
        live[v.index()] = true;
    }
    let order: Vec<OpId> = f.op_order().collect();
    for &id in order.iter().rev() {
        let op = f.op(id);
        if op.results.iter().any(|r| live[r.index()]) {
            for v in &op.operands {
                live[v.index()] = true;
            }
        }
    }
    live
}

/// Inserts `kind` before `anchor` and returns its first result.
fn insert(
    f: &mut Function,
    anchor: OpId,
    kind: OpKind,
    operands: Vec<ValueId>,
    attrs: Attrs,
    ty: TensorType,
) -> ValueId {
    f.insert_op_before(anchor, kind, operands, attrs, vec![ty])[0]
}

fn scalar_ty() -> TensorType {
    TensorType::of(&[1], ElemType::F32)
}

/// A derived weight: registers `tensor` under `name` and inserts an `nn.weight` for it.
fn derived_weight(
    f: &mut Function,
    cx: &mut PassContext,
    anchor: OpId,
    name: String,
    tensor: Tensor,
) -> ValueId {
    let ty = tensor.ty();
    cx.derived.tensors.insert(name.clone(), tensor);
    insert(
        f,
        anchor,
        OpKind::Weight,
        Vec::new(),
        Attrs::new().with("name", Attr::Str(name)),
        ty,
    )
}

/// The ternary values `[N, K]` and γ of a float weight, as the original IR computes them.
fn ternarize(
    w: &Tensor,
    transposed: bool,
    master_eps: Option<f64>,
) -> Option<(Vec<i8>, usize, usize, f32)> {
    let [r, c] = w.shape[..] else { return None };
    let v = w.data.to_f32();
    let (t, gamma): (Vec<i8>, f32) = match master_eps {
        None => {
            let g = dense_gamma(w)?;
            (
                v.iter()
                    .map(|&x| {
                        if x == 0.0 {
                            0
                        } else if x > 0.0 {
                            1
                        } else {
                            -1
                        }
                    })
                    .collect(),
                g,
            )
        }
        // s_w = 1 / clip(mean|W|, eps); T = clip(round(W·s_w), -1, 1); γ = 1/s_w, as the
        // interpreter computes the chain (`bitnet_ir::absmean`).
        Some(eps) => bitnet_ir::absmean::absmean_ternarize(&v, eps as f32),
    };
    if transposed {
        // [K, N] → [N, K].
        let mut out = vec![0i8; t.len()];
        for k in 0..r {
            for n in 0..c {
                out[n * r + k] = t[k * c + n];
            }
        }
        Some((out, c, r, gamma))
    } else {
        Some((t, r, c, gamma))
    }
}

fn build_scale(f: &mut Function, anchor: OpId, s: &Scale) -> Option<Option<ValueId>> {
    Some(match s {
        Scale::One => None,
        Scale::Literal(x) => Some(insert(
            f,
            anchor,
            OpKind::Constant,
            Vec::new(),
            Attrs::new().with("value", Attr::Floats(vec![*x])),
            scalar_ty(),
        )),
        Scale::Value(v) => {
            let ty = f.ty(*v).clone();
            if !ty.elem.is_float()
                || ty
                    .static_shape()
                    .is_none_or(|s| s.iter().product::<u64>() != 1)
            {
                return None;
            }
            let v = if ty.elem == ElemType::F32 {
                *v
            } else {
                insert(
                    f,
                    anchor,
                    OpKind::Cast,
                    vec![*v],
                    Attrs::new().with("to", Attr::Type(ElemType::F32)),
                    ty.with_elem(ElemType::F32),
                )
            };
            if ty.dims == [Dim::Static(1)] {
                Some(v)
            } else {
                Some(insert(
                    f,
                    anchor,
                    OpKind::Reshape,
                    vec![v],
                    Attrs::new(),
                    scalar_ty(),
                ))
            }
        }
        Scale::Inv(a) => {
            // 1/1 is 1: an absent factor stays absent.
            build_scale(f, anchor, a)?.map(|a| {
                insert(
                    f,
                    anchor,
                    OpKind::Reciprocal,
                    vec![a],
                    Attrs::new(),
                    scalar_ty(),
                )
            })
        }
        Scale::Mul(a, b) => {
            let (a, b) = (build_scale(f, anchor, a)?, build_scale(f, anchor, b)?);
            match (a, b) {
                (None, x) | (x, None) => x,
                (Some(a), Some(b)) => Some(insert(
                    f,
                    anchor,
                    OpKind::Mul,
                    vec![a, b],
                    Attrs::new(),
                    scalar_ty(),
                )),
            }
        }
    })
}

/// Builds the lowered layer before `root`'s op; `None` if a piece does not check out.
fn build(
    f: &mut Function,
    cx: &mut PassContext,
    root: ValueId,
    found: &Found,
    act: &mut HashMap<(ValueId, u64, bool), (ValueId, ValueId)>,
) -> Result<Option<ValueId>, PassError> {
    let Some(anchor) = f.def_op(root) else {
        return Ok(None);
    };
    let x_ty = f.ty(found.x).clone();
    if !x_ty.elem.is_float() || x_ty.rank() == 0 {
        return Ok(None);
    }
    let k = x_ty.dims.last().cloned();
    // The ternary weight [N, K] and its own γ (for derived weights).
    let (w, own_gamma) = match &found.weight {
        WeightSource::Ternary(v) => (*v, None),
        WeightSource::Dense { value, transposed }
        | WeightSource::Master {
            value, transposed, ..
        } => {
            let master_eps = match &found.weight {
                WeightSource::Master { eps, .. } => Some(*eps),
                _ => None,
            };
            let (Some(name), Some(store)) =
                (weight_name(f, *value).map(str::to_string), cx.weights)
            else {
                return Ok(None);
            };
            let ty = f.ty(*value).clone();
            let Some(shape) = ty.static_shape() else {
                return Ok(None);
            };
            let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
            let tensor = store
                .load(&name, ElemType::F32, &shape)
                .map_err(|e| fail(e.to_string()))?;
            let Some((t, n, kk, gamma)) = ternarize(&tensor, *transposed, master_eps) else {
                return Ok(None);
            };
            let Some(tern) = Tensor::new(vec![n, kk], Data::Ternary(t)) else {
                return Ok(None);
            };
            let w = derived_weight(f, cx, anchor, format!("{name}#ternary"), tern);
            let Some(g) = Tensor::new(vec![1], Data::F32(vec![gamma])) else {
                return Ok(None);
            };
            let g = derived_weight(f, cx, anchor, format!("{name}#gamma"), g);
            (w, Some(g))
        }
    };
    let w_ty = f.ty(w).clone();
    if w_ty.elem != ElemType::Ternary || w_ty.rank() != 2 || Some(&w_ty.dims[1]) != k.as_ref() {
        return Ok(None);
    }
    let Some(extra) = build_scale(f, anchor, &found.scale) else {
        return Ok(None);
    };
    let ws = match (own_gamma, extra) {
        (Some(g), Some(e)) => insert(
            f,
            anchor,
            OpKind::Mul,
            vec![g, e],
            Attrs::new(),
            scalar_ty(),
        ),
        (Some(g), None) | (None, Some(g)) => g,
        (None, None) => insert(
            f,
            anchor,
            OpKind::Constant,
            Vec::new(),
            Attrs::new().with("value", Attr::Floats(vec![1.0])),
            scalar_ty(),
        ),
    };
    let (xq, xs) = match act.get(&(found.x, found.eps.to_bits(), found.reciprocal)) {
        Some(&pair) => pair,
        None => {
            // Right after x is defined, so every projection of x can use it.
            let pair = act_quant_after(f, found.x, found.eps, found.reciprocal, &x_ty);
            act.insert((found.x, found.eps.to_bits(), found.reciprocal), pair);
            pair
        }
    };
    let mut out_dims = x_ty.dims.clone();
    if let Some(last) = out_dims.last_mut() {
        *last = w_ty.dims[0].clone();
    }
    let out_ty = TensorType::new(out_dims, ElemType::F32);
    if &out_ty != f.ty(root) {
        return Ok(None);
    }
    Ok(Some(insert(
        f,
        anchor,
        OpKind::TernaryMatmul,
        vec![xq, xs, w, ws],
        Attrs::new(),
        out_ty,
    )))
}

/// Inserts `bit.act_quant` of `x` right after `x`'s definition (at the start for an argument).
fn act_quant_after(
    f: &mut Function,
    x: ValueId,
    eps: f64,
    reciprocal: bool,
    x_ty: &TensorType,
) -> (ValueId, ValueId) {
    let mut s_dims = x_ty.dims.clone();
    if let Some(last) = s_dims.last_mut() {
        *last = Dim::Static(1);
    }
    let types = vec![
        x_ty.with_elem(ElemType::I8),
        TensorType::new(s_dims, ElemType::F32),
    ];
    let mut attrs = Attrs::new().with("eps", Attr::Float(eps));
    if reciprocal {
        attrs = attrs.with("reciprocal", Attr::Bool(true));
    }
    let results = f.push_op(OpKind::ActQuant, vec![x], attrs, types);
    let new_op = OpId(f.ops.len() as u32 - 1);
    if let Some(last) = f.blocks.last_mut() {
        last.ops.retain(|&o| o != new_op);
    }
    let after = match f.value(x).def {
        ValueDef::OpResult { op, .. } => Some(op),
        ValueDef::Arg(_) | ValueDef::Undefined => None,
    };
    if let Some(b) = f.blocks.first_mut() {
        let pos = after
            .and_then(|a| b.ops.iter().position(|&o| o == a))
            .map_or(0, |p| p + 1);
        b.ops.insert(pos, new_op);
    }
    (results[0], results[1])
}

/// Why the e-graph runner stopped, in words (the note `opt --explain` prints).
fn stop_reason_text(reason: Option<&egg::StopReason>) -> String {
    match reason {
        None => "not run".into(),
        Some(egg::StopReason::Saturated) => "saturated (every rewrite applied)".into(),
        Some(egg::StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(egg::StopReason::NodeLimit(n)) => format!("node limit ({n} nodes)"),
        Some(egg::StopReason::TimeLimit(s)) => format!("time limit ({s:.1} s)"),
        Some(egg::StopReason::Other(why)) => why.clone(),
    }
}
