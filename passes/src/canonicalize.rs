//! `canonicalize`: local clean-ups that make later pattern matching simpler and never make the program
//! worse. It removes identity ops (a reshape, expand or cast to the operand's own type, a transpose by
//! the identity permutation), folds ops whose operands are all small literal constants into one literal
//! (evaluated by the op's own reference `eval`), merges identical ops (common subexpressions), and
//! deletes ops whose results are unused.
//!
//! Before → after (from `tests/filetests/passes/canonicalize.bir`):
//! ```text
//! %a = nn.constant {value = [2.0]} : tensor<f32>      %y = nn.mul %x, %c : tensor<4xf32>
//! %b = nn.constant {value = [3.0]} : tensor<f32>  →   (with %c = nn.constant {value = [6.0]})
//! %c = nn.mul %a, %b : tensor<f32>
//! %r = nn.reshape %x : tensor<4xf32>   ; identity, removed
//! ```

use crate::{Pass, PassContext, PassError};
use bitnet_ir::attr::{Attr, Attrs};
use bitnet_ir::module::{Function, Module, OpId};
use bitnet_ir::ops::EvalCtx;
use bitnet_ir::{Data, NoWeights, OpKind, Tensor, ValueId};
use std::collections::HashMap;

/// Literal results larger than this stay unfolded, so the IR text stays small.
pub const FOLD_LIMIT: usize = 64;

/// The `canonicalize` pass.
pub struct Canonicalize;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    fn summary(&self) -> &'static str {
        "remove identity ops, fold small constants, merge common subexpressions, delete dead ops"
    }

    fn run(&self, module: &mut Module, _cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        for f in &mut module.functions {
            changed |= remove_identities(f);
            changed |= fold_constants(f);
            changed |= merge_common(f);
            changed |= f.remove_dead_ops();
        }
        Ok(changed)
    }
}

/// True if `op` computes its first operand unchanged.
fn is_identity(f: &Function, id: OpId) -> bool {
    let op = f.op(id);
    let (Some(&x), Some(&y)) = (op.operands.first(), op.results.first()) else {
        return false;
    };
    let same_type = f.ty(x) == f.ty(y);
    match op.kind {
        OpKind::Reshape | OpKind::Expand | OpKind::Cast | OpKind::Squeeze | OpKind::Unsqueeze => {
            same_type
        }
        OpKind::Transpose => {
            same_type
                && op
                    .attrs
                    .ints("perm")
                    .is_some_and(|p| p.iter().enumerate().all(|(i, &v)| v == i as i64))
        }
        _ => false,
    }
}

fn remove_identities(f: &mut Function) -> bool {
    let ids: Vec<OpId> = f.op_order().filter(|&id| is_identity(f, id)).collect();
    for &id in &ids {
        let op = f.op(id);
        let (x, y) = (op.operands[0], op.results[0]);
        f.replace_uses(y, x);
    }
    !ids.is_empty()
}

/// The literal values of a constant op's result, if `v` is defined by `nn.constant`.
fn literal(f: &Function, v: ValueId) -> Option<&Attrs> {
    match f.value(v).def {
        bitnet_ir::module::ValueDef::OpResult { op, .. } if f.op(op).kind == OpKind::Constant => {
            Some(&f.op(op).attrs)
        }
        _ => None,
    }
}

/// Evaluates a literal constant op.
fn eval_literal(f: &Function, v: ValueId) -> Option<Tensor> {
    let attrs = literal(f, v)?;
    let ty = f.ty(v);
    let shape: Vec<usize> = ty.static_shape()?.into_iter().map(|d| d as usize).collect();
    let cx = EvalCtx {
        inputs: &[],
        attrs,
        result_shapes: &[shape],
        result_elems: &[ty.elem],
        weights: &NoWeights,
    };
    OpKind::Constant.eval(&cx).ok()?.into_iter().next()
}

/// A tensor as the `value` attribute of a literal.
fn to_attr(t: &Tensor) -> Attr {
    match &t.data {
        Data::F32(_) | Data::F64(_) | Data::F16(_) | Data::BF16(_) => Attr::Floats(t.data.to_f64()),
        _ => Attr::Ints(t.data.to_i64()),
    }
}

fn fold_constants(f: &mut Function) -> bool {
    let mut changed = false;
    let order: Vec<OpId> = f.op_order().collect();
    for id in order {
        let op = f.op(id).clone();
        if matches!(op.kind, OpKind::Constant | OpKind::Weight)
            || op.operands.is_empty()
            || op.results.len() != 1
        {
            continue;
        }
        let Some(inputs) = op
            .operands
            .iter()
            .map(|&v| eval_literal(f, v))
            .collect::<Option<Vec<Tensor>>>()
        else {
            continue;
        };
        let ty = f.ty(op.results[0]).clone();
        let Some(shape) = ty.static_shape() else {
            continue;
        };
        let shape: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
        if shape.iter().product::<usize>() > FOLD_LIMIT {
            continue;
        }
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let cx = EvalCtx {
            inputs: &refs,
            attrs: &op.attrs,
            result_shapes: &[shape],
            result_elems: &[ty.elem],
            weights: &NoWeights,
        };
        let Ok(mut out) = op.kind.eval(&cx) else {
            continue;
        };
        let Some(t) = out.pop() else { continue };
        let new = f.push_op(
            OpKind::Constant,
            Vec::new(),
            Attrs::new().with("value", to_attr(&t)),
            vec![ty],
        );
        // `push_op` appended the literal at the end of the block; move it to where the folded op was.
        if let Some(b) = f.blocks.iter_mut().find(|b| b.ops.contains(&id))
            && let Some(pos) = b.ops.iter().position(|&o| o == id)
            && let Some(new_op) = b.ops.pop()
        {
            b.ops.insert(pos, new_op);
        }
        f.replace_uses(op.results[0], new[0]);
        changed = true;
    }
    changed
}

/// What makes two ops the same computation: kind, operands, attributes and result types as text
/// (a total, NaN-safe key).
type OpKey = (OpKind, Vec<ValueId>, String, Vec<String>);

/// Merges ops with the same kind, operands and attributes (all ops are pure).
fn merge_common(f: &mut Function) -> bool {
    let mut seen: HashMap<OpKey, Vec<ValueId>> = HashMap::new();
    let mut changed = false;
    let order: Vec<OpId> = f.op_order().collect();
    for id in order {
        let op = f.op(id).clone();
        // Attributes and result types as printed text: a total, NaN-safe key.
        let attrs = format!("{:?}", op.attrs);
        let types: Vec<String> = op.results.iter().map(|r| f.ty(*r).to_string()).collect();
        let key = (op.kind, op.operands.clone(), attrs, types);
        match seen.get(&key) {
            Some(prev) => {
                for (&r, &p) in op.results.iter().zip(prev) {
                    f.replace_uses(r, p);
                }
                changed = true;
            }
            None => {
                seen.insert(key, op.results.clone());
            }
        }
    }
    changed
}
