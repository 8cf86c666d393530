//! Helpers the ops' gradient rules (`vjp`) share: reducing a broadcast cotangent back to its
//! operand's shape, and the rule of every data-movement op.
//!
//! A data-movement op (reshape, transpose, expand, slice, concat, gather, embedding) copies elements:
//! `y[i] = x[map(i)]`, so its vector-Jacobian product is the scatter-add `gx[map(i)] += gy[i]`. The
//! map is not written twice: `vjp_data_movement` runs the op's own `eval` on a tensor whose elements
//! are their own flat indices (in f64, exact below 2^53) and reads the map off the result.

use super::{EvalCtx, OpKind, VjpCtx, VjpResult};
use crate::shape::broadcast_index_map;
use crate::tensor::{Data, Tensor};
use crate::types::ElemType;
use crate::weights::NoWeights;

/// `g` (of shape `out_shape`) summed over the axes `in_shape` was broadcast along, so it has
/// `in_shape`'s elements: the cotangent of a broadcast operand.
pub fn unbroadcast(g: &[f64], out_shape: &[usize], in_shape: &[usize]) -> Vec<f64> {
    let n: usize = in_shape.iter().product();
    if out_shape == in_shape {
        return g.to_vec();
    }
    let map = broadcast_index_map(out_shape, in_shape);
    let mut out = vec![0.0; n];
    for (&i, &v) in map.iter().zip(g) {
        if let Some(o) = out.get_mut(i) {
            *o += v;
        }
    }
    out
}

/// The cotangent `g` for operand `t`, or `None` when `t` is not a float (no gradient flows to
/// integers, booleans or ternary values).
pub fn if_float(t: &Tensor, g: Vec<f64>) -> Option<Vec<f64>> {
    t.elem().is_float().then_some(g)
}

/// The gradient rule of a data-movement op: operands listed in `traced` are the ones whose elements
/// the op moves (the others, such as gather's indices, get no gradient).
pub fn vjp_data_movement(kind: OpKind, cx: &VjpCtx, traced: &[usize]) -> VjpResult {
    let out = cx.output(0)?;
    let g = cx.cotangent(0)?;
    // Every traced operand's elements are numbered after the previous operand's.
    let mut offsets = Vec::with_capacity(cx.inputs.len());
    let mut next = 0usize;
    let mut probes: Vec<Tensor> = Vec::with_capacity(cx.inputs.len());
    for (i, t) in cx.inputs.iter().enumerate() {
        if traced.contains(&i) {
            offsets.push(Some(next));
            let ids = (next..next + t.numel()).map(|v| v as f64).collect();
            next += t.numel();
            probes.push(
                Tensor::new(t.shape.clone(), Data::F64(ids))
                    .ok_or("internal: index probe does not match its shape")?,
            );
        } else {
            offsets.push(None);
            probes.push((*t).clone());
        }
    }
    let probe_refs: Vec<&Tensor> = probes.iter().collect();
    let shapes = [out.shape.clone()];
    let elems = [ElemType::F64];
    let ecx = EvalCtx {
        inputs: &probe_refs,
        attrs: cx.attrs,
        result_shapes: &shapes,
        result_elems: &elems,
        weights: &NoWeights,
    };
    let moved = kind.eval(&ecx)?;
    let map = moved
        .first()
        .ok_or("internal: the index probe gave no result")?
        .data
        .to_f64();
    let mut grads: Vec<Option<Vec<f64>>> = cx
        .inputs
        .iter()
        .zip(&offsets)
        .map(|(t, o)| o.and_then(|_| t.elem().is_float().then(|| vec![0.0; t.numel()])))
        .collect();
    for (&src, &gi) in map.iter().zip(g.iter()) {
        let src = src as usize;
        // The operand this element came from: the last one whose numbering starts at or before it.
        let Some(k) = offsets
            .iter()
            .enumerate()
            .rev()
            .find_map(|(k, o)| o.filter(|&o| o <= src).map(|_| k))
        else {
            continue;
        };
        let start = offsets[k].unwrap_or(0);
        if let Some(Some(dst)) = grads.get_mut(k)
            && let Some(d) = dst.get_mut(src - start)
        {
            *d += gi;
        }
    }
    Ok(grads)
}
