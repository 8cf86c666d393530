//! `bit.rms_norm_quant`: RMSNorm and per-token int8 quantization of its output in one op, so a kernel
//! reads each row once (BitNet's norm before every BitLinear).
//!
//! Syntax: `%xq, %xs = bit.rms_norm_quant %x, %w {eps = 1e-5, eps_norm = 1e-5} : tensor<Tx2560xi8>,
//! tensor<Tx1xf32>` (`eps_norm` is required, `eps` defaults to 1e-5).
//!
//! Math: exactly `bit.act_quant(nn.rms_norm(x, w {eps = eps_norm}) {eps = eps, reciprocal})` with the norm over
//! the last axis, in the same operation order and roundings, so fusing never changes a result. Per row
//! of K: `ms = f32(Σ f64(x_k)² / K)`, `inv = 1 / √(ms + eps_norm)` (f32), `y_k = x_k · inv · w_k` (f32),
//! rounded to x's element type (as the norm's result is stored), then `s = 127 / max(max_k |y_k|, eps)`,
//! `xq_k = clamp(round_half_even(y_k · s), -128, 127)` (f32).
//! Type rule: `x` `[.., K]` float (rank ≥ 1); `w` of x's element type broadcasting to `[K]`; results
//! `xq` (x's dims, i8) and `xs` (x's dims with the last set to 1, f32), as `bit.act_quant`.

use super::act_quant::{DEFAULT_EPS, quantize_row};
use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, operand, require_float};
use crate::attr::{AttrKind, AttrSpec};
use crate::shape::{broadcast, broadcast_index_map};
use crate::tensor::{Data, Tensor};
use crate::types::{Dim, ElemType, TensorType};

/// `bit.rms_norm_quant`.
pub const SPEC: OpSpec = OpSpec {
    name: "bit.rms_norm_quant",
    operands: Arity::Exactly(2),
    results: 2,
    attrs: &[
        AttrSpec::req("eps_norm", AttrKind::Float),
        AttrSpec::opt("eps", AttrKind::Float),
        AttrSpec::opt("reciprocal", AttrKind::Bool),
    ],
};

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    let w = operand(cx, 1)?;
    require_float("the input", &x)?;
    let Some(k) = x.dims.last().cloned() else {
        return Err("the input needs at least one axis".into());
    };
    if w.elem != x.elem {
        return Err(format!("the scale has type {w} but the input is {x}"));
    }
    let row = [k];
    if w.rank() > 1 || broadcast(&row, &w.dims).ok().as_deref() != Some(&row[..]) {
        return Err(format!(
            "the scale {w} does not broadcast to the last axis of {x}"
        ));
    }
    if cx
        .attrs
        .float("eps_norm")
        .is_some_and(|e| e.is_nan() || e < 0.0)
    {
        return Err("eps_norm must be a non-negative number".into());
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

/// Normalizes one row into `out` (before the storage rounding), in `nn.rms_norm`'s order.
pub fn norm_row(row: &[f32], w: &[f32], eps_norm: f32, out: &mut [f32]) {
    let n = row.len();
    let ms = (row
        .iter()
        .map(|&a| f64::from(a) * f64::from(a))
        .sum::<f64>()
        / n as f64) as f32;
    let inv = 1.0 / (ms + eps_norm).sqrt();
    for ((o, &a), &g) in out.iter_mut().zip(row).zip(w) {
        *o = a * inv * g;
    }
}

/// Reference evaluation: one pass over each row (norm, storage rounding, quantization).
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    let w = cx.input(1)?;
    let eps_norm = cx.attrs.float_or("eps_norm", 0.0) as f32;
    let eps = cx.attrs.float_or("eps", DEFAULT_EPS) as f32;
    let reciprocal = cx.attrs.bool_or("reciprocal", false);
    let elem = x.elem();
    let k = x.shape.last().copied().unwrap_or(1);
    let wv = w.data.to_f32();
    let w: Vec<f32> = broadcast_index_map(&[k], &w.shape)
        .into_iter()
        .map(|i| wv[i])
        .collect();
    let v = x.data.to_f32();
    let mut q = vec![0i8; v.len()];
    let mut scales = Vec::with_capacity(v.len() / k.max(1));
    let mut y = vec![0f32; k];
    if k > 0 {
        for (row, out) in v.chunks(k).zip(q.chunks_mut(k)) {
            norm_row(row, &w, eps_norm, &mut y);
            // The unfused norm stores its result in x's element type; round the same way.
            if elem != ElemType::F32 {
                y = Data::from_f32(elem, std::mem::take(&mut y)).to_f32();
            }
            scales.push(quantize_row(&y, eps, reciprocal, out));
        }
    }
    let mut sshape = x.shape.clone();
    if let Some(last) = sshape.last_mut() {
        *last = 1;
    }
    let q = Tensor::new(x.shape.clone(), Data::I8(q)).ok_or("internal: rms_norm_quant shape")?;
    let s = Tensor::new(sshape, Data::F32(scales)).ok_or("internal: rms_norm_quant scale shape")?;
    Ok(vec![q, s])
}

/// Gradient rule: none. This fusion is made by the `fuse-norm-quant` pass for inference; training
/// differentiates the graph before the passes run (`nn.rms_norm`, then `nn.stop_gradient` around the
/// quantization).
pub fn vjp(_cx: &super::VjpCtx) -> super::VjpResult {
    Err(
        "bit.rms_norm_quant has no gradient: it is an inference fusion made by -O; differentiate \
         the nn.* graph, before the passes"
            .into(),
    )
}
