//! Normalizations: `nn.rms_norm` and `nn.layer_norm` over the trailing axes from `axis` on.
//!
//! Syntax: `%y = nn.rms_norm %x, %w {eps = 1e-5} : tensor<Tx2560xf32>` (`axis` defaults to -1);
//! `%y = nn.layer_norm %x, %w, %b {eps = 1e-5} : ...` (the bias is optional).
//!
//! Math (BitNet/LLaMA RMSNorm, HF order): `y = (x · 1/√(mean(x²) + eps)) · w`, the mean over the
//! normalized axes. LayerNorm: `y = (x - μ)/√(σ² + eps) · w + b`. The mean (and variance) are summed in
//! f64 and rounded to f32; the rest runs in f32. `w` (and `b`) broadcast against the normalized axes.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, require_float};
use crate::attr::{AttrKind, AttrSpec};
use crate::shape::{broadcast, broadcast_index_map, normalize_axis};
use crate::tensor::{Data, Tensor};
use crate::types::TensorType;

const ATTRS: &[AttrSpec] = &[
    AttrSpec::req("eps", AttrKind::Float),
    AttrSpec::opt("axis", AttrKind::Int),
];

/// `nn.rms_norm`.
pub const RMS_NORM: OpSpec = OpSpec {
    name: "nn.rms_norm",
    operands: Arity::Exactly(2),
    results: 1,
    attrs: ATTRS,
};

/// `nn.layer_norm`.
pub const LAYER_NORM: OpSpec = OpSpec {
    name: "nn.layer_norm",
    operands: Arity::Between(2, 3),
    results: 1,
    attrs: ATTRS,
};

fn check(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    require_float("the input", &x)?;
    let axis = normalize_axis(cx.attrs.int_or("axis", -1), x.rank())?;
    let normalized = &x.dims[axis..];
    for (i, name) in [(1, "the scale"), (2, "the bias")] {
        if let Some(p) = cx.operands.get(i) {
            if p.elem != x.elem {
                return Err(format!("{name} has type {p} but the input is {x}"));
            }
            if p.rank() > normalized.len()
                || broadcast(normalized, &p.dims).ok().as_deref() != Some(normalized)
            {
                return Err(format!(
                    "{name} {p} does not broadcast to the normalized axes of {x} (from axis {axis})"
                ));
            }
        }
    }
    if cx.attrs.float("eps").is_some_and(|e| e.is_nan() || e < 0.0) {
        return Err("eps must be a non-negative number".into());
    }
    Ok(vec![x])
}

/// Type rule of `nn.rms_norm`.
pub fn infer_rms(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    check(cx)
}

/// Type rule of `nn.layer_norm`.
pub fn infer_layer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    check(cx)
}

/// The parameter `p` broadcast to the `inner` trailing shape, as f32 values.
fn expand_param(p: &Tensor, inner_shape: &[usize]) -> Vec<f32> {
    let v = p.data.to_f32();
    broadcast_index_map(inner_shape, &p.shape)
        .into_iter()
        .map(|i| v[i])
        .collect()
}

fn eval_norm(cx: &EvalCtx, rms: bool) -> EvalResult {
    let x = cx.input(0)?;
    let axis = normalize_axis(cx.attrs.int_or("axis", -1), x.shape.len())?;
    let eps = cx.attrs.float_or("eps", 0.0) as f32;
    let inner_shape = &x.shape[axis..];
    let n: usize = inner_shape.iter().product();
    let w = expand_param(cx.input(1)?, inner_shape);
    let b = cx.inputs.get(2).map(|t| expand_param(t, inner_shape));
    let v = x.data.to_f32();
    let mut out = vec![0f32; v.len()];
    if n > 0 {
        for (row, dst) in v.chunks(n).zip(out.chunks_mut(n)) {
            let mean = if rms {
                0.0
            } else {
                (row.iter().map(|&a| f64::from(a)).sum::<f64>() / n as f64) as f32
            };
            let var = (row
                .iter()
                .map(|&a| f64::from(a - mean) * f64::from(a - mean))
                .sum::<f64>()
                / n as f64) as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for (k, (d, &a)) in dst.iter_mut().zip(row).enumerate() {
                let y = (a - mean) * inv * w[k];
                *d = match &b {
                    Some(b) => y + b[k],
                    None => y,
                };
            }
        }
    }
    one(&x.shape, Data::from_f32(x.elem(), out))
}

