//! Reverse-mode automatic differentiation over the IR: the gradient of a function's scalar result
//! (a loss) with respect to its arguments and to every weight it reads.
//!
//! `backward` runs the function forward with the reference interpreter, keeping every value, then
//! sweeps its ops in reverse order, calling each op's gradient rule (`OpKind::vjp`, in the op's own
//! file; the match is exhaustive, so an op without a rule does not compile, and ops that cannot be
//! differentiated say why) and adding each operand's cotangent into that value's. A cotangent reaching
//! `nn.weight` is the gradient of the named weight; weights read twice get the sum.
//!
//! Cotangents are f64 whatever the values' element types. The sweep is interpreted: it is the
//! reference training step (and the oracle for a compiled one), not a fast path. Values no
//! gradient reaches are skipped, so forward-only parts (the KV caches' outputs, integer index
//! arithmetic) cost nothing.
//!
//! `emit` does the same sweep on the graph: it writes the backward ops (`nn.vjp`) into the IR, the
//! training-step function a backend compiles.

mod emit;

pub use emit::{Backward, emit_backward, emit_backward_in, is_loss_type};

use crate::error::IrError;
use crate::frozen::Frozen;
use crate::interp::{eval_op, op_location, prepare, returned};
use crate::module::{Function, OpId, ValueId};
use crate::ops::VjpCtx;
use crate::tensor::Tensor;
use crate::weights::WeightStore;
use std::collections::BTreeMap;

/// What `backward` computes.
#[derive(Clone, Debug)]
pub struct Gradients {
    /// The function's results, as the interpreter computes them.
    pub outputs: Vec<Tensor>,
    /// The loss (result `loss` of the function) as f64.
    pub loss: f64,
    /// The gradient of each argument (f64, row-major), `None` where no gradient reaches it.
    pub args: Vec<Option<Vec<f64>>>,
    /// The gradient of each weight the function reads and the loss depends on, by name.
    pub weights: BTreeMap<String, Vec<f64>>,
    /// The most bytes of forward values held at once (the arguments included, cotangents not).
    pub peak_value_bytes: u64,
    /// Ops evaluated in all, recomputations included.
    pub ops_evaluated: usize,
}

fn fail(op: &'static str, at: String, message: String) -> IrError {
    IrError::Eval { op, at, message }
}

/// The bytes a value holds (one or more whole bytes per element, as stored).
fn bytes_of(t: &Tensor) -> u64 {
    t.data.le_byte_len() as u64
}

/// The gradient of result `loss` of `f` (a float tensor of one element) at `inputs`, every forward
/// value kept for the reverse sweep.
pub fn backward(
    f: &Function,
    inputs: &[Tensor],
    weights: &dyn WeightStore,
    loss: usize,
) -> Result<Gradients, IrError> {
    backward_checkpointed(f, inputs, weights, loss, &[], None)
}

