//! `nn.attention`: causal multi-head attention with grouped KV heads and a KV cache.
//!
//! Syntax:
//! `%o, %kc1, %vc1 = nn.attention %q, %k, %v, %kc, %vc, %pos {heads = 20, kv_heads = 5}
//!     : tensor<Tx2560xf32>, tensor<4096x640xf32>, tensor<4096x640xf32>`
//! (`scale` defaults to `1/√d`).
//!
//! Operands: `q` `[T, H·d]`, `k` and `v` `[T, Hkv·d]` (k already rotated), the caches `kc`, `vc`
//! `[C, Hkv·d]` with a static context length C, and `pos` (`tensor<i64>`), the absolute position of
//! token 0. Results: the attention output `[T, H·d]` and the updated caches (same types as the cache
//! operands; see the KV-cache model in `module.rs`: the runtime updates them in place).
//!
//! Math: the caches get rows `pos..pos+T` replaced by `k` and `v` (an error if `pos + T > C`: context
//! overflow). Query t of head h (absolute position `p = pos + t`) attends to cache rows `0..=p` of KV
//! head `h / (H/Hkv)`: `s_j = scale · q·kc[j]`, `w = softmax(s)`, `o = Σ_j w_j · vc[j]`. Scores,
//! softmax and sums are computed in f64 and rounded once.

use super::rope::{check_pos, position};
use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, operand, require_float};
use crate::attr::{AttrKind, AttrSpec};
use crate::tensor::{Data, Tensor};
use crate::types::TensorType;
use bitnet_numerics::exp;

/// `nn.attention`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.attention",
    operands: Arity::Exactly(6),
    results: 3,
    attrs: &[
        AttrSpec::req("heads", AttrKind::Int),
        AttrSpec::req("kv_heads", AttrKind::Int),
        AttrSpec::opt("scale", AttrKind::Float),
    ],
};

/// The KV-cache aliasing of `nn.attention`: each pair `(result, operand)` says that result `result`
/// is the updated cache of operand `operand` (the key cache, then the value cache), so a backend keeps
/// both in one buffer and updates it in place.
pub fn cache_aliases() -> [(usize, usize); 2] {
    [(1, 3), (2, 4)]
}

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let q = operand(cx, 0)?;
    let k = operand(cx, 1)?;
    let v = operand(cx, 2)?;
    let kc = operand(cx, 3)?;
    let vc = operand(cx, 4)?;
    check_pos(&operand(cx, 5)?)?;
    require_float("q", &q)?;
    for (name, t) in [
        ("k", &k),
        ("v", &v),
        ("the key cache", &kc),
        ("the value cache", &vc),
    ] {
        if t.elem != q.elem || t.rank() != 2 {
            return Err(format!(
                "{name} must be a rank-2 tensor of {}, found {t}",
                q.elem
            ));
        }
    }
    if q.rank() != 2 {
        return Err(format!("q must be [T, heads*head_dim], found {q}"));
    }
    let heads = cx.attrs.int_or("heads", 0);
    let kv_heads = cx.attrs.int_or("kv_heads", 0);
    if heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 {
        return Err(format!(
            "heads ({heads}) must be a positive multiple of kv_heads ({kv_heads})"
        ));
    }
    let qw = q.dims[1]
        .as_static()
        .ok_or("the width of q must be static")?;
    if qw % heads as u64 != 0 {
        return Err(format!(
            "the width of q ({qw}) is not divisible by heads ({heads})"
        ));
    }
    let d = qw / heads as u64;
    let kvw = crate::types::Dim::Static(d * kv_heads as u64);
    for (name, t) in [
        ("k", &k),
        ("v", &v),
        ("the key cache", &kc),
        ("the value cache", &vc),
    ] {
        if t.dims[1] != kvw {
            return Err(format!(
                "{name} ({t}) must have width kv_heads*head_dim = {kvw}"
            ));
        }
    }
    if k.dims[0] != q.dims[0] || v.dims[0] != q.dims[0] {
        return Err(format!(
            "q, k and v must have the same number of tokens: {q}, {k}, {v}"
        ));
    }
    if kc.dims[0].as_static().is_none() || kc.dims[0] != vc.dims[0] {
        return Err(format!(
            "the caches must have the same static length: {kc}, {vc}"
        ));
    }
    Ok(vec![q, kc, vc])
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let (kc, vc) = (cx.input(3)?, cx.input(4)?);
    let pos = position(cx, 5)?;
    let heads = cx.attrs.int_or("heads", 1) as usize;
    let kv_heads = cx.attrs.int_or("kv_heads", 1) as usize;
    let (t_len, qw) = (q.shape[0], q.shape[1]);
    let d = qw / heads;
    let kvw = d * kv_heads;
    let ctx = kc.shape[0];
    if pos.checked_add(t_len).is_none_or(|end| end > ctx) {
        return Err(format!(
            "context overflow: position {pos} + {t_len} tokens exceeds the cache length {ctx}"
        ));
    }
    let scale = cx.attrs.float("scale").unwrap_or(1.0 / (d as f64).sqrt());
    let (mut kcache, mut vcache) = (kc.data.to_f32(), vc.data.to_f32());
    let (kn, vn) = (k.data.to_f32(), v.data.to_f32());
    kcache[pos * kvw..(pos + t_len) * kvw].copy_from_slice(&kn);
    vcache[pos * kvw..(pos + t_len) * kvw].copy_from_slice(&vn);
    let qv = q.data.to_f32();
    let group = heads / kv_heads;
    let mut out = vec![0f32; t_len * qw];
    let mut scores = Vec::with_capacity(ctx);
    for t in 0..t_len {
        let p = pos + t;
        for h in 0..heads {
            let g = h / group;
            let qrow = &qv[t * qw + h * d..t * qw + h * d + d];
            scores.clear();
            for j in 0..=p {
                let krow = &kcache[j * kvw + g * d..j * kvw + g * d + d];
                let dot: f64 = qrow
                    .iter()
                    .zip(krow)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                scores.push(dot * scale);
            }
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = scores.iter().map(|s| exp(s - m)).sum();
            let weights: Vec<f64> = scores.iter().map(|s| exp(s - m) / sum).collect();
            for c in 0..d {
                let acc: f64 = weights
                    .iter()
                    .enumerate()
                    .map(|(j, w)| w * f64::from(vcache[j * kvw + g * d + c]))
                    .sum();
                out[t * qw + h * d + c] = acc as f32;
            }
        }
    }
    let elem = q.elem();
    let mk = |shape: &[usize], v: Vec<f32>| {
        Tensor::new(shape.to_vec(), Data::from_f32(elem, v))
            .ok_or("internal: attention shape mismatch")
    };
    Ok(vec![
        mk(&q.shape, out)?,
        mk(&kc.shape, kcache)?,
        mk(&vc.shape, vcache)?,
    ])
}

