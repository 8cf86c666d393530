//! Values a function computes from no argument (weights, literals and what is computed from them
//! alone, at static shapes), evaluated once and shared by every run of the function with the same
//! weights: a training step's quantized weights, the same for every window of its batch.
//!
//! `Frozen::new` evaluates those ops and keeps the values a run can read: every one an op that reads
//! an argument (directly or not) uses or the function returns, and, for the reverse sweep, the operands
//! and results of each argument-free op a gradient can reach (the sweep reads them; the ops behind an
//! `nn.stop_gradient`, such as the absmean quantizer of a straight-through estimator, get none, so
//! their values are dropped). A run with it (`Frozen::prepare`) starts from those values and skips
//! every argument-free op (`Frozen::skips`). The ops are the same and the interpreter is
//! deterministic, so every value is bit for bit what a run without it computes.

use crate::error::IrError;
use crate::interp::{Prepared, eval_op, prepare};
use crate::module::{Function, OpId};
use crate::ops::OpKind;
use crate::tensor::Tensor;
use crate::types::Dim;
use crate::verify::verify_function;
use crate::weights::WeightStore;
use std::collections::HashMap;

/// How `Frozen::new_with` evaluates op `id` of a function: its results stored in the value table.
pub type OpEvaluator<'a> =
    dyn FnMut(&Function, OpId, &mut [Option<Tensor>], &dyn WeightStore) -> Result<(), IrError> + 'a;

/// An `OpEvaluator` with its weight store bound.
type BoundEvaluator<'a> =
    dyn FnMut(&Function, OpId, &mut [Option<Tensor>]) -> Result<(), IrError> + 'a;

/// `Frozen::new_parallel`'s evaluator: `OpEvaluator`, callable from several threads.
pub type ParallelOpEvaluator<'a> = dyn Fn(&Function, OpId, &mut [Option<Tensor>], &dyn WeightStore) -> Result<(), IrError>
    + Sync
    + 'a;

/// The argument-free values of one function with one set of weights (see the module doc).
#[derive(Clone, Debug)]
pub struct Frozen {
    /// By value index: the kept values.
    values: Vec<Option<Tensor>>,
    /// By op index: whether the op reads no argument (a run skips it).
    free: Vec<bool>,
}

impl Frozen {
    /// Evaluates the argument-free ops of `f` with `weights` and keeps what a run reads.
    pub fn new(f: &Function, weights: &dyn WeightStore) -> Result<Frozen, IrError> {
        // Argument-free ops have static shapes: no symbol to bind.
        let bindings = HashMap::new();
        Frozen::new_with(f, weights, &mut |f, id, env, weights| {
            eval_op(f, id, env, &bindings, weights)
        })
    }

    /// `new`, each op evaluated by `eval` (which stores the op's results in the value table, as
    /// `interp::eval_op` does): a backend's kernels, when they give the interpreter's values.
    pub fn new_with(
        f: &Function,
        weights: &dyn WeightStore,
        eval: &mut OpEvaluator<'_>,
    ) -> Result<Frozen, IrError> {
        let plan = Analysis::of(f)?;
        let ops: Vec<usize> = (0..plan.order.len())
            .filter(|&i| plan.free[plan.order[i].index()])
            .collect();
        let mut env: Vec<Option<Tensor>> = vec![None; f.values.len()];
        plan.evaluate(f, &ops, &mut env, &mut |f, id, env| {
            eval(f, id, env, weights)
        })?;
        Ok(plan.finish(env))
    }

