//! `nn.slice`: strided windows along some axes (ONNX Slice semantics, bounds as attributes).
//!
//! Syntax: `%y = nn.slice %x {axes = [-1], ends = [16], starts = [0]} : tensor<Tx16xf32>`;
//! `axes` defaults to `0..len(starts)`, `steps` to all ones.
//!
//! Math, per sliced axis of size d: negative `start`/`end` count from the end; they are then clamped
//! to `[0, d]` (`[0, d-1]` and `[-1, d-1]` for a negative step); the axis keeps elements
//! `start, start+step, …` while before `end`. A step of 0 is an error. A symbolic axis can only be kept
//! whole (`start 0`, `end` ≥ 2^62, `step 1`).

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, result_shape};
use crate::attr::{AttrKind, AttrSpec, Attrs};
use crate::shape::{for_each_index, normalize_axes};
use crate::tensor::strides;
use crate::types::{Dim, TensorType};

/// `nn.slice`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.slice",
    operands: Arity::Exactly(1),
    results: 1,
    attrs: &[
        AttrSpec::req("starts", AttrKind::Ints),
        AttrSpec::req("ends", AttrKind::Ints),
        AttrSpec::opt("axes", AttrKind::Ints),
        AttrSpec::opt("steps", AttrKind::Ints),
    ],
};

/// One sliced axis: (axis, start, end, step) as written.
type Window = (usize, i64, i64, i64);

fn windows(attrs: &Attrs, rank: usize) -> Result<Vec<Window>, String> {
    let starts = attrs.ints("starts").unwrap_or(&[]);
    let ends = attrs.ints("ends").unwrap_or(&[]);
    let n = starts.len();
    let default_axes: Vec<i64> = (0..n as i64).collect();
    let axes = attrs.ints("axes").unwrap_or(&default_axes);
    let ones = vec![1i64; n];
    let steps = attrs.ints("steps").unwrap_or(&ones);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(format!(
            "starts, ends, axes and steps must have the same length (found {}, {}, {}, {})",
            n,
            ends.len(),
            axes.len(),
            steps.len()
        ));
    }
    let axes = normalize_axes(axes, rank)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if steps[i] == 0 {
            return Err("a slice step cannot be 0".into());
        }
        out.push((axes[i], starts[i], ends[i], steps[i]));
    }
    Ok(out)
}

/// The clamped (start, length) of a window over an axis of size `d`.
fn resolve(d: u64, start: i64, end: i64, step: i64) -> (i64, u64) {
    let d = d.min(i64::MAX as u64) as i64;
    if d == 0 {
        return (0, 0);
    }
    let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = if step > 0 {
        (fix(start).clamp(0, d), fix(end).clamp(0, d))
    } else {
        (fix(start).clamp(0, d - 1), fix(end).clamp(-1, d - 1))
    };
    let span = if step > 0 { e - s } else { s - e };
    let len = if span <= 0 {
        0
    } else {
        (span as u64 - 1) / step.unsigned_abs() + 1
    };
    (s, len)
}

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    let mut dims = x.dims.clone();
    for (axis, start, end, step) in windows(cx.attrs, x.rank())? {
        dims[axis] = match &x.dims[axis] {
            Dim::Static(d) => Dim::Static(resolve(*d, start, end, step).1),
            Dim::Sym(s) if start == 0 && step == 1 && end >= 1 << 62 => Dim::Sym(s.clone()),
            Dim::Sym(s) => {
                return Err(format!(
                    "cannot slice part of the symbolic axis {axis} (size {s})"
                ));
            }
        };
    }
    Ok(vec![TensorType::new(dims, x.elem)])
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    let rank = x.shape.len();
    let mut begin = vec![0i64; rank];
    let mut step = vec![1i64; rank];
    let mut shape = x.shape.clone();
    for (axis, s, e, st) in windows(cx.attrs, rank)? {
        let (b, len) = resolve(x.shape[axis] as u64, s, e, st);
        begin[axis] = b;
        step[axis] = st;
        shape[axis] = len as usize;
    }
    let xs = strides(&x.shape);
    let mut idx = Vec::new();
    for_each_index(&shape, |i| {
        let off: i64 = (0..rank)
            .map(|k| (begin[k] + i[k] as i64 * step[k]) * xs[k] as i64)
            .sum();
        idx.push(off as usize);
    });
    one(result_shape(cx, 0)?, x.data.take(&idx))
}

/// Gradient rule: the cotangent scattered back into the kept positions, zeros elsewhere.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    super::grad::vjp_data_movement(super::OpKind::Slice, cx, &[0])
}
