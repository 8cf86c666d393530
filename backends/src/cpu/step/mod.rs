//! A training step for the CPU: the step function `bitnet_ir::autodiff::emit_backward_in` writes
//! (forward ops, then `nn.vjp` ops, f32 cotangents), lowered once for one sequence length into a
//! list of launches, each op resolved to a native f32 kernel or, where this module has none yet,
//! to the op's own `eval` (the interpreter's).
//!
//! The contract is the interpreter's: every native kernel gives, bit for bit, what the op's `eval`
//! gives on the same operands, so a step run here equals the interpreted step function exactly
//! (`tests/train.rs` checks the whole step; the unit tests here each kernel). That holds because
//! the interpreter computes f32 ops in f64 and rounds once: `+ − × ÷` of f32 values rounded from
//! f64 are the f32 operations themselves, and the sums the kernels keep in f64 (matmul, the mean,
//! the cotangent summed over broadcast axes) run in the interpreter's order, with products of f32
//! values that f64 holds exactly (so a fused multiply-add rounds as the separate ones do).
//!
//! What a run saves over the interpreter: no conversion of every operand to f64, no index maps built
//! per op for broadcasting or transposing, the matmul gemm fed from f32 with fused multiply-adds,
//! values dropped after their last use, and the weight-only values (`bitnet_ir::frozen::Frozen`)
//! read in place instead of copied per window.
//!
//! Kernels, one kind per file: `elementwise` (unary, clip, broadcast binary ops and their
//! cotangents), `reduce` (max and mean), `matmul` (the product and both cotangents), `transpose`
//! (2-D, and its cotangent).

mod attention;
mod checkpoint;
mod cross_entropy;
mod elementwise;
mod embedding;
mod matmul;
mod norm;
mod reduce;
mod rope;
mod transpose;

use crate::BackendError;
use bitnet_ir::OpKind;
use bitnet_ir::frozen::Frozen;
use bitnet_ir::interp::bind_symbols;
use bitnet_ir::module::{Function, OpId, ValueDef, ValueId};
use bitnet_ir::ops::EvalCtx;
use bitnet_ir::tensor::{Data, Tensor};
use bitnet_ir::types::{Dim, ElemType};
use bitnet_ir::verify::verify_function;
use bitnet_ir::weights::WeightStore;
use std::collections::HashMap;

/// How one op runs.
#[derive(Clone, Debug, PartialEq)]
enum Kernel {
    /// The op's own `eval`, on tensors (no native kernel for it yet).
    Interpreted,
    /// A native kernel.
    Native(Native),
}

/// The native kernels, with what lowering resolved (shapes, broadcast strides).
#[derive(Clone, Debug, PartialEq)]
enum Native {
    /// A unary op or clip on f32.
    Unary(elementwise::Unary),
    /// A binary op with broadcasting on f32.
    Binary(elementwise::Binary),
    /// The cotangent of a binary op's operand, summed over its broadcast axes.
    BinaryGrad(elementwise::BinaryGrad),
    /// `nn.reduce_max` / `nn.reduce_mean` on f32.
    Reduce(reduce::Reduce),
    /// `nn.matmul` of two 2-D f32 operands.
    Matmul(matmul::Matmul),
    /// One operand's cotangent of a 2-D `nn.matmul`.
    MatmulGrad(matmul::MatmulGrad),
    /// A 2-D transpose.
    Transpose(transpose::Transpose),
    /// The cotangent of a 2-D transpose: its cotangent transposed back.
    TransposeGrad(transpose::Transpose),
    /// `nn.attention` (three results: the output and the updated caches).
    Attention(attention::Attention),
    /// The cotangent of one of attention's operands from its output's (`wrt`).
    AttentionGrad(attention::Attention, usize),
    /// The cotangent of `nn.relu2`'s operand.
    Relu2Grad(elementwise::Relu2Grad),
    /// `nn.rms_norm` over the last axis.
    RmsNorm(norm::RmsNorm),
    /// `nn.rope`.
    Rope(rope::Rope),
    /// The cotangent of `nn.rope`'s input.
    RopeGrad(rope::Rope),
    /// `nn.cross_entropy`.
    CrossEntropy(cross_entropy::CrossEntropy),
    /// The cotangent of `nn.cross_entropy`'s logits.
    CrossEntropyGrad(cross_entropy::CrossEntropy),
    /// `nn.embedding`.
    Embedding(embedding::Embedding),
    /// The cotangent of `nn.embedding`'s table.
    EmbeddingGrad(embedding::Embedding),
    /// The cotangent of `nn.rms_norm`'s input or scale (`wrt`).
    RmsNormGrad(norm::RmsNorm, usize),
}

