//! `nn.rope`: rotary position embedding, NeoX / `rotate_half` pairing (HF Llama and BitNet).
//!
//! Syntax: `%q2 = nn.rope %q, %pos {head_dim = 128, theta = 500000.0} : tensor<Tx2560xf32>`.
//!
//! Operands: `x` `[T, H·d]` (token t of head h at columns `h·d .. h·d+d`) and `pos`, a `tensor<i64>`
//! scalar: token t sits at absolute position `p = pos + t`.
//!
//! Math (HF `default` rope, in f32): `inv_freq[i] = 1 / theta^(2i/d)` for `i < d/2`;
//! `a = p · inv_freq[i]`; element `i` pairs with `i + d/2`:
//! `y[i] = x[i]·cos a − x[i+d/2]·sin a`, `y[i+d/2] = x[i+d/2]·cos a + x[i]·sin a`.
//! `d` must be even and divide the row width.
//!
//! Scaled rope (Llama 3's `llama3` rope type and the like): the optional attribute `inv_freq`, a list
//! of `d/2` positive finite f32 values, replaces the frequencies computed from `theta`
//! (`{head_dim = 16, inv_freq = [1.0, 0.079403013, …], theta = 500000.0}`); the importer computes them
//! as the model's reference does, and `theta` stays as the base they were derived from.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, require_float};
use crate::attr::{Attr, AttrKind, AttrSpec, Attrs};
use crate::tensor::Data;
use crate::types::{ElemType, TensorType};

/// `nn.rope`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.rope",
    operands: Arity::Exactly(2),
    results: 1,
    attrs: &[
        AttrSpec::req("head_dim", AttrKind::Int),
        AttrSpec::req("theta", AttrKind::Float),
        AttrSpec::opt("inv_freq", AttrKind::Numbers),
    ],
};

/// The frequencies `inv_freq[i]`, `i < head_dim/2`, of a rope with attributes `attrs`: the
/// `inv_freq` attribute where it is present (each value narrowed to f32), else `1 / theta^(2i/d)`
/// in f32 with `theta` narrowed to f32. Backends build their tables from this same function.
pub fn inv_freq(attrs: &Attrs) -> Vec<f32> {
    let d = attrs.int_or("head_dim", 0).max(0) as usize;
    match attrs.get("inv_freq") {
        Some(Attr::Floats(v)) => v.iter().map(|&f| f as f32).collect(),
        Some(Attr::Ints(v)) => v.iter().map(|&f| f as f32).collect(),
        _ => default_inv_freq(attrs.float_or("theta", 10000.0), d),
    }
}

