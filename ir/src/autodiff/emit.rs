//! Reverse-mode differentiation as a transformation of the IR: `emit_backward` turns a function
//! with a scalar loss into the training-step function that returns the loss and its gradients,
//! computed by `nn.vjp` ops placed after the forward ops.
//!
//! The walk is the reverse sweep of `super::backward_checkpointed` done on the graph instead of on
//! values: for each op in reverse order whose results have a cotangent, one `nn.vjp` per float
//! operand that depends on a weight or on an argument asked for (each op's own rule, from its file),
//! and `nn.add` (f64) to sum the contributions a value gets, in the order the sweep sums them.
//! `nn.weight` ops end the walk: their cotangents, summed by name, are the weights' gradients.
//! Interpreted, the function gives the sweep's gradients bit for bit (`tests/filetests.rs` checks it
//! on every grad filetest). It is the form a backend compiles a training step from.
//!
//! ```text
//! func @main(%x: tensor<2x4xf32>) -> (tensor<f32>, tensor<2x4xf64>, tensor<4xf64>)   // loss, d/dx, d/d@w
//! ```

use crate::attr::{Attr, Attrs};
use crate::error::IrError;
use crate::module::{Function, ValueId};
use crate::ops::OpKind;
use crate::types::{Dim, ElemType, TensorType};
use crate::verify::verify_function;
use std::collections::BTreeMap;

/// What `emit_backward` made.
#[derive(Clone, Debug)]
pub struct Backward {
    /// The training-step function: the forward function's arguments and ops, then the `nn.vjp`
    /// ops; results: the loss, then the gradients (`args`, then `weights`).
    pub function: Function,
    /// For each argument of the forward function: the result index of its gradient; `None` where it
    /// was not asked for or no gradient reaches it.
    pub args: Vec<Option<usize>>,
    /// The weights the loss depends on, by name: the result index of each one's gradient.
    pub weights: BTreeMap<String, usize>,
}

fn fail(message: String) -> IrError {
    IrError::Eval {
        op: "autodiff",
        at: "emit_backward".into(),
        message,
    }
}

/// Whether a value of type `ty` can be the loss `emit_backward` differentiates: one float element,
/// every dimension a static 1.
pub fn is_loss_type(ty: &TensorType) -> bool {
    ty.elem.is_float() && ty.dims.iter().all(|d| matches!(d, Dim::Static(1)))
}

/// The training-step function of `f`: result `loss` (a float tensor of one element, static shape)
/// and the f64 gradient of every weight it reads and of each argument `wrt_args` marks.
pub fn emit_backward(f: &Function, loss: usize, wrt_args: &[bool]) -> Result<Backward, IrError> {
    emit_backward_in(f, loss, wrt_args, ElemType::F64)
}