impl Native {
    /// Runs the kernel on `inputs` (the op's operands), giving its results, of shapes `shapes`.
    /// `extra` is the launch's extra operand (`Launch::extra`), when it has a value.
    fn run(
        &self,
        inputs: &[&Tensor],
        extra: Option<&Tensor>,
        shapes: &[Vec<usize>],
    ) -> Result<Vec<Tensor>, String> {
        let f = |i: usize| f32_operand(inputs, i);
        let one = |v: Result<Vec<f32>, String>| v.map(|v| vec![v]);
        let values = match self {
            Native::Unary(k) => one(k.run(f(0)?)),
            Native::Binary(k) => one(k.run(f(0)?, f(1)?)),
            Native::BinaryGrad(k) => one(k.run(f(0)?, f(1)?, f(3)?)),
            Native::Reduce(k) => one(k.run(f(0)?)),
            Native::Matmul(k) => one(k.run(f(0)?, f(1)?)),
            Native::MatmulGrad(k) => {
                let bt = match extra.map(|t| &t.data) {
                    Some(Data::F32(v)) => Some(v.as_slice()),
                    _ => None,
                };
                one(k.run(f(0)?, f(1)?, f(3)?, bt))
            }
            Native::Transpose(k) => one(k.run(f(0)?)),
            Native::TransposeGrad(k) => one(k.run(f(2)?)),
            Native::Attention(k) => {
                k.run([f(0)?, f(1)?, f(2)?, f(3)?, f(4)?], position(inputs, 5)?)
            }
            Native::AttentionGrad(_, wrt) | Native::RmsNormGrad(_, wrt) => {
                let mut all = self
                    .grads(inputs)
                    .unwrap_or_else(|| Err("internal: no rule".into()))?;
                if *wrt >= all.len() {
                    return Err(format!("internal: no cotangent for operand {wrt}"));
                }
                Ok(vec![all.swap_remove(*wrt)])
            }
            Native::RmsNorm(k) => one(k.run(f(0)?, f(1)?)),
            Native::Relu2Grad(k) => one(k.run(f(0)?, f(2)?)),
            Native::Rope(k) => one(k.run(f(0)?, position(inputs, 1)?)),
            Native::RopeGrad(k) => one(k.grad(f(3)?, position(inputs, 1)?)),
            Native::CrossEntropy(k) => one(k.run(f(0)?, i64_operand(inputs, 1)?)),
            Native::CrossEntropyGrad(k) => {
                let g = f(3)?
                    .first()
                    .copied()
                    .ok_or("the loss's cotangent is empty")?;
                one(k.grad(f(0)?, i64_operand(inputs, 1)?, g))
            }
            Native::Embedding(k) => one(k.run(f(0)?, i64_operand(inputs, 1)?)),
            Native::EmbeddingGrad(k) => one(k.grad(i64_operand(inputs, 1)?, f(3)?)),
        }?;
        if values.len() != shapes.len() {
            return Err(format!(
                "internal: the kernel gave {} results for {}",
                values.len(),
                shapes.len()
            ));
        }
        values
            .into_iter()
            .zip(shapes)
            .map(|(v, shape)| tensor(v, shape))
            .collect()
    }

    /// For a kernel that computes every forward operand's cotangent at once (shared by sibling
    /// `nn.vjp` ops): those cotangents, in operand order; `None` for the others.
    fn run_all(&self, inputs: &[&Tensor]) -> Option<Result<Vec<Tensor>, String>> {
        Some(self.grads(inputs)?.and_then(|all| {
            all.into_iter()
                .zip(inputs)
                .map(|(v, t)| tensor(v, &t.shape))
                .collect()
        }))
    }

    /// For a kernel of a rule that gives every float operand's cotangent: those, in operand order.
    fn grads(&self, inputs: &[&Tensor]) -> Option<Result<Vec<Vec<f32>>, String>> {
        let f = |i: usize| f32_operand(inputs, i);
        match self {
            Native::AttentionGrad(k, _) => Some(attention_grads(k, inputs)),
            Native::RmsNormGrad(k, _) => Some((|| k.grad(f(0)?, f(1)?, f(3)?))()),
            _ => None,
        }
    }
}

/// `values` as an f32 tensor of `shape`, when the counts agree.
fn tensor(values: Vec<f32>, shape: &[usize]) -> Result<Tensor, String> {
    if bitnet_ir::tensor::checked_numel(shape) != Some(values.len()) {
        return Err(format!(
            "internal: the kernel gave {} values for a result of shape {shape:?}",
            values.len()
        ));
    }
    Ok(Tensor {
        shape: shape.to_vec(),
        data: Data::F32(values),
    })
}

/// Operand `i` as f32 values.
fn f32_operand<'a>(inputs: &[&'a Tensor], i: usize) -> Result<&'a [f32], String> {
    match inputs.get(i).map(|t| &t.data) {
        Some(Data::F32(v)) => Ok(v.as_slice()),
        Some(other) => Err(format!("operand {i} is {}, not f32", other.elem())),
        None => Err(format!("missing operand {i}")),
    }
}

/// Operand `i` as i64 values.
fn i64_operand<'a>(inputs: &[&'a Tensor], i: usize) -> Result<&'a [i64], String> {
    match inputs.get(i).map(|t| &t.data) {
        Some(Data::I64(v)) => Ok(v.as_slice()),
        Some(other) => Err(format!("operand {i} is {}, not i64", other.elem())),
        None => Err(format!("missing operand {i}")),
    }
}

/// Operand `i` as a position (a non-negative scalar integer), as the ops read it.
fn position(inputs: &[&Tensor], i: usize) -> Result<usize, String> {
    bitnet_ir::ops::rope::position_of(
        inputs
            .get(i)
            .ok_or_else(|| format!("missing operand {i}"))?,
    )
}