/// Reference evaluation of `nn.rms_norm`.
pub fn eval_rms(cx: &EvalCtx) -> EvalResult {
    eval_norm(cx, true)
}

/// Reference evaluation of `nn.layer_norm`.
pub fn eval_layer(cx: &EvalCtx) -> EvalResult {
    eval_norm(cx, false)
}

/// Gradient rule of both norms, in f64 over each row of `n` normalized elements with
/// `r = 1/√(var + eps)` and `x̂ = (x − μ)·r` (μ = 0 for RMSNorm): `d = g ⊙ w`;
/// RMSNorm `gx = r·d − x̂·mean(d ⊙ x̂)·r`; LayerNorm `gx = r·(d − mean(d) − x̂·mean(d ⊙ x̂))`;
/// `gw = Σ_rows g ⊙ x̂`, `gb = Σ_rows g` (then summed to the parameters' own shapes).
fn vjp_norm(cx: &super::VjpCtx, rms: bool) -> super::VjpResult {
    use super::grad::{if_float, unbroadcast};
    let x = cx.input(0)?;
    let axis = normalize_axis(cx.attrs.int_or("axis", -1), x.shape.len())?;
    let eps = f64::from(cx.attrs.float_or("eps", 0.0) as f32);
    let inner_shape = &x.shape[axis..];
    let n: usize = inner_shape.iter().product();
    let wt = cx.input(1)?;
    let w: Vec<f64> = expand_param(wt, inner_shape)
        .into_iter()
        .map(f64::from)
        .collect();
    let g = cx.cotangent(0)?;
    let v = x.data.to_f64();
    let mut gx = vec![0f64; v.len()];
    let (mut gw, mut gb) = (vec![0f64; n], vec![0f64; n]);
    if n > 0 {
        for ((row, grow), dst) in v.chunks(n).zip(g.chunks(n)).zip(gx.chunks_mut(n)) {
            let mean = if rms {
                0.0
            } else {
                row.iter().sum::<f64>() / n as f64
            };
            let var = row.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / n as f64;
            let r = 1.0 / (var + eps).sqrt();
            let xh: Vec<f64> = row.iter().map(|a| (a - mean) * r).collect();
            let d: Vec<f64> = grow.iter().zip(&w).map(|(gv, wv)| gv * wv).collect();
            let mean_dx = d.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / n as f64;
            let mean_d = if rms {
                0.0
            } else {
                d.iter().sum::<f64>() / n as f64
            };
            for k in 0..n {
                dst[k] = r * (d[k] - mean_d - xh[k] * mean_dx);
                gw[k] += grow[k] * xh[k];
                gb[k] += grow[k];
            }
        }
    }
    let mut out = vec![
        if_float(x, gx),
        if_float(wt, unbroadcast(&gw, inner_shape, &wt.shape)),
    ];
    if let Some(bt) = cx.inputs.get(2) {
        out.push(if_float(bt, unbroadcast(&gb, inner_shape, &bt.shape)));
    }
    Ok(out)
}

/// Gradient rule of `nn.rms_norm`.
pub fn vjp_rms(cx: &super::VjpCtx) -> super::VjpResult {
    vjp_norm(cx, true)
}

/// Gradient rule of `nn.layer_norm`.
pub fn vjp_layer(cx: &super::VjpCtx) -> super::VjpResult {
    vjp_norm(cx, false)
}
