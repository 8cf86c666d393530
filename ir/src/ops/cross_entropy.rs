//! `nn.cross_entropy`: the mean next-token cross-entropy of logits against target ids, the loss of
//! language-model training.
//!
//! Syntax: `%loss = nn.cross_entropy %logits, %targets : tensor<f32>` with `logits` `[T, V]` float and
//! `targets` `[T]` i32 or i64, each in `0..V`.
//!
//! Math, in f64 and rounded once to the logits' element type: `loss = (1/T) Σ_t (logsumexp(z_t) −
//! z_t[y_t])`, the log-sum-exp taken after subtracting the row's maximum (as torch's
//! `F.cross_entropy` with its default mean reduction). A target outside `0..V` is an error at run time.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, require_float};
use crate::tensor::Data;
use crate::types::{ElemType, TensorType};
use bitnet_numerics::exp;

/// `nn.cross_entropy`.
pub const SPEC: OpSpec = OpSpec {
    name: "nn.cross_entropy",
    operands: Arity::Exactly(2),
    results: 1,
    attrs: &[],
};

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let z = operand(cx, 0)?;
    let y = operand(cx, 1)?;
    require_float("the logits", &z)?;
    if z.rank() != 2 {
        return Err(format!("the logits must be [T, V], found {z}"));
    }
    if !matches!(y.elem, ElemType::I32 | ElemType::I64) || y.rank() != 1 {
        return Err(format!("the targets must be [T] of i32 or i64, found {y}"));
    }
    if y.dims[0] != z.dims[0] {
        return Err(format!(
            "the logits {z} and the targets {y} must have the same number of tokens"
        ));
    }
    Ok(vec![TensorType::new(Vec::new(), z.elem)])
}

/// Per row: the probabilities (softmax in f64) and the row's loss; errors name a bad target.
fn rows(cx_logits: &[f64], targets: &[i64], v: usize) -> Result<(Vec<f64>, f64), String> {
    let mut probs = Vec::with_capacity(cx_logits.len());
    let mut total = 0f64;
    for (t, (row, &y)) in cx_logits.chunks(v.max(1)).zip(targets).enumerate() {
        let y = usize::try_from(y)
            .ok()
            .filter(|&y| y < v)
            .ok_or_else(|| format!("target {y} of token {t} is outside the vocabulary 0..{v}"))?;
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|z| exp(z - m)).sum();
        total += sum.ln() + m - row[y];
        probs.extend(row.iter().map(|z| exp(z - m) / sum));
    }
    Ok((probs, total))
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let (z, y) = (cx.input(0)?, cx.input(1)?);
    let v = z.shape[1];
    let (_, total) = rows(&z.data.to_f64(), &y.data.to_i64(), v)?;
    let t = z.shape[0];
    let loss = if t == 0 { f64::NAN } else { total / t as f64 };
    one(&[], Data::from_f64(z.elem(), vec![loss]))
}

/// Gradient rule: `gz[t] = g · (softmax(z_t) − onehot(y_t)) / T`; none for the targets.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    let (z, y) = (cx.input(0)?, cx.input(1)?);
    let (t, v) = (z.shape[0], z.shape[1]);
    let targets = y.data.to_i64();
    let (mut gz, _) = rows(&z.data.to_f64(), &targets, v)?;
    let g = cx.cotangent(0)?.first().copied().unwrap_or(0.0) / t.max(1) as f64;
    for (row, &yt) in gz.chunks_mut(v.max(1)).zip(&targets) {
        if let Some(p) = row.get_mut(yt as usize) {
            *p -= 1.0;
        }
        for p in row.iter_mut() {
            *p *= g;
        }
    }
    Ok(vec![Some(gz), None])
}