/// The cotangents of attention's `q`, `k`, `v` and caches from an `nn.vjp`'s operands (the forward
/// operands, the results, the output's cotangent).
fn attention_grads(k: &attention::Attention, inputs: &[&Tensor]) -> Result<Vec<Vec<f32>>, String> {
    let f = |i: usize| f32_operand(inputs, i);
    k.grad([f(0)?, f(7)?, f(8)?, f(9)?], position(inputs, 5)?)
}

/// One op of the plan.
#[derive(Clone, Debug)]
struct Launch {
    /// The op.
    op: OpId,
    /// How it runs.
    kernel: Kernel,
    /// Its results' concrete shapes.
    shapes: Vec<Vec<usize>>,
    /// Its results' element types.
    elems: Vec<ElemType>,
    /// Values no later launch reads (and the function does not return): dropped after this one.
    drop_after: Vec<ValueId>,
    /// A value the native kernel may read besides the op's operands: for the cotangent of a matmul's
    /// left operand whose right operand is `nn.transpose(w)` (2-D), `w`, which is that right
    /// operand transposed (read in place instead of transposed again).
    extra: Option<ValueId>,
    /// Whether this runs a forward op again (gradient checkpointing, `checkpoint.rs`).
    recompute: bool,
    /// For an interpreted `nn.vjp` that has siblings (the same forward op and cotangents, another
    /// `wrt`): the rule runs once for all of them.
    share: Option<Share>,
}

/// An interpreted `nn.vjp`'s place among its siblings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Share {
    /// The siblings' group.
    group: usize,
    /// The operand whose cotangent this one is.
    wrt: usize,
    /// Whether no later sibling follows (the group's values are dropped after this one).
    last: bool,
}

/// A step function lowered for one binding of its symbols (see the module doc).
#[derive(Clone, Debug)]
pub struct StepPlan {
    /// The function, as lowered.
    function: Function,
    /// The symbol bindings it was lowered for.
    bindings: HashMap<String, u64>,
    /// The ops in order.
    launches: Vec<Launch>,
    /// How many groups of sibling `nn.vjp` ops share a rule.
    groups: usize,
}

/// Groups the `nn.vjp` launches that differ only in `wrt` and whose kernel computes every
/// operand's cotangent anyway (the op's rule through `eval`, or attention's) (see `Share`).
fn share_vjp_rules(f: &Function, launches: &mut [Launch]) {
    let mut groups: HashMap<(Vec<ValueId>, String), Vec<usize>> = HashMap::new();
    for (i, l) in launches.iter().enumerate() {
        let op = f.op(l.op);
        let shareable = matches!(
            l.kernel,
            Kernel::Interpreted
                | Kernel::Native(Native::AttentionGrad(..) | Native::RmsNormGrad(..))
        );
        if op.kind != OpKind::Vjp || !shareable {
            continue;
        }
        let mut attrs = op.attrs.clone();
        attrs.0.remove("wrt");
        groups
            .entry((op.operands.clone(), format!("{attrs:?}")))
            .or_default()
            .push(i);
    }
    let mut members: Vec<Vec<usize>> = groups.into_values().filter(|m| m.len() > 1).collect();
    members.sort();
    for (group, m) in members.iter().enumerate() {
        for (k, &i) in m.iter().enumerate() {
            let wrt = usize::try_from(f.op(launches[i].op).attrs.int_or("wrt", -1));
            if let Ok(wrt) = wrt {
                launches[i].share = Some(Share {
                    group,
                    wrt,
                    last: k + 1 == m.len(),
                });
            }
        }
    }
}

/// How many ops of a plan run natively and how many through their `eval`, by op name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Ops with a native kernel.
    pub native: usize,
    /// Ops run by their `eval`, by name (`nn.vjp` as `nn.vjp(of)`), with counts.
    pub interpreted: Vec<(String, usize)>,
}

fn input_err(f: &Function, message: String) -> BackendError {
    BackendError::Input(format!("the training step @{}: {message}", f.name))
}

impl StepPlan {
    /// Lowers `f` for the symbol values `symbols` (each symbol of `f` bound, within its bound).
    pub fn new(f: &Function, symbols: &[(&str, u64)]) -> Result<StepPlan, BackendError> {
        StepPlan::checkpointed(f, symbols, &[])
    }