    /// `new_with` on up to `threads` threads: the argument-free ops fall into groups that read
    /// nothing of each other's (one per weight, in a training function), and each thread evaluates
    /// whole groups in order. The values are the same; only where they are computed differs.
    pub fn new_parallel(
        f: &Function,
        weights: &(dyn WeightStore + Sync),
        threads: usize,
        eval: &ParallelOpEvaluator<'_>,
    ) -> Result<Frozen, IrError> {
        let plan = Analysis::of(f)?;
        let shares = plan.shares(f, threads.max(1));
        let mut env: Vec<Option<Tensor>> = vec![None; f.values.len()];
        let parts = std::thread::scope(|scope| {
            let handles: Vec<_> = shares
                .iter()
                .map(|ops| {
                    let plan = &plan;
                    scope.spawn(move || {
                        let mut env: Vec<Option<Tensor>> = vec![None; f.values.len()];
                        plan.evaluate(f, ops, &mut env, &mut |f, id, env| {
                            eval(f, id, env, weights)
                        })?;
                        Ok::<_, IrError>(
                            env.into_iter()
                                .enumerate()
                                .filter_map(|(v, t)| t.map(|t| (v, t)))
                                .collect::<Vec<_>>(),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().map_err(|_| IrError::Eval {
                        op: "frozen",
                        at: format!("@{}", f.name),
                        message: "a thread evaluating the weight-only values panicked".into(),
                    })?
                })
                .collect::<Result<Vec<_>, IrError>>()
        })?;
        for (v, t) in parts.into_iter().flatten() {
            if let Some(slot) = env.get_mut(v) {
                *slot = Some(t);
            }
        }
        Ok(plan.finish(env))
    }

    /// Whether a run with these values skips op `id` (it reads no argument).
    pub fn skips(&self, id: OpId) -> bool {
        self.free.get(id.index()).copied().unwrap_or(false)
    }

    /// The kept value `v`, if it is one (a run reads it instead of computing it).
    pub fn value(&self, v: crate::module::ValueId) -> Option<&Tensor> {
        self.values.get(v.index()).and_then(Option::as_ref)
    }

    /// Bytes of the values kept.
    pub fn bytes(&self) -> u64 {
        self.values
            .iter()
            .flatten()
            .map(|t| t.data.le_byte_len() as u64)
            .sum()
    }

    /// `interp::prepare` with the kept values in place too.
    pub fn prepare(&self, f: &Function, inputs: &[Tensor]) -> Result<Prepared, IrError> {
        let (bindings, mut env) = prepare(f, inputs)?;
        if self.values.len() != env.len() || self.free.len() != f.ops.len() {
            return Err(IrError::Eval {
                op: "frozen",
                at: format!("@{}", f.name),
                message: "internal: these frozen values belong to another function".into(),
            });
        }
        for (slot, v) in env.iter_mut().zip(&self.values) {
            if v.is_some() {
                slot.clone_from(v);
            }
        }
        Ok((bindings, env))
    }

    /// `interp::run_function` starting from these values.
    pub fn run(
        &self,
        f: &Function,
        inputs: &[Tensor],
        weights: &dyn WeightStore,
    ) -> Result<Vec<Tensor>, IrError> {
        let (bindings, mut env) = self.prepare(f, inputs)?;
        for id in f.op_order() {
            if !self.skips(id) {
                eval_op(f, id, &mut env, &bindings, weights)?;
            }
        }
        crate::interp::returned(f, inputs, &env)
    }
}

/// By op index, whether each op of `f` is argument-free: no argument reaches it and its results'
/// shapes are static (a symbol's size comes from the arguments). `Frozen` evaluates these once;
/// a checkpointed step never recomputes them.
pub fn argument_free_ops(f: &Function) -> Vec<bool> {
    let mut from_args = vec![false; f.values.len()];
    for a in &f.args {
        from_args[a.index()] = true;
    }
    let mut free = vec![false; f.ops.len()];
    for id in f.op_order() {
        let op = f.op(id);
        let reads_args = op.operands.iter().any(|v| from_args[v.index()]);
        let symbolic = op
            .results
            .iter()
            .any(|r| f.ty(*r).dims.iter().any(|d| matches!(d, Dim::Sym(_))));
        if reads_args || symbolic {
            for r in &op.results {
                from_args[r.index()] = true;
            }
        } else {
            free[id.index()] = true;
        }
    }
    free
}

/// Which ops of a function are argument-free and which values a run reads (see the module doc).
struct Analysis {
    /// The ops in order.
    order: Vec<OpId>,
    /// By op index: whether the op reads no argument.
    free: Vec<bool>,
    /// By value index: whether a run reads the value.
    keep: Vec<bool>,
    /// By value index: the position in `order` of the last argument-free op that reads it.
    last_use: Vec<usize>,
}

impl Analysis {
    fn of(f: &Function) -> Result<Analysis, IrError> {
        let diags = verify_function(f);
        if !diags.is_empty() {
            return Err(IrError::Invalid(diags));
        }
        let order: Vec<OpId> = f.op_order().collect();
        let free = argument_free_ops(f);
        // What a run reads: values an argument-dependent op uses or the function returns, and the
        // operands and results of the argument-free ops a gradient reaches (walked back from those,
        // not through an nn.stop_gradient's operand).
        let mut keep = vec![false; f.values.len()];
        let mut reached = vec![false; f.values.len()];
        for r in &f.returns {
            keep[r.index()] = true;
            reached[r.index()] = true;
        }
        for &id in order.iter().rev() {
            let op = f.op(id);
            if !free[id.index()] {
                for v in &op.operands {
                    keep[v.index()] = true;
                    reached[v.index()] = true;
                }
                continue;
            }
            if op.results.iter().any(|r| reached[r.index()]) {
                for v in op.operands.iter().chain(&op.results) {
                    keep[v.index()] = true;
                }
                if op.kind != OpKind::StopGradient {
                    for v in &op.operands {
                        reached[v.index()] = true;
                    }
                }
            }
        }
        let mut last_use = vec![0usize; f.values.len()];
        for (i, &id) in order.iter().enumerate() {
            if free[id.index()] {
                for v in &f.op(id).operands {
                    last_use[v.index()] = i;
                }
            }
        }
        Ok(Analysis {
            order,
            free,
            keep,
            last_use,
        })
    }

    /// Evaluates the ops at positions `ops` (increasing) of `order` into `env`, dropping what no
    /// later argument-free op reads and no run keeps.
    fn evaluate(
        &self,
        f: &Function,
        ops: &[usize],
        env: &mut [Option<Tensor>],
        eval: &mut BoundEvaluator<'_>,
    ) -> Result<(), IrError> {
        for &i in ops {
            let id = self.order[i];
            eval(f, id, env)?;
            let op = f.op(id);
            for v in op.operands.iter().chain(&op.results) {
                if !self.keep[v.index()] && self.last_use[v.index()] <= i {
                    env[v.index()] = None;
                }
            }
        }
        Ok(())
    }

    /// The argument-free ops (positions in `order`) in at most `threads` shares: groups of ops
    /// connected by the values they pass each other, each whole in one share, the largest groups
    /// (by result elements) first into the share with the fewest.
    fn shares(&self, f: &Function, threads: usize) -> Vec<Vec<usize>> {
        let mut position = vec![usize::MAX; f.ops.len()];
        for (i, id) in self.order.iter().enumerate() {
            position[id.index()] = i;
        }
        // Union-find over positions.
        let mut parent: Vec<usize> = (0..self.order.len()).collect();
        fn root(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                parent[i] = parent[parent[i]];
                i = parent[i];
            }
            i
        }
        for (i, &id) in self.order.iter().enumerate() {
            if !self.free[id.index()] {
                continue;
            }
            for v in &f.op(id).operands {
                if let crate::module::ValueDef::OpResult { op, .. } = f.value(*v).def
                    && let Some(&j) = position.get(op.index())
                    && j != usize::MAX
                {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        let mut groups: HashMap<usize, (u64, Vec<usize>)> = HashMap::new();
        for (i, &id) in self.order.iter().enumerate() {
            if !self.free[id.index()] {
                continue;
            }
            let size: u64 = f
                .op(id)
                .results
                .iter()
                .map(|r| {
                    f.ty(*r)
                        .static_shape()
                        .map_or(1, |s| s.iter().fold(1u64, |n, &d| n.saturating_mul(d)))
                })
                .sum();
            let g = groups.entry(root(&mut parent, i)).or_default();
            g.0 += size;
            g.1.push(i);
        }
        let mut groups: Vec<(u64, Vec<usize>)> = groups.into_values().collect();
        groups.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut shares: Vec<(u64, Vec<usize>)> =
            vec![(0, Vec::new()); threads.min(groups.len()).max(1)];
        for (size, ops) in groups {
            if let Some(s) = shares.iter_mut().min_by_key(|s| s.0) {
                s.0 += size;
                s.1.extend(ops);
            }
        }
        shares
            .into_iter()
            .map(|(_, mut ops)| {
                ops.sort_unstable();
                ops
            })
            .collect()
    }

    /// The kept values of `env`.
    fn finish(self, mut env: Vec<Option<Tensor>>) -> Frozen {
        for (v, slot) in env.iter_mut().enumerate() {
            if !self.keep.get(v).copied().unwrap_or(false) {
                *slot = None;
            }
        }
        Frozen {
            values: env,
            free: self.free,
        }
    }
}