/// Gradient rule, in f64 over the updated caches `K`, `V` (rows `pos..pos+T` replaced by `k`, `v`):
/// per query and head, with weights `w = softmax(s)`: `gV_j += w_j·go`, `gw_j = go·V_j`,
/// `gs_j = w_j·(gw_j − Σ_i w_i·gw_i)`, `gq += scale·Σ_j gs_j·K_j`, `gK_j += scale·gs_j·q`. The
/// cotangents of the updated caches (results 1 and 2) add to `gK` and `gV`; rows `pos..pos+T` of
/// the sums go to `k` and `v`, the other rows to the cache operands (the replaced rows of the old
/// caches get none). None for the position.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let (q, k, kc) = (cx.input(0)?, cx.input(1)?, cx.input(3)?);
    let pos = super::rope::position_of(cx.input(5)?)?;
    let heads = cx.attrs.int_or("heads", 1).max(1) as usize;
    let kv_heads = cx.attrs.int_or("kv_heads", 1).max(1) as usize;
    let (t_len, qw) = (q.shape[0], q.shape[1]);
    let d = qw / heads;
    let kvw = d * kv_heads;
    let ctx = kc.shape[0];
    if pos.checked_add(t_len).is_none_or(|end| end > ctx) || k.shape[0] != t_len {
        return Err(format!(
            "context overflow: position {pos} + {t_len} tokens exceeds the cache length {ctx}"
        ));
    }
    let scale = cx.attrs.float("scale").unwrap_or(1.0 / (d as f64).sqrt());
    let kcache = cx.output(1)?.data.to_f64();
    let vcache = cx.output(2)?.data.to_f64();
    let qv = q.data.to_f64();
    let go = cx.cotangent(0)?;
    let mut gq = vec![0f64; qv.len()];
    let mut gk = cx.cotangent(1)?.into_owned();
    let mut gv = cx.cotangent(2)?.into_owned();
    let group = heads / kv_heads;
    let mut w = Vec::with_capacity(ctx);
    let mut gw = Vec::with_capacity(ctx);
    for t in 0..t_len {
        let p = pos + t;
        for h in 0..heads {
            let g = h / group;
            let qo = t * qw + h * d;
            let qrow = &qv[qo..qo + d];
            let grow = &go[qo..qo + d];
            w.clear();
            for j in 0..=p {
                let krow = &kcache[j * kvw + g * d..j * kvw + g * d + d];
                let dot: f64 = qrow.iter().zip(krow).map(|(a, b)| a * b).sum();
                w.push(dot * scale);
            }
            let m = w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = w.iter().map(|s| exp(s - m)).sum();
            for s in w.iter_mut() {
                *s = exp(*s - m) / sum;
            }
            gw.clear();
            for (j, &wj) in w.iter().enumerate() {
                let vo = j * kvw + g * d;
                gw.push(
                    grow.iter()
                        .zip(&vcache[vo..vo + d])
                        .map(|(a, b)| a * b)
                        .sum::<f64>(),
                );
                for c in 0..d {
                    gv[vo + c] += wj * grow[c];
                }
            }
            let mix: f64 = w.iter().zip(&gw).map(|(a, b)| a * b).sum();
            for (j, (&wj, &gwj)) in w.iter().zip(&gw).enumerate() {
                let gs = wj * (gwj - mix) * scale;
                let ko = j * kvw + g * d;
                for c in 0..d {
                    gq[qo + c] += gs * kcache[ko + c];
                    gk[ko + c] += gs * qrow[c];
                }
            }
        }
    }
    let rows = pos * kvw..(pos + t_len) * kvw;
    let g_knew = gk[rows.clone()].to_vec();
    let g_vnew = gv[rows.clone()].to_vec();
    gk[rows.clone()].fill(0.0);
    gv[rows].fill(0.0);
    Ok(vec![
        Some(gq),
        Some(g_knew),
        Some(g_vnew),
        Some(gk),
        Some(gv),
        None,
    ])
}
