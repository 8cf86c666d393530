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

use crate::error::IrError;
use crate::interp::{evaluate, op_location, returned};
use crate::module::Function;
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
}

fn fail(op: &'static str, at: String, message: String) -> IrError {
    IrError::Eval { op, at, message }
}

/// The gradient of result `loss` of `f` (a float tensor of one element) at `inputs`.
pub fn backward(
    f: &Function,
    inputs: &[Tensor],
    weights: &dyn WeightStore,
    loss: usize,
) -> Result<Gradients, IrError> {
    let env = evaluate(f, inputs, weights)?;
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
    let order: Vec<_> = f.op_order().collect();
    for &id in order.iter().rev() {
        let op = f.op(id);
        if op.results.iter().all(|r| cot[r.index()].is_none()) {
            continue;
        }
        let name = op.kind.name();
        let at = || op_location(f, op);
        if op.kind == crate::ops::OpKind::Weight {
            let Some(g) = op.results.first().and_then(|r| cot[r.index()].take()) else {
                continue;
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
            continue;
        }
        let value = |v: crate::module::ValueId| {
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
    }
    let args = f.args.iter().map(|a| cot[a.index()].take()).collect();
    Ok(Gradients {
        outputs,
        loss: loss_f64,
        args,
        weights: grads,
    })
}