    /// `new`, with gradient checkpointing at `boundaries` (values of the forward ops, such as each
    /// decoder block's output): only the values a later segment or the backward pass reads across
    /// them are kept from the forward pass, and each segment but the last runs again before the
    /// backward pass first reads it (`checkpoint.rs`). The same results, bit for bit.
    pub fn checkpointed(
        f: &Function,
        symbols: &[(&str, u64)],
        boundaries: &[ValueId],
    ) -> Result<StepPlan, BackendError> {
        let diags = verify_function(f);
        if let Some(d) = diags.first() {
            return Err(input_err(f, format!("does not verify: {}", d.message)));
        }
        let mut bindings = HashMap::new();
        for decl in &f.symbols {
            let value = symbols
                .iter()
                .find(|(n, _)| *n == decl.name)
                .map(|(_, v)| *v)
                .ok_or_else(|| input_err(f, format!("no value given for symbol {}", decl.name)))?;
            if value > decl.max {
                return Err(input_err(
                    f,
                    format!("{} = {value} exceeds its bound {}", decl.name, decl.max),
                ));
            }
            bindings.insert(decl.name.clone(), value);
        }
        let shape_of = |v: ValueId| -> Result<Vec<usize>, BackendError> {
            f.ty(v)
                .dims
                .iter()
                .map(|d| {
                    let n = match d {
                        Dim::Static(n) => Some(*n),
                        Dim::Sym(s) => bindings.get(s).copied(),
                    };
                    n.and_then(|n| usize::try_from(n).ok())
                })
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| input_err(f, format!("cannot make {} concrete", f.ty(v))))
        };
        let sequence = checkpoint::schedule(f, boundaries);
        let extras: Vec<Option<ValueId>> = sequence
            .iter()
            .map(|&(id, _)| transposed_source(f, id))
            .collect();
        // Each definition of a value (a recomputation defines it again) lives until its last use.
        let mut current: HashMap<ValueId, usize> = HashMap::new();
        let mut last_use: HashMap<(ValueId, usize), usize> = HashMap::new();
        for (&arg, k) in f.args.iter().zip(0..) {
            current.insert(arg, usize::MAX - k);
        }
        for (i, &(id, _)) in sequence.iter().enumerate() {
            let op = f.op(id);
            for &v in op.operands.iter().chain(&extras[i]) {
                if let Some(&def) = current.get(&v) {
                    last_use.insert((v, def), i);
                }
            }
            for &r in &op.results {
                current.insert(r, i);
                last_use.insert((r, i), i);
            }
        }
        let mut drops: Vec<Vec<ValueId>> = vec![Vec::new(); sequence.len()];
        for ((v, _), i) in last_use {
            if !f.returns.contains(&v)
                && let Some(d) = drops.get_mut(i)
            {
                d.push(v);
            }
        }
        let mut kernels: HashMap<OpId, Kernel> = HashMap::new();
        let mut launches = Vec::with_capacity(sequence.len());
        for (i, &(id, recompute)) in sequence.iter().enumerate() {
            let op = f.op(id);
            let shapes = op
                .results
                .iter()
                .map(|&r| shape_of(r))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(big) = shapes.iter().find(|s| {
                bitnet_ir::tensor::checked_numel(s)
                    .is_none_or(|n| n > bitnet_ir::interp::MAX_INTERP_ELEMENTS)
            }) {
                return Err(input_err(
                    f,
                    format!("a value of shape {big:?} has more than 2^31 elements"),
                ));
            }
            let kernel = match kernels.get(&id) {
                Some(k) => k.clone(),
                None => {
                    let operand_shapes = op
                        .operands
                        .iter()
                        .map(|&v| shape_of(v))
                        .collect::<Result<Vec<_>, _>>()?;
                    let all_f32 = op
                        .operands
                        .iter()
                        .chain(&op.results)
                        .all(|&v| f.ty(v).elem == ElemType::F32);
                    let k = if all_f32 || mixed_operands(f, op) {
                        choose(op.kind, &op.attrs, &operand_shapes, &shapes)
                            .map_or(Kernel::Interpreted, Kernel::Native)
                    } else {
                        Kernel::Interpreted
                    };
                    kernels.insert(id, k.clone());
                    k
                }
            };
            let extra =
                extras[i].filter(|_| matches!(kernel, Kernel::Native(Native::MatmulGrad(_))));
            let mut drop_after = std::mem::take(&mut drops[i]);
            drop_after.sort_by_key(|v| v.index());
            drop_after.dedup();
            launches.push(Launch {
                op: id,
                kernel,
                shapes,
                elems: op.results.iter().map(|&r| f.ty(r).elem).collect(),
                drop_after,
                extra,
                share: None,
                recompute,
            });
        }
        share_vjp_rules(f, &mut launches);
        let groups = launches
            .iter()
            .filter_map(|l| l.share.map(|s| s.group + 1))
            .max()
            .unwrap_or(0);
        Ok(StepPlan {
            function: f.clone(),
            bindings,
            launches,
            groups,
        })
    }

    /// The function this plan runs (make its `Frozen` values from this one).
    pub fn function(&self) -> &Function {
        &self.function
    }

    /// The weight-only values of `function()` with `weights` (`Frozen::new`'s values, bit for bit),
    /// each op run by its native kernel where it has one, on up to `threads` threads (one weight's
    /// ops on one thread).
    pub fn freeze(
        &self,
        weights: &(dyn WeightStore + Sync),
        threads: usize,
    ) -> Result<Frozen, BackendError> {
        let f = &self.function;
        let mut by_op: Vec<Option<&Launch>> = vec![None; f.ops.len()];
        for l in &self.launches {
            if let Some(slot) = by_op.get_mut(l.op.index()) {
                *slot = Some(l);
            }
        }
        let no_symbols = HashMap::new();
        let eval = |f: &Function,
                    id: OpId,
                    env: &mut [Option<Tensor>],
                    w: &dyn WeightStore|
         -> Result<(), bitnet_ir::IrError> {
            let launch = by_op.get(id.index()).copied().flatten();
            let (
                Some(Launch {
                    kernel: Kernel::Native(k),
                    shapes,
                    ..
                }),
                [result],
            ) = (launch, f.op(id).results.as_slice())
            else {
                return bitnet_ir::interp::eval_op(f, id, env, &no_symbols, w);
            };
            let op = f.op(id);
            let fail = |message: String| bitnet_ir::IrError::Eval {
                op: op.kind.name(),
                at: bitnet_ir::interp::op_location(f, op),
                message,
            };
            let out = {
                let operands: Vec<&Tensor> = op
                    .operands
                    .iter()
                    .map(|v| {
                        env.get(v.index())
                            .and_then(Option::as_ref)
                            .ok_or_else(|| fail("an operand has no value".into()))
                    })
                    .collect::<Result<_, _>>()?;
                let extra = launch
                    .and_then(|l| l.extra)
                    .and_then(|v| env.get(v.index()).and_then(Option::as_ref));
                k.run(&operands, extra, shapes).map_err(fail)?
            };
            if let (Some(slot), Some(out)) = (env.get_mut(result.index()), out.into_iter().next()) {
                *slot = Some(out);
            }
            Ok(())
        };
        let frozen = if threads > 1 {
            Frozen::new_parallel(f, weights, threads, &eval)
        } else {
            Frozen::new_with(f, weights, &mut |f, id, env, w| eval(f, id, env, w))
        };
        frozen.map_err(|e| input_err(f, format!("the weight-only values: {e}")))
    }

    /// Which ops run natively and which through their `eval`.
    pub fn coverage(&self) -> Coverage {
        let mut c = Coverage::default();
        let mut by_name: std::collections::BTreeMap<String, usize> = Default::default();
        for l in self.launches.iter().filter(|l| !l.recompute) {
            match l.kernel {
                Kernel::Native(_) => c.native += 1,
                Kernel::Interpreted => {
                    let op = self.function.op(l.op);
                    let name = match (op.kind, op.attrs.str("of")) {
                        (OpKind::Vjp, Some(of)) => format!("nn.vjp({of})"),
                        (k, _) => k.name().to_string(),
                    };
                    *by_name.entry(name).or_default() += 1;
                }
            }
        }
        c.interpreted = by_name.into_iter().collect();
        c
    }

    /// Runs the step on `inputs` (the function's arguments, at the shapes it was lowered for),
    /// reading weights from `weights`; with `frozen` (`Frozen::new` of `function()` with the same
    /// weights), the weight-only ops are not run again and their values are read in place. The
    /// results are bit for bit `interp::run_function`'s.
    pub fn run(
        &self,
        inputs: &[Tensor],
        frozen: Option<&Frozen>,
        weights: &dyn WeightStore,
    ) -> Result<Vec<Tensor>, BackendError> {
        self.run_measured(inputs, frozen, weights).map(|(r, _)| r)
    }

    /// `run`, and the most bytes of values the run held at once: its arguments, the values it
    /// computed (forward values and cotangents) until their last use, and the rules' results shared
    /// between sibling `nn.vjp` ops; not the function's results (a step's gradients, which the
    /// caller keeps) nor the `frozen` values, which every run shares.
    pub fn run_measured(
        &self,
        inputs: &[Tensor],
        frozen: Option<&Frozen>,
        weights: &dyn WeightStore,
    ) -> Result<(Vec<Tensor>, u64), BackendError> {
        let f = &self.function;
        let given = bind_symbols(f, inputs).map_err(|e| input_err(f, e.to_string()))?;
        if given != self.bindings {
            return Err(input_err(
                f,
                format!(
                    "the inputs bind {given:?}, but the step was lowered for {:?}",
                    self.bindings
                ),
            ));
        }
        let mut env: Vec<Option<Tensor>> = vec![None; f.values.len()];
        for (&arg, t) in f.args.iter().zip(inputs) {
            env[arg.index()] = Some(t.clone());
        }
        // Each group's cotangents, from its first member to its last.
        let mut shared: Vec<Vec<Option<Tensor>>> = vec![Vec::new(); self.groups];
        let bytes = |t: &Tensor| t.data.le_byte_len() as u64;
        let mut live: u64 = env.iter().flatten().map(bytes).sum();
        let mut peak = live;
        for l in &self.launches {
            if frozen.is_some_and(|fz| fz.skips(l.op)) {
                continue;
            }
            let op = f.op(l.op);
            let fail = |message: String| {
                input_err(
                    f,
                    format!(
                        "{} at {}: {message}",
                        op.kind.name(),
                        bitnet_ir::interp::op_location(f, op)
                    ),
                )
            };
            let outs = {
                let operands: Vec<&Tensor> = op
                    .operands
                    .iter()
                    .map(|v| {
                        env[v.index()]
                            .as_ref()
                            .or_else(|| frozen.and_then(|fz| fz.value(*v)))
                            .ok_or_else(|| fail("an operand has no value".into()))
                    })
                    .collect::<Result<_, _>>()?;
                let cx = EvalCtx {
                    inputs: &operands,
                    attrs: &op.attrs,
                    result_shapes: &l.shapes,
                    result_elems: &l.elems,
                    weights,
                };
                match (&l.kernel, l.share) {
                    (kernel, Some(share)) => {
                        let slot = shared
                            .get_mut(share.group)
                            .ok_or_else(|| fail("internal: no such group".into()))?;
                        if slot.is_empty() {
                            let all = match kernel {
                                Kernel::Native(k) => k.run_all(&operands).unwrap_or_else(|| {
                                    Err("internal: a shared kernel without all cotangents".into())
                                }),
                                Kernel::Interpreted => bitnet_ir::ops::vjp::eval_all(&cx),
                            };
                            *slot = all.map_err(&fail)?.into_iter().map(Some).collect();
                            live += slot.iter().flatten().map(bytes).sum::<u64>();
                        }
                        // Taken once; a second op with the same `wrt` runs the rule again.
                        let mine = slot.get_mut(share.wrt).and_then(Option::take);
                        if let Some(t) = &mine {
                            live = live.saturating_sub(bytes(t));
                        }
                        if share.last {
                            live =
                                live.saturating_sub(slot.iter().flatten().map(bytes).sum::<u64>());
                            slot.clear();
                        }
                        match mine {
                            Some(t) => vec![t],
                            None => op.kind.eval(&cx).map_err(&fail)?,
                        }
                    }
                    (Kernel::Native(k), None) => {
                        let extra = l.extra.and_then(|v| {
                            env[v.index()]
                                .as_ref()
                                .or_else(|| frozen.and_then(|fz| fz.value(v)))
                        });
                        k.run(&operands, extra, &l.shapes).map_err(&fail)?
                    }
                    (Kernel::Interpreted, None) => op.kind.eval(&cx).map_err(&fail)?,
                }
            };
            if outs.len() != op.results.len() {
                return Err(fail(format!(
                    "produced {} results, expected {}",
                    outs.len(),
                    op.results.len()
                )));
            }
            for ((r, t), (shape, elem)) in op
                .results
                .iter()
                .zip(outs)
                .zip(l.shapes.iter().zip(&l.elems))
            {
                if &t.shape != shape || t.elem() != *elem {
                    return Err(fail(format!(
                        "produced {} where {} was declared",
                        t.ty(),
                        f.ty(*r)
                    )));
                }
                // The function's results (a step's gradients) are the caller's, not counted.
                let counted = !f.returns.contains(r);
                if counted {
                    live += bytes(&t);
                }
                if let Some(old) = env[r.index()].replace(t)
                    && counted
                {
                    live = live.saturating_sub(bytes(&old));
                }
            }
            peak = peak.max(live);
            for v in &l.drop_after {
                if let Some(old) = env[v.index()].take() {
                    live = live.saturating_sub(bytes(&old));
                }
            }
        }
        // Each result moves out of the run, unless a later result is the same value.
        let results = f
            .returns
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let slot = &mut env[v.index()];
                let again = f.returns.get(i + 1..).is_some_and(|rest| rest.contains(v));
                if again { slot.clone() } else { slot.take() }
                    .or_else(|| frozen.and_then(|fz| fz.value(*v)).cloned())
                    .or_else(|| match f.value(*v).def {
                        ValueDef::Arg(i) => inputs.get(i as usize).cloned(),
                        ValueDef::OpResult { .. } | ValueDef::Undefined => None,
                    })
                    .ok_or_else(|| input_err(f, "a returned value has no value".into()))
            })
            .collect::<Result<_, _>>()?;
        Ok((results, peak))
    }
}