/// `emit_backward` with cotangents (and so gradients) of element type `elem`: each rule still
/// computes in f64, its result rounded once to `elem`, and the sums are `elem` additions. With f64
/// the function is bit for bit the sweep; narrower types are for a compiled step, measured against it.
pub fn emit_backward_in(
    f: &Function,
    loss: usize,
    wrt_args: &[bool],
    elem: ElemType,
) -> Result<Backward, IrError> {
    if !elem.is_float() {
        return Err(fail(format!("cotangents must be a float type, not {elem}")));
    }
    let diags = verify_function(f);
    if !diags.is_empty() {
        return Err(IrError::Invalid(diags));
    }
    let loss_value = *f
        .returns
        .get(loss)
        .ok_or_else(|| fail(format!("@{} has no result {loss}", f.name)))?;
    let loss_ty = f.ty(loss_value).clone();
    if !is_loss_type(&loss_ty) {
        return Err(fail(format!(
            "the loss (result {loss} of @{}) must be one float element of static shape, found {loss_ty}",
            f.name
        )));
    }
    // Which values a gradient is wanted through: float values that depend on a weight or on an
    // argument asked for.
    let mut active = vec![false; f.values.len()];
    for (i, &a) in f.args.iter().enumerate() {
        active[a.index()] = wrt_args.get(i).copied().unwrap_or(false) && f.ty(a).elem.is_float();
    }
    let order: Vec<_> = f.op_order().collect();
    for &id in &order {
        let op = f.op(id);
        let reached = op.kind == OpKind::Weight || op.operands.iter().any(|v| active[v.index()]);
        for r in &op.results {
            active[r.index()] = reached && f.ty(*r).elem.is_float();
        }
    }
    let mut g = f.clone();
    let cot_of = |ty: &TensorType| TensorType::new(ty.dims.clone(), elem);
    let seed = g.push_op(
        OpKind::Constant,
        Vec::new(),
        Attrs::new().with("value", Attr::Floats(vec![1.0])),
        vec![cot_of(&loss_ty)],
    );
    let mut cot: Vec<Option<ValueId>> = vec![None; f.values.len()];
    cot[loss_value.index()] = seed.first().copied();
    let mut weights: BTreeMap<String, ValueId> = BTreeMap::new();
    let add = |g: &mut Function, acc: Option<ValueId>, new: ValueId| -> Option<ValueId> {
        match acc {
            None => Some(new),
            Some(acc) => {
                let ty = g.ty(acc).clone();
                g.push_op(OpKind::Add, vec![acc, new], Attrs::new(), vec![ty])
                    .first()
                    .copied()
            }
        }
    };
    for &id in order.iter().rev() {
        let op = f.op(id).clone();
        let given: Vec<usize> = (0..op.results.len())
            .filter(|&r| cot[op.results[r].index()].is_some())
            .collect();
        if given.is_empty() {
            continue;
        }
        if op.kind == OpKind::Weight {
            let name = op
                .attrs
                .str("name")
                .ok_or_else(|| fail("an nn.weight has no name".into()))?;
            if let Some(ct) = op.results.first().and_then(|r| cot[r.index()]) {
                let acc = weights.get(name).copied();
                if let Some(sum) = add(&mut g, acc, ct) {
                    weights.insert(name.to_string(), sum);
                }
            }
            continue;
        }
        if op.kind == OpKind::Vjp && op.operands.iter().any(|v| active[v.index()]) {
            return Err(fail(crate::ops::vjp::NO_SECOND_DERIVATIVES.into()));
        }
        let mut operands: Vec<ValueId> = op.operands.clone();
        operands.extend(&op.results);
        operands.extend(given.iter().filter_map(|&r| cot[op.results[r].index()]));
        let cotangents = Attr::Ints(given.iter().map(|&r| r as i64).collect());
        for (i, &v) in op.operands.iter().enumerate() {
            // `nn.stop_gradient`'s rule gives its operand none, whatever the values: as in the
            // sweep, nothing flows back from it (the quantizer chains behind a straight-through
            // estimator get no backward ops).
            if !active[v.index()] || op.kind == OpKind::StopGradient {
                continue;
            }
            let attrs = op
                .attrs
                .clone()
                .with("of", Attr::Str(op.kind.name().to_string()))
                .with("wrt", Attr::Int(i as i64))
                .with("cotangents", cotangents.clone());
            let ct = g
                .push_op(OpKind::Vjp, operands.clone(), attrs, vec![cot_of(f.ty(v))])
                .first()
                .copied()
                .ok_or_else(|| fail("internal: nn.vjp made no result".into()))?;
            cot[v.index()] = add(&mut g, cot[v.index()], ct);
        }
    }
    let mut returns = vec![loss_value];
    let mut args = vec![None; f.args.len()];
    for (i, &a) in f.args.iter().enumerate() {
        if active[a.index()]
            && let Some(ct) = cot[a.index()]
        {
            args[i] = Some(returns.len());
            returns.push(ct);
        }
    }
    let mut weight_results = BTreeMap::new();
    for (name, ct) in weights {
        weight_results.insert(name, returns.len());
        returns.push(ct);
    }
    g.result_types = returns.iter().map(|&v| g.ty(v).clone()).collect();
    g.returns = returns;
    let diags = verify_function(&g);
    if !diags.is_empty() {
        return Err(IrError::Invalid(diags));
    }
    Ok(Backward {
        function: g,
        args,
        weights: weight_results,
    })
}
