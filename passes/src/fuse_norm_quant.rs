//! `fuse-norm-quant`: an `nn.rms_norm` over the last axis whose result feeds only `bit.act_quant` ops
//! (all with the same `eps`) becomes one `bit.rms_norm_quant`, so a kernel reads each row once and the
//! normalized f32 row never goes to memory.
//!
//! Needs: nothing but the module (run after `lower-bitlinear`, which makes the `bit.act_quant` ops).
//! Guarantees: results are bit-identical, because `bit.rms_norm_quant` is defined as exactly the
//! unfused pair (same order of operations, same roundings). A norm whose result has any other use (it
//! is returned, or feeds anything but an act_quant), whose act_quants disagree on `eps`, or which
//! normalizes more than the last axis is left alone.
//!
//! Before → after (`tests/filetests/passes/fuse_norm_quant.bir`):
//! ```text
//! %n = nn.rms_norm %x, %w {eps = 1e-6} : tensor<Tx8xf32>
//! %q, %s = bit.act_quant %n {eps = 1e-5} : …          →   %q, %s = bit.rms_norm_quant %x, %w
//! %y = bit.ternary_matmul %q, %s, %wt, %g : …                {eps = 1e-5, eps_norm = 1e-6} : …
//! ```

use crate::{Pass, PassContext, PassError};
use bitnet_ir::attr::{Attr, Attrs};
use bitnet_ir::module::{Function, Module, OpId};
use bitnet_ir::ops::act_quant::DEFAULT_EPS;
use bitnet_ir::{OpKind, ValueId};

/// The `fuse-norm-quant` pass.
pub struct FuseNormQuant;

impl Pass for FuseNormQuant {
    fn name(&self) -> &'static str {
        "fuse-norm-quant"
    }

    fn summary(&self) -> &'static str {
        "fuse nn.rms_norm + bit.act_quant into bit.rms_norm_quant (one pass over each row)"
    }

    fn run(&self, module: &mut Module, cx: &mut PassContext) -> Result<bool, PassError> {
        Ok(crate::fuse_each_function(
            module,
            cx,
            self.name(),
            "rms_norm + act_quant pair(s)",
            fuse_function,
        ))
    }
}

/// For each value, the ops (in order) that use it as an operand.
fn users(f: &Function) -> Vec<Vec<OpId>> {
    let mut users = vec![Vec::new(); f.values.len()];
    for id in f.op_order() {
        for v in &f.op(id).operands {
            if let Some(u) = users.get_mut(v.index())
                && u.last() != Some(&id)
            {
                u.push(id);
            }
        }
    }
    users
}

/// True if `v` is returned by `f`.
fn is_returned(f: &Function, v: ValueId) -> bool {
    f.returns.contains(&v)
}

/// The act_quant ops of a fusable norm, their common eps and scale form (`reciprocal`).
fn fusable(f: &Function, norm: OpId, users: &[Vec<OpId>]) -> Option<(Vec<OpId>, f64, bool)> {
    let op = f.op(norm);
    let &y = op.results.first()?;
    let &x = op.operands.first()?;
    let rank = f.ty(x).rank() as i64;
    let axis = op.attrs.int_or("axis", -1);
    if rank == 0 || !(axis == -1 || axis == rank - 1) || is_returned(f, y) {
        return None;
    }
    let quants = users.get(y.index())?;
    let mut eps: Option<f64> = None;
    let mut form: Option<bool> = None;
    for &q in quants {
        let qop = f.op(q);
        if qop.kind != OpKind::ActQuant || qop.operands.as_slice() != [y] {
            return None;
        }
        let r = qop.attrs.bool_or("reciprocal", false);
        if form.is_some_and(|prev| prev != r) {
            return None;
        }
        form = Some(r);
        let e = qop.attrs.float_or("eps", DEFAULT_EPS);
        match eps {
            None => eps = Some(e),
            Some(prev) if prev.to_bits() == e.to_bits() => {}
            Some(_) => return None,
        }
    }
    Some((quants.clone(), eps?, form?))
}

/// Fuses every fusable norm of `f`; returns how many.
fn fuse_function(f: &mut Function) -> usize {
    let users = users(f);
    let norms: Vec<OpId> = f
        .op_order()
        .filter(|&id| f.op(id).kind == OpKind::RmsNorm)
        .collect();
    let mut fused = 0;
    for norm in norms {
        let Some((quants, eps, reciprocal)) = fusable(f, norm, &users) else {
            continue;
        };
        let op = f.op(norm).clone();
        let Some(first) = quants.first().map(|&q| f.op(q).clone()) else {
            continue;
        };
        let types: Vec<_> = first.results.iter().map(|&r| f.ty(r).clone()).collect();
        let mut attrs = Attrs::new()
            .with("eps_norm", Attr::Float(op.attrs.float_or("eps", 0.0)))
            .with("eps", Attr::Float(eps));
        if reciprocal {
            attrs = attrs.with("reciprocal", Attr::Bool(true));
        }
        // At the norm's place: its operands are defined before it, every act_quant comes after it.
        let new = f.insert_op_before(
            norm,
            OpKind::RmsNormQuant,
            op.operands.clone(),
            attrs,
            types,
        );
        for &q in &quants {
            let results = f.op(q).results.clone();
            for (&old, &new) in results.iter().zip(&new) {
                f.replace_uses(old, new);
                // The fused results keep the first act_quant's names.
                if f.values[new.index()].name.is_none() {
                    f.values[new.index()].name = f.values[old.index()].name.take();
                }
            }
        }
        fused += 1;
    }
    fused
}