/// For `nn.vjp` of a matmul's left operand whose right operand is the 2-D `nn.transpose` of `w`:
/// `w` (see `Launch::extra`).
fn transposed_source(f: &Function, id: OpId) -> Option<ValueId> {
    let op = f.op(id);
    if op.kind != OpKind::Vjp
        || op.attrs.str("of") != Some(OpKind::MatMul.name())
        || op.attrs.int_or("wrt", -1) != 0
    {
        return None;
    }
    let b = *op.operands.get(1)?;
    let ValueDef::OpResult { op: def, .. } = f.value(b).def else {
        return None;
    };
    let t = f.op(def);
    let w = *t.operands.first()?;
    (t.kind == OpKind::Transpose
        && t.attrs.ints("perm") == Some(&[1, 0])
        && f.ty(w).rank() == 2
        && f.ty(w).elem == ElemType::F32)
        .then_some(w)
}

/// The operand of each op with a native kernel that is i64, not f32: attention's and rope's
/// position, cross-entropy's targets, embedding's ids.
fn integer_operand(kind: OpKind) -> Option<usize> {
    match kind {
        OpKind::Attention => Some(5),
        OpKind::Rope | OpKind::CrossEntropy | OpKind::Embedding => Some(1),
        _ => None,
    }
}

/// Whether `op` (or, for an `nn.vjp`, its forward op) has its one integer operand
/// (`integer_operand`) in i64 and every other operand and result in f32.
fn mixed_operands(f: &Function, op: &bitnet_ir::module::Operation) -> bool {
    let forward = match op.kind {
        OpKind::Vjp => op.attrs.str("of").and_then(OpKind::from_name),
        k => Some(k),
    };
    let Some(int) = forward.and_then(integer_operand) else {
        return false;
    };
    op.operands
        .iter()
        .chain(&op.results)
        .enumerate()
        .all(|(i, &v)| {
            f.ty(v).elem
                == if i == int {
                    ElemType::I64
                } else {
                    ElemType::F32
                }
        })
}

