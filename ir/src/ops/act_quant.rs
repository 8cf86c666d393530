//! `bit.act_quant`: per-token absmax quantization of activations to int8 (BitNet b1.58).
//!
//! Syntax: `%xq, %xs = bit.act_quant %x {eps = 1e-5} : tensor<Tx2560xi8>, tensor<Tx1xf32>`
//! (`eps` defaults to 1e-5).
//!
//! Math, per row (last axis), in f32: `s = 127 / max(max_j |x_j|, eps)` (transformers' order), or with
//! `reciprocal = true`, `s = (1 / max(max_j |x_j|, eps)) · 127` (the torch.onnx TorchScript export's
//! order; the two can differ by one ulp, which matters at rounding ties);
//! `xq_j = clamp(round_half_even(x_j · s), -128, 127)` as i8. Results: `xq` (same dims, i8) and the
//! scale `s` (same dims with the last set to 1, f32), so `x ≈ xq / s`.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, operand, require_float};
use crate::attr::{AttrKind, AttrSpec};
use crate::tensor::{Data, Tensor};
use crate::types::{Dim, ElemType, TensorType};

/// `bit.act_quant`.
pub const SPEC: OpSpec = OpSpec {
    name: "bit.act_quant",
    operands: Arity::Exactly(1),
    results: 2,
    attrs: &[
        AttrSpec::opt("eps", AttrKind::Float),
        AttrSpec::opt("reciprocal", AttrKind::Bool),
    ],
};

/// The default floor of the absmax (transformers, bitnet.cpp).
pub const DEFAULT_EPS: f64 = 1e-5;

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    require_float("the input", &x)?;
    if x.rank() == 0 {
        return Err("the input needs at least one axis".into());
    }
    if cx
        .attrs
        .float("eps")
        .is_some_and(|e| e.is_nan() || e <= 0.0)
    {
        return Err("eps must be positive".into());
    }
    let mut sdims = x.dims.clone();
    if let Some(last) = sdims.last_mut() {
        *last = Dim::Static(1);
    }
    Ok(vec![
        x.with_elem(ElemType::I8),
        TensorType::new(sdims, ElemType::F32),
    ])
}

/// Quantizes one row; returns its scale. This is the reference every backend's kernel must match.
pub fn quantize_row(row: &[f32], eps: f32, reciprocal: bool, out: &mut [i8]) -> f32 {
    let m = row.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let s = if reciprocal {
        (1.0 / m.max(eps)) * 127.0
    } else {
        127.0 / m.max(eps)
    };
    for (o, &v) in out.iter_mut().zip(row) {
        *o = (v * s).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    s
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    let eps = cx.attrs.float_or("eps", DEFAULT_EPS) as f32;
    let reciprocal = cx.attrs.bool_or("reciprocal", false);
    let k = x.shape.last().copied().unwrap_or(1);
    let v = x.data.to_f32();
    let mut q = vec![0i8; v.len()];
    let mut scales = Vec::with_capacity(v.len() / k.max(1));
    if k > 0 {
        for (row, out) in v.chunks(k).zip(q.chunks_mut(k)) {
            scales.push(quantize_row(row, eps, reciprocal, out));
        }
    }
    let mut sshape = x.shape.clone();
    if let Some(last) = sshape.last_mut() {
        *last = 1;
    }
    let q = Tensor::new(x.shape.clone(), Data::I8(q)).ok_or("internal: act_quant shape")?;
    let s = Tensor::new(sshape, Data::F32(scales)).ok_or("internal: act_quant scale shape")?;
    Ok(vec![q, s])
}

/// Gradient rule (the op's own math, not a straight-through estimator): `xq` is piecewise constant,
/// so only the scale carries a gradient: `s = 127 / max(m, eps)` with `m = max_j |x_j|` gives
/// `∂s/∂x_j = −s/m · sign(x_j)` at the element that holds the maximum (split among ties), when
/// `m > eps`. Quantization-aware training states its estimator in the graph with `nn.stop_gradient`.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let x = cx.input(0)?;
    let eps = f64::from(cx.attrs.float_or("eps", DEFAULT_EPS) as f32);
    let k = x.shape.last().copied().unwrap_or(1).max(1);
    let v = x.data.to_f64();
    let s = cx.output(1)?.data.to_f64();
    let gs = cx.cotangent(1)?;
    let mut gx = vec![0f64; v.len()];
    for (r, (row, dst)) in v.chunks(k).zip(gx.chunks_mut(k)).enumerate() {
        let m = row.iter().fold(0f64, |m, &a| m.max(a.abs()));
        if m <= eps {
            continue;
        }
        let ties = row.iter().filter(|a| a.abs() == m).count().max(1) as f64;
        for (d, &a) in dst.iter_mut().zip(row) {
            if a.abs() == m {
                *d = gs[r] * -s[r] / m * a.signum() / ties;
            }
        }
    }
    Ok(vec![Some(gx)])
}
