//! Reductions: `nn.reduce_mean`, `nn.reduce_max`, `nn.reduce_sum`.
//!
//! Syntax: `%m = nn.reduce_max %a {axes = [-1], keepdims = true} : tensor<Tx1xf32>`.
//! `axes` absent means every axis; `keepdims` defaults to true (reduced axes stay with size 1).
//!
//! Math: sum and mean accumulate in f64 (i64 for integers, wrapping to the element type) and round
//! once; max is exact. Over an empty set: sum 0, mean NaN, max -inf (the smallest integer for integers).

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, result_shape};
use crate::attr::{AttrKind, AttrSpec};
use crate::shape::{for_each_index, normalize_axes};
use crate::tensor::{Data, strides};
use crate::types::{Dim, TensorType};

/// The members of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Arithmetic mean.
    Mean,
    /// Maximum.
    Max,
    /// Sum.
    Sum,
}

const ATTRS: &[AttrSpec] = &[
    AttrSpec::opt("axes", AttrKind::Ints),
    AttrSpec::opt("keepdims", AttrKind::Bool),
];

/// The spec of one member.
pub fn spec(op: ReduceOp) -> OpSpec {
    let name = match op {
        ReduceOp::Mean => "nn.reduce_mean",
        ReduceOp::Max => "nn.reduce_max",
        ReduceOp::Sum => "nn.reduce_sum",
    };
    OpSpec {
        name,
        operands: Arity::Exactly(1),
        results: 1,
        attrs: ATTRS,
    }
}

fn axes_of(attrs: &crate::attr::Attrs, rank: usize) -> Result<Vec<usize>, String> {
    match attrs.ints("axes") {
        Some(a) => normalize_axes(a, rank),
        None => Ok((0..rank).collect()),
    }
}

/// Type rule.
pub fn infer(op: ReduceOp, cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    let numeric = x.elem.is_float() || x.elem.is_int();
    if !numeric || (op == ReduceOp::Mean && !x.elem.is_float()) {
        return Err(format!("unsupported element type for this reduction: {x}"));
    }
    let axes = axes_of(cx.attrs, x.rank())?;
    let keep = cx.attrs.bool_or("keepdims", true);
    let mut dims = Vec::new();
    for (i, d) in x.dims.iter().enumerate() {
        if !axes.contains(&i) {
            dims.push(d.clone());
        } else if keep {
            dims.push(Dim::Static(1));
        }
    }
    Ok(vec![TensorType::new(dims, x.elem)])
}

/// Where each element of a reduced tensor goes: its result's index (in the keepdims layout, which
/// has the result's order), the number of results and how many elements each one reduces.
struct Reduction {
    owner: Vec<usize>,
    n_out: usize,
    count: usize,
}

impl Reduction {
    fn of(shape: &[usize], attrs: &crate::attr::Attrs) -> Result<Reduction, String> {
        let rank = shape.len();
        let axes = axes_of(attrs, rank)?;
        let kept: Vec<usize> = (0..rank)
            .map(|i| if axes.contains(&i) { 1 } else { shape[i] })
            .collect();
        let kept_strides = strides(&kept);
        let count = (0..rank)
            .filter(|i| axes.contains(i))
            .map(|i| shape[i])
            .product::<usize>();
        let mut owner = Vec::with_capacity(shape.iter().product());
        for_each_index(shape, |idx| {
            owner.push(
                idx.iter()
                    .enumerate()
                    .filter(|(i, _)| !axes.contains(i))
                    .map(|(i, &v)| v * kept_strides[i])
                    .sum(),
            )
        });
        Ok(Reduction {
            owner,
            n_out: kept.iter().product(),
            count,
        })
    }
}

/// Reference evaluation.
pub fn eval(op: ReduceOp, cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    // Accumulate into the keepdims shape, then reshape to the declared result shape.
    let r = Reduction::of(&x.shape, cx.attrs)?;
    let elem = x.elem();
    let data = if elem.is_float() {
        let v = x.data.to_f64();
        let mut acc = vec![
            if op == ReduceOp::Max {
                f64::NEG_INFINITY
            } else {
                0.0
            };
            r.n_out
        ];
        for (&o, &a) in r.owner.iter().zip(&v) {
            acc[o] = match op {
                ReduceOp::Max => {
                    if a.is_nan() || acc[o].is_nan() {
                        f64::NAN
                    } else {
                        acc[o].max(a)
                    }
                }
                ReduceOp::Mean | ReduceOp::Sum => acc[o] + a,
            };
        }
        if op == ReduceOp::Mean {
            for a in &mut acc {
                *a /= r.count as f64;
            }
        }
        Data::from_f64(elem, acc)
    } else {
        let v = x.data.to_i64();
        let init = if op == ReduceOp::Max { min_of(elem) } else { 0 };
        let mut acc = vec![init; r.n_out];
        for (&o, &a) in r.owner.iter().zip(&v) {
            acc[o] = match op {
                ReduceOp::Max => acc[o].max(a),
                ReduceOp::Mean | ReduceOp::Sum => acc[o].wrapping_add(a),
            };
        }
        Data::from_i64(elem, acc)
    };
    one(result_shape(cx, 0)?, data)
}

fn min_of(elem: crate::types::ElemType) -> i64 {
    use crate::types::ElemType;
    match elem {
        ElemType::I8 => i64::from(i8::MIN),
        ElemType::I16 => i64::from(i16::MIN),
        ElemType::I32 => i64::from(i32::MIN),
        ElemType::U8 | ElemType::U16 | ElemType::U32 | ElemType::U64 | ElemType::Bool => 0,
        ElemType::Ternary => -1,
        ElemType::I64 | ElemType::F32 | ElemType::F64 | ElemType::F16 | ElemType::BF16 => i64::MIN,
    }
}

/// Gradient rule: sum sends each result's cotangent to every element it summed, mean the same over
/// the count; max sends it to the elements equal to the maximum, split evenly among ties (as torch's
/// `amax`). None for integers.
pub fn vjp(op: ReduceOp, cx: &super::VjpCtx) -> super::VjpResult {
    let x = cx.input(0)?;
    if !x.elem().is_float() {
        return Ok(vec![None]);
    }
    let Reduction { owner, count, .. } = Reduction::of(&x.shape, cx.attrs)?;
    let g = cx.cotangent(0)?;
    let v = x.data.to_f64();
    let y = cx.output(0)?.data.to_f64();
    let mut ties = vec![0usize; y.len()];
    if op == ReduceOp::Max {
        for (k, &o) in owner.iter().enumerate() {
            if v[k] == y[o] {
                ties[o] += 1;
            }
        }
    }
    let gx = owner
        .iter()
        .enumerate()
        .map(|(k, &o)| match op {
            ReduceOp::Sum => g[o],
            ReduceOp::Mean => g[o] / count as f64,
            ReduceOp::Max if v[k] == y[o] => g[o] / ties[o] as f64,
            ReduceOp::Max => 0.0,
        })
        .collect();
    Ok(vec![Some(gx)])
}