/// The native kernel for an op with all-f32 operands and results of these shapes, if there is one.
fn choose(
    kind: OpKind,
    attrs: &bitnet_ir::attr::Attrs,
    operands: &[Vec<usize>],
    results: &[Vec<usize>],
) -> Option<Native> {
    let out = results.first()?;
    match kind {
        OpKind::Abs
        | OpKind::Round
        | OpKind::Neg
        | OpKind::Relu2
        | OpKind::Clip
        | OpKind::StopGradient => elementwise::Unary::lower(kind, attrs).map(Native::Unary),
        OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div => {
            elementwise::Binary::lower(kind, &operands[0], &operands[1], out).map(Native::Binary)
        }
        OpKind::ReduceMax | OpKind::ReduceMean => {
            reduce::Reduce::lower(kind, attrs, operands.first()?).map(Native::Reduce)
        }
        OpKind::MatMul => matmul::Matmul::lower(&operands[0], &operands[1]).map(Native::Matmul),
        OpKind::Attention => attention::Attention::lower(attrs, operands).map(Native::Attention),
        OpKind::Rope => rope::Rope::lower(attrs, operands.first()?).map(Native::Rope),
        OpKind::CrossEntropy => {
            cross_entropy::CrossEntropy::lower(operands.first()?, operands.get(1)?)
                .map(Native::CrossEntropy)
        }
        OpKind::Embedding => {
            embedding::Embedding::lower(operands.first()?, operands.get(1)?).map(Native::Embedding)
        }
        OpKind::RmsNorm => match operands {
            [x, w] => norm::RmsNorm::lower(attrs, x, w).map(Native::RmsNorm),
            _ => None,
        },
        OpKind::Transpose => {
            transpose::Transpose::lower(attrs, operands.first()?).map(Native::Transpose)
        }
        OpKind::Vjp => {
            let of = OpKind::from_name(attrs.str("of")?)?;
            let wrt = usize::try_from(attrs.int_or("wrt", -1)).ok()?;
            // Attention with its output's cotangent: 6 operands, 3 results, 1 cotangent.
            if of == OpKind::Attention {
                return (attrs.ints("cotangents")? == [0] && wrt < 5 && operands.len() == 10)
                    .then(|| attention::Attention::lower(attrs, &operands[..6]))
                    .flatten()
                    .map(|k| Native::AttentionGrad(k, wrt));
            }
            // One-result ops with the cotangent of that result: operands, result, cotangent.
            if attrs.ints("cotangents")? != [0] || of.spec().results != 1 {
                return None;
            }
            match of {
                OpKind::Rope if wrt == 0 && operands.len() == 4 => {
                    rope::Rope::lower(attrs, &operands[0]).map(Native::RopeGrad)
                }
                OpKind::CrossEntropy if wrt == 0 && operands.len() == 4 => {
                    cross_entropy::CrossEntropy::lower(&operands[0], &operands[1])
                        .map(Native::CrossEntropyGrad)
                }
                OpKind::Embedding if wrt == 0 && operands.len() == 4 => {
                    embedding::Embedding::lower(&operands[0], &operands[1])
                        .map(Native::EmbeddingGrad)
                }
                OpKind::Relu2 if wrt == 0 && operands.len() == 3 => {
                    Some(Native::Relu2Grad(elementwise::Relu2Grad))
                }
                OpKind::RmsNorm if wrt < 2 && operands.len() == 4 => {
                    norm::RmsNorm::lower(attrs, &operands[0], &operands[1])
                        .map(|k| Native::RmsNormGrad(k, wrt))
                }
                OpKind::Add | OpKind::Sub | OpKind::Mul => elementwise::BinaryGrad::lower(
                    of,
                    wrt,
                    &operands[0],
                    &operands[1],
                    operands.get(2)?,
                )
                .map(Native::BinaryGrad),
                OpKind::MatMul => matmul::MatmulGrad::lower(wrt, &operands[0], &operands[1])
                    .map(Native::MatmulGrad),
                // The cotangent of a 2-D transpose is its transpose back.
                OpKind::Transpose => {
                    let g = operands.get(2)?;
                    (g.len() == 2 && attrs.ints("perm")? == [1, 0])
                        .then(|| transpose::Transpose::lower_2d(g[0], g[1]))
                        .map(Native::TransposeGrad)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_ir::weights::MemoryWeights;

    /// A small step: a quantizer chain, a matmul with a weight, a broadcast subtraction, the
    /// reductions, the cotangents of matmul, mul and transpose, and two interpreted siblings (the
    /// cotangents of one division) that share their rule.
    const STEP: &str = r#"
func @step[T<=8](%x: tensor<Tx4xf32>, %g: tensor<Tx3xf32>) -> (tensor<Tx3xf32>, tensor<3x4xf32>, tensor<Tx4xf32>, tensor<f32>, tensor<Tx1xf32>, tensor<f32>) {
  %w = nn.weight {name = "w"} : tensor<3x4xf32>
  %wt = nn.transpose %w {perm = [1, 0]} : tensor<4x3xf32>
  %a = nn.abs %x : tensor<Tx4xf32>
  %m = nn.reduce_max %a {axes = [-1], keepdims = true} : tensor<Tx1xf32>
  %c = nn.clip %m {min = 1e-5} : tensor<Tx1xf32>
  %k = nn.constant {value = [127.0]} : tensor<f32>
  %s = nn.div %k, %c : tensor<Tx1xf32>
  %q = nn.mul %x, %s : tensor<Tx4xf32>
  %r = nn.round %q : tensor<Tx4xf32>
  %y = nn.matmul %r, %wt : tensor<Tx3xf32>
  %d = nn.sub %y, %g : tensor<Tx3xf32>
  %e = nn.relu2 %d : tensor<Tx3xf32>
  %gwt = nn.vjp %r, %wt, %y, %e {cotangents = [0], of = "nn.matmul", wrt = 1} : tensor<4x3xf32>
  %gw = nn.vjp %w, %wt, %gwt {cotangents = [0], of = "nn.transpose", perm = [1, 0], wrt = 0} : tensor<3x4xf32>
  %gr = nn.vjp %r, %wt, %y, %e {cotangents = [0], of = "nn.matmul", wrt = 0} : tensor<Tx4xf32>
  %gs = nn.vjp %x, %s, %q, %gr {cotangents = [0], of = "nn.mul", wrt = 1} : tensor<Tx1xf32>
  %gx = nn.vjp %x, %s, %q, %gr {cotangents = [0], of = "nn.mul", wrt = 0} : tensor<Tx4xf32>
  %mean = nn.reduce_mean %gs {keepdims = false} : tensor<f32>
  %gc = nn.vjp %k, %c, %s, %gs {cotangents = [0], of = "nn.div", wrt = 1} : tensor<Tx1xf32>
  %gk = nn.vjp %k, %c, %s, %gs {cotangents = [0], of = "nn.div", wrt = 0} : tensor<f32>
  return %e, %gw, %gx, %mean, %gc, %gk
}
"#;

    fn function() -> Function {
        bitnet_ir::text::parser::parse(STEP, "step.bir")
            .unwrap()
            .functions
            .remove(0)
    }

    fn weights() -> MemoryWeights {
        let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 3.0).collect();
        let mut m = MemoryWeights::default();
        m.tensors
            .insert("w".into(), Tensor::from_f32(vec![3, 4], w).unwrap());
        m
    }

    fn inputs(t: usize) -> Vec<Tensor> {
        let x = (0..t * 4)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 2.5)
            .collect();
        let g = (0..t * 3).map(|i| (i as f32 - 4.0) * 9.0).collect();
        vec![
            Tensor::from_f32(vec![t, 4], x).unwrap(),
            Tensor::from_f32(vec![t, 3], g).unwrap(),
        ]
    }

    #[test]
    fn a_plan_gives_the_interpreters_values_bit_for_bit() {
        let f = function();
        let w = weights();
        let plan = StepPlan::new(&f, &[("T", 5)]).unwrap();
        let coverage = plan.coverage();
        assert_eq!(
            coverage.interpreted,
            vec![
                ("nn.constant".to_string(), 1),
                ("nn.vjp(nn.div)".to_string(), 2),
                ("nn.weight".to_string(), 1)
            ]
        );
        assert_eq!(coverage.native, f.ops.len() - 4);
        assert_eq!(plan.groups, 1, "the division's cotangents share a rule");
        let want = bitnet_ir::interp::run_function(&f, &inputs(5), &w).unwrap();
        let frozen = plan.freeze(&w, 1).unwrap();
        let parallel = plan.freeze(&w, 2).unwrap();
        for fz in [None, Some(&frozen), Some(&parallel)] {
            let got = plan.run(&inputs(5), fz, &w).unwrap();
            let bytes = |v: &[Tensor]| {
                v.iter()
                    .map(|t| (t.shape.clone(), t.data.to_le_bytes()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bytes(&got), bytes(&want), "frozen: {}", fz.is_some());
        }
    }

    #[test]
    fn a_checkpointed_plan_gives_the_same_values() {
        let f = function();
        let w = weights();
        let at = |name: &str| {
            (0..f.values.len())
                .map(|i| ValueId(i as u32))
                .find(|&v| f.value(v).name.as_deref() == Some(name))
                .unwrap()
        };
        let want = bitnet_ir::interp::run_function(&f, &inputs(5), &w).unwrap();
        let plan = StepPlan::checkpointed(&f, &[("T", 5)], &[at("s"), at("y")]).unwrap();
        let recomputed = plan.launches.iter().filter(|l| l.recompute).count();
        assert!(recomputed > 0, "nothing is recomputed");
        assert_eq!(
            plan.coverage(),
            StepPlan::new(&f, &[("T", 5)]).unwrap().coverage()
        );
        let frozen = plan.freeze(&w, 1).unwrap();
        for fz in [None, Some(&frozen)] {
            let got = plan.run(&inputs(5), fz, &w).unwrap();
            let bytes = |v: &[Tensor]| {
                v.iter()
                    .map(|t| (t.shape.clone(), t.data.to_le_bytes()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(bytes(&got), bytes(&want), "frozen: {}", fz.is_some());
        }
    }

    #[test]
    fn a_plan_refuses_other_shapes_and_missing_symbols() {
        let f = function();
        let plan = StepPlan::new(&f, &[("T", 5)]).unwrap();
        let err = plan
            .run(&inputs(6), None, &weights())
            .unwrap_err()
            .to_string();
        assert!(err.contains("lowered for"), "{err}");
        let err = StepPlan::new(&f, &[]).unwrap_err().to_string();
        assert!(err.contains("no value given for symbol T"), "{err}");
        let err = StepPlan::new(&f, &[("T", 9)]).unwrap_err().to_string();
        assert!(err.contains("T = 9 exceeds its bound 8"), "{err}");
    }
}