/// The default rope's frequencies as HF computes them: `1 / theta^(2i/d)` for `i < d/2`, in f32
/// with `theta` and the exponent `2i/d` narrowed to f32 first.
pub fn default_inv_freq(theta: f64, head_dim: usize) -> Vec<f32> {
    let theta = theta as f32;
    (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// Checks the optional `inv_freq` list: `half` values, each a positive finite f32.
fn check_inv_freq(attrs: &Attrs, half: usize) -> Result<(), String> {
    let values: Vec<f64> = match attrs.get("inv_freq") {
        None => return Ok(()),
        Some(Attr::Floats(v)) => v.clone(),
        Some(Attr::Ints(v)) => v.iter().map(|&i| i as f64).collect(),
        Some(_) => return Err("inv_freq must be a list of numbers".into()),
    };
    if values.len() != half {
        return Err(format!(
            "inv_freq has {} values; head_dim/2 = {half} are needed",
            values.len()
        ));
    }
    if let Some(bad) = values
        .iter()
        .find(|&&f| !(f > 0.0 && (f as f32).is_finite() && (f as f32) > 0.0))
    {
        return Err(format!(
            "inv_freq values must be positive and finite in f32, found {bad:?}"
        ));
    }
    Ok(())
}

/// Checks that `pos` is a `tensor<i64>` scalar.
pub(crate) fn check_pos(pos: &TensorType) -> Result<(), String> {
    if pos.elem == ElemType::I64 && pos.rank() == 0 {
        Ok(())
    } else {
        Err(format!(
            "the position must be a scalar tensor<i64>, found {pos}"
        ))
    }
}

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    require_float("the input", &x)?;
    check_pos(&operand(cx, 1)?)?;
    if x.rank() != 2 {
        return Err(format!("the input must be [T, heads*head_dim], found {x}"));
    }
    let d = cx.attrs.int_or("head_dim", 0);
    if d <= 0 || d % 2 != 0 {
        return Err(format!(
            "head_dim must be a positive even number, found {d}"
        ));
    }
    match x.dims[1].as_static() {
        Some(w) if w % d as u64 == 0 => {}
        _ => {
            return Err(format!(
                "the row width of {x} must be a static multiple of head_dim {d}"
            ));
        }
    }
    if cx
        .attrs
        .float("theta")
        .is_none_or(|t| t.is_nan() || t <= 0.0)
    {
        return Err("theta must be positive".into());
    }
    check_inv_freq(cx.attrs, d as usize / 2)?;
    Ok(vec![x])
}

/// The scalar position operand as an index.
pub(crate) fn position(cx: &EvalCtx, i: usize) -> Result<usize, String> {
    position_of(cx.input(i)?)
}

/// A scalar position tensor as an index (an error for an empty or negative one).
pub fn position_of(t: &crate::tensor::Tensor) -> Result<usize, String> {
    let p = t
        .data
        .to_i64()
        .first()
        .copied()
        .ok_or("empty position tensor")?;
    usize::try_from(p).map_err(|_| format!("the position is negative ({p})"))
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    let pos = position(cx, 1)?;
    let d = cx.attrs.int_or("head_dim", 0) as usize;
    let (t_len, width) = (x.shape[0], x.shape[1]);
    let half = d / 2;
    let inv_freq = inv_freq(cx.attrs);
    if inv_freq.len() != half {
        return Err(format!(
            "inv_freq has {} values for head_dim {d}",
            inv_freq.len()
        ));
    }
    let v = x.data.to_f32();
    let mut out = v.clone();
    for t in 0..t_len {
        let p = (pos + t) as f32;
        for h in 0..width / d {
            let base = t * width + h * d;
            for i in 0..half {
                let a = p * inv_freq[i];
                let (s, c) = (a.sin(), a.cos());
                let (x0, x1) = (v[base + i], v[base + i + half]);
                out[base + i] = x0 * c - x1 * s;
                out[base + i + half] = x1 * c + x0 * s;
            }
        }
    }
    one(&x.shape, Data::from_f32(x.elem(), out))
}

/// Gradient rule: the rotation is linear in `x`, so the cotangent is rotated back by the same angles
/// (the transpose of each 2×2 rotation): `gx[i] = g[i]·cos a + g[i+d/2]·sin a`,
/// `gx[i+d/2] = g[i+d/2]·cos a − g[i]·sin a`. None for the position.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let x = cx.input(0)?;
    let pos = position_of(cx.input(1)?)?;
    let d = cx.attrs.int_or("head_dim", 0) as usize;
    let (t_len, width) = (x.shape[0], x.shape[1]);
    let half = d / 2;
    let inv_freq = inv_freq(cx.attrs);
    if inv_freq.len() != half || d == 0 {
        return Err(format!(
            "inv_freq has {} values for head_dim {d}",
            inv_freq.len()
        ));
    }
    let g = cx.cotangent(0)?;
    let mut gx = g.to_vec();
    for t in 0..t_len {
        let p = (pos + t) as f32;
        for h in 0..width / d {
            let base = t * width + h * d;
            for i in 0..half {
                let a = p * inv_freq[i];
                let (s, c) = (f64::from(a.sin()), f64::from(a.cos()));
                let (g0, g1) = (g[base + i], g[base + i + half]);
                gx[base + i] = g0 * c + g1 * s;
                gx[base + i + half] = g1 * c - g0 * s;
            }
        }
    }
    Ok(vec![Some(gx), None])
}
