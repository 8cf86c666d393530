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
        let diags = verify_function(f);
        if !diags.is_empty() {
            return Err(IrError::Invalid(diags));
        }
        let order: Vec<OpId> = f.op_order().collect();
        // A value is argument-free when no argument reaches it and its shape is static (a symbol's
        // size comes from the arguments).
        let mut from_args = vec![false; f.values.len()];
        for a in &f.args {
            from_args[a.index()] = true;
        }
        let mut free = vec![false; f.ops.len()];
        for &id in &order {
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
        let mut env: Vec<Option<Tensor>> = vec![None; f.values.len()];
        let mut last_use = vec![0usize; f.values.len()];
        for (i, &id) in order.iter().enumerate() {
            if free[id.index()] {
                for v in &f.op(id).operands {
                    last_use[v.index()] = i;
                }
            }
        }
        for (i, &id) in order.iter().enumerate() {
            if !free[id.index()] {
                continue;
            }
            eval(f, id, &mut env, weights)?;
            // Drop what no later argument-free op reads and no run keeps.
            let op = f.op(id);
            for v in op.operands.iter().chain(&op.results) {
                if !keep[v.index()] && last_use[v.index()] <= i {
                    env[v.index()] = None;
                }
            }
        }
        for (v, slot) in env.iter_mut().enumerate() {
            if !keep[v] {
                *slot = None;
            }
        }
        Ok(Frozen { values: env, free })
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
