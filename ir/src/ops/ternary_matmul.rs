//! `bit.ternary_matmul`: int8 activations × ternary weights, exact integer sums, both scales applied.
//!
//! Syntax: `%y = bit.ternary_matmul %xq, %xs, %w, %ws[, %r] : tensor<Tx6912xf32>` with `xq` `[.., K]`
//! i8, `xs` `[.., 1]` f32 (the act_quant scale), `w` `[N, K]` ternary (torch Linear orientation), `ws`
//! the weight scale, f32 of shape `[]` or `[1]`, and an optional residual `r` of the result's type.
//!
//! Math: `acc[.., n] = Σ_k xq[.., k] · w[n, k]` exactly in i32 (|acc| ≤ 127·K, so K ≤ 16 909 320),
//! then `y = f32(acc) / xs · ws`: the per-token activation scale divides, the per-tensor weight scale
//! (γ = mean|W|) multiplies. Importers fold other conventions (HF `bitlinear` stores 1/γ) into `ws`.
//! With a residual, `y = (f32(acc) / xs · ws) + r`, the addition rounded once in f32: exactly what a
//! separate `nn.add` of `r` and the product computes (`fuse-residual` relies on it; IEEE addition is
//! commutative, so `nn.add %r, %y` and `nn.add %y, %r` both match, NaN payloads aside).

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, result_shape};
use crate::tensor::Data;
use crate::types::{Dim, ElemType, TensorType};

/// `bit.ternary_matmul`.
pub const SPEC: OpSpec = OpSpec {
    name: "bit.ternary_matmul",
    operands: Arity::Between(4, 5),
    results: 1,
    attrs: &[],
};

/// The largest K for which an i32 accumulator cannot overflow (127 · K ≤ 2^31 − 1).
pub const MAX_K: u64 = (i32::MAX as u64) / 127;

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let xq = operand(cx, 0)?;
    let xs = operand(cx, 1)?;
    let w = operand(cx, 2)?;
    let ws = operand(cx, 3)?;
    if xq.elem != ElemType::I8 || xq.rank() == 0 {
        return Err(format!(
            "the activations must be i8 with at least one axis, found {xq}"
        ));
    }
    let mut sdims = xq.dims.clone();
    if let Some(last) = sdims.last_mut() {
        *last = Dim::Static(1);
    }
    if xs != TensorType::new(sdims.clone(), ElemType::F32) {
        return Err(format!(
            "the activation scale must be {}, found {xs}",
            TensorType::new(sdims, ElemType::F32)
        ));
    }
    if w.elem != ElemType::Ternary || w.rank() != 2 {
        return Err(format!(
            "the weight must be a rank-2 ternary tensor [N, K], found {w}"
        ));
    }
    let k = xq.dims.last().cloned().unwrap_or(Dim::Static(1));
    if w.dims[1] != k {
        return Err(format!(
            "K differs: the activations {xq} have {k} columns, the weight {w} has {}",
            w.dims[1]
        ));
    }
    if k.as_static().is_some_and(|k| k > MAX_K) {
        return Err(format!(
            "K = {k} could overflow the i32 accumulator (limit {MAX_K})"
        ));
    }
    if ws.elem != ElemType::F32 || !(ws.rank() == 0 || ws.dims == [Dim::Static(1)]) {
        return Err(format!(
            "the weight scale must be tensor<f32> or tensor<1xf32>, found {ws}"
        ));
    }
    let mut dims = xq.dims.clone();
    if let Some(last) = dims.last_mut() {
        *last = w.dims[0].clone();
    }
    let out = TensorType::new(dims, ElemType::F32);
    check_residual(cx, 4, &out)?;
    Ok(vec![out])
}

/// Checks that the optional residual operand at `index`, if present, has the result's type.
pub(crate) fn check_residual(cx: &InferCtx, index: usize, out: &TensorType) -> Result<(), String> {
    match cx.operands.get(index) {
        Some(r) if r != out => Err(format!(
            "the residual must have the result's type {out}, found {r}"
        )),
        _ => Ok(()),
    }
}

/// The shared row kernel of the ternary matmuls (plain and packed): `a` holds the i8 activations as
/// rows of `k`, `scales` one scale per row, `t` the ternary weights as `n` rows of `k`, `ws` the weight
/// scale and `residual`, if any, one value per output. Returns the `[rows, n]` outputs.
pub fn matmul_rows(
    a: &[i64],
    scales: &[f32],
    t: &[i64],
    n: usize,
    k: usize,
    ws: f32,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(scales.len() * n);
    for (row, &s) in a.chunks(k.max(1)).zip(scales) {
        for wrow in t.chunks(k.max(1)).take(n) {
            let acc: i32 = row.iter().zip(wrow).map(|(&x, &y)| (x * y) as i32).sum();
            out.push(acc as f32 / s * ws);
        }
    }
    if let Some(r) = residual {
        // One f32 rounding, as `nn.add` gives (f64 sum of two f32 values, rounded once, is the
        // correctly rounded f32 sum).
        for (y, &r) in out.iter_mut().zip(r) {
            *y += r;
        }
    }
    out
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let (xq, xs, w, ws) = (cx.input(0)?, cx.input(1)?, cx.input(2)?, cx.input(3)?);
    let k = w.shape[1];
    let n = w.shape[0];
    let a = xq.data.to_i64();
    let t = w.data.to_i64();
    let scales = xs.data.to_f32();
    let ws = ws
        .data
        .to_f32()
        .first()
        .copied()
        .ok_or("empty weight scale")?;
    let residual = cx.inputs.get(4).map(|r| r.data.to_f32());
    let out = matmul_rows(&a, &scales, &t, n, k, ws, residual.as_deref());
    one(result_shape(cx, 0)?, Data::F32(out))
}

/// Gradient rule: with `a = f32(acc)` and `y = a / xs · ws (+ r)`: `gxs = −Σ_n g·a·ws / xs²` per row,
/// `gws = Σ g·a / xs`, `gr = g`; none for the int8 activations and the ternary weights (integers:
/// training differentiates the `nn.*` form, where they are still floats).
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let (xq, xs, w, ws) = (cx.input(0)?, cx.input(1)?, cx.input(2)?, cx.input(3)?);
    let (n, k) = (w.shape[0], w.shape[1]);
    let a = xq.data.to_i64();
    let t = w.data.to_i64();
    let scales = xs.data.to_f64();
    let wsv = ws
        .data
        .to_f64()
        .first()
        .copied()
        .ok_or("empty weight scale")?;
    let g = cx.cotangent(0)?;
    let mut gxs = vec![0f64; scales.len()];
    let mut gws = 0f64;
    for (m, (row, &s)) in a.chunks(k.max(1)).zip(&scales).enumerate() {
        for (j, wrow) in t.chunks(k.max(1)).take(n).enumerate() {
            let acc: i64 = row.iter().zip(wrow).map(|(&x, &y)| x * y).sum();
            let gv = g[m * n + j] * acc as f64;
            gxs[m] -= gv * wsv / (s * s);
            gws += gv / s;
        }
    }
    let mut out = vec![None, Some(gxs), None, Some(vec![gws; ws.numel()])];
    if cx.inputs.len() > 4 {
        out.push(Some(g.into_owned()));
    }
    Ok(out)
}