/// `backward` with gradient checkpointing: the ops are cut into segments after each op that defines
/// one of `boundaries` (a decoder's residual stream after each block); the forward pass keeps only
/// the values a later segment reads (and the arguments and results), and the reverse sweep
/// recomputes each segment's own values from them before sweeping it. The interpreter is
/// deterministic, so the gradients are bit for bit those of `backward`; `peak_value_bytes` says
/// what it saved.
///
/// With `frozen` (made by `Frozen::new` for `f` and these `weights`), the argument-free values are
/// taken from it instead of being computed again: the same gradients bit for bit, the values it
/// holds counted as held from the start.
pub fn backward_checkpointed(
    f: &Function,
    inputs: &[Tensor],
    weights: &dyn WeightStore,
    loss: usize,
    boundaries: &[ValueId],
    frozen: Option<&Frozen>,
) -> Result<Gradients, IrError> {
    let (bindings, mut env) = match frozen {
        Some(fz) => fz.prepare(f, inputs)?,
        None => prepare(f, inputs)?,
    };
    let skipped = |id: OpId| frozen.is_some_and(|fz| fz.skips(id));
    let order: Vec<OpId> = f.op_order().collect();
    let mut segments: Vec<Vec<OpId>> = Vec::new();
    let mut current = Vec::new();
    for &id in &order {
        current.push(id);
        if f.op(id).results.iter().any(|r| boundaries.contains(r)) {
            segments.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        segments.push(current);
    }
    let segmented = segments.len() > 1;
    // Which segment defines each value (arguments: none), and which values must outlive theirs.
    let mut def_seg: Vec<Option<usize>> = vec![None; f.values.len()];
    for (si, seg) in segments.iter().enumerate() {
        for &id in seg {
            if skipped(id) {
                continue; // a frozen value: held throughout, as an argument is
            }
            for r in &f.op(id).results {
                def_seg[r.index()] = Some(si);
            }
        }
    }
    let mut keep: Vec<bool> = def_seg.iter().map(Option::is_none).collect();
    for r in &f.returns {
        keep[r.index()] = true;
    }
    for (si, seg) in segments.iter().enumerate() {
        for &id in seg {
            for v in &f.op(id).operands {
                if def_seg[v.index()] != Some(si) {
                    keep[v.index()] = true;
                }
            }
        }
    }
    let mut live: u64 = env.iter().flatten().map(bytes_of).sum();
    let mut peak = live;
    let mut evaluated = 0usize;
    let mut run_segment = |env: &mut Vec<Option<Tensor>>, seg: &[OpId], live: &mut u64| {
        for &id in seg {
            if skipped(id) {
                continue;
            }
            for r in &f.op(id).results {
                if let Some(old) = env[r.index()].take() {
                    *live -= bytes_of(&old);
                }
            }
            eval_op(f, id, env, &bindings, weights)?;
            evaluated += 1;
            for r in &f.op(id).results {
                *live += env[r.index()].as_ref().map_or(0, bytes_of);
            }
            peak = peak.max(*live);
        }
        Ok::<(), IrError>(())
    };
    let drop_internal = |env: &mut Vec<Option<Tensor>>, seg: &[OpId], live: &mut u64| {
        for &id in seg {
            for r in &f.op(id).results {
                if !keep[r.index()]
                    && let Some(old) = env[r.index()].take()
                {
                    *live -= bytes_of(&old);
                }
            }
        }
    };
    for seg in &segments {
        run_segment(&mut env, seg, &mut live)?;
        if segmented {
            drop_internal(&mut env, seg, &mut live);
        }
    }
    let outputs = returned(f, inputs, &env)?;
    let bad_loss = |m: String| fail("return", "return".into(), m);
    let loss_value = *f
        .returns
        .get(loss)
        .ok_or_else(|| bad_loss(format!("the function has no result {loss}")))?;
    let loss_tensor = outputs
        .get(loss)
        .ok_or_else(|| bad_loss(format!("the function has no result {loss}")))?;
    if !loss_tensor.elem().is_float() || loss_tensor.numel() != 1 {
        return Err(bad_loss(format!(
            "the loss (result {loss}) must be one float element, found {}",
            loss_tensor.ty()
        )));
    }
    let loss_f64 = loss_tensor
        .data
        .to_f64()
        .first()
        .copied()
        .unwrap_or(f64::NAN);
    let mut cot: Vec<Option<Vec<f64>>> = vec![None; f.values.len()];
    cot[loss_value.index()] = Some(vec![1.0]);
    let mut grads: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for seg in segments.iter().rev() {
        if segmented {
            run_segment(&mut env, seg, &mut live)?;
        }
        for &id in seg.iter().rev() {
            sweep_op(f, id, &env, &mut cot, &mut grads)?;
        }
        if segmented {
            drop_internal(&mut env, seg, &mut live);
        }
    }
    let args = f.args.iter().map(|a| cot[a.index()].take()).collect();
    Ok(Gradients {
        outputs,
        loss: loss_f64,
        args,
        weights: grads,
        peak_value_bytes: peak,
        ops_evaluated: evaluated,
    })
}

/// The reverse step of op `id`: its rule applied to the cotangents of its results, added into its
/// operands' (or, for `nn.weight`, into the named weight's gradient).
fn sweep_op(
    f: &Function,
    id: OpId,
    env: &[Option<Tensor>],
    cot: &mut [Option<Vec<f64>>],
    grads: &mut BTreeMap<String, Vec<f64>>,
) -> Result<(), IrError> {
    let op = f.op(id);
    if op.results.iter().all(|r| cot[r.index()].is_none()) {
        return Ok(());
    }
    let name = op.kind.name();
    let at = || op_location(f, op);
    if op.kind == crate::ops::OpKind::Weight {
        let Some(g) = op.results.first().and_then(|r| cot[r.index()].take()) else {
            return Ok(());
        };
        let wname = op
            .attrs
            .str("name")
            .ok_or_else(|| fail(name, at(), "nn.weight without a name".into()))?;
        match grads.get_mut(wname) {
            Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
            None => {
                grads.insert(wname.to_string(), g);
            }
        }
        return Ok(());
    }
    let value = |v: ValueId| {
        env.get(v.index())
            .and_then(Option::as_ref)
            .ok_or_else(|| fail(name, at(), "a value has no value".into()))
    };
    let operands: Vec<&Tensor> = op
        .operands
        .iter()
        .map(|&v| value(v))
        .collect::<Result<_, _>>()?;
    let results: Vec<&Tensor> = op
        .results
        .iter()
        .map(|&v| value(v))
        .collect::<Result<_, _>>()?;
    let cotangents: Vec<Option<&[f64]>> = op
        .results
        .iter()
        .map(|r| cot[r.index()].as_deref())
        .collect();
    let cx = VjpCtx {
        inputs: &operands,
        outputs: &results,
        cotangents: &cotangents,
        attrs: &op.attrs,
    };
    let input_grads = op.kind.vjp(&cx).map_err(|m| fail(name, at(), m))?;
    if input_grads.len() != op.operands.len() {
        return Err(fail(
            name,
            at(),
            format!(
                "internal: the gradient rule gave {} cotangents for {} operands",
                input_grads.len(),
                op.operands.len()
            ),
        ));
    }
    for ((&v, t), g) in op.operands.iter().zip(&operands).zip(input_grads) {
        let Some(g) = g else { continue };
        if g.len() != t.numel() {
            return Err(fail(
                name,
                at(),
                format!(
                    "internal: a cotangent has {} elements for an operand of {}",
                    g.len(),
                    t.numel()
                ),
            ));
        }
        match &mut cot[v.index()] {
            Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
            slot @ None => *slot = Some(g),
        }
    }
    // The results' cotangents are spent.
    for r in &op.results {
        cot[r.index()] = None;
    }
    Ok(())
}
