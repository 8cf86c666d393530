//! `bit.relu2_mul`: BitNet's gated FFN activation, squared ReLU of the gate times the up projection,
//! in one elementwise op.
//!
//! Syntax: `%h = bit.relu2_mul %g, %u : tensor<Tx6912xf32>`.
//!
//! Math: exactly `nn.mul(nn.relu2(g), u)` with its roundings, so fusing never changes a result:
//! `r = max(g, 0)²` computed in f64 and rounded to the element type (NaN stays NaN), then
//! `h = r · u[broadcast]` computed in f64 and rounded once to the element type. On f32 both steps are
//! the IEEE f32 results (`max(g, 0)²` of an f32 is exact in f64).
//! Type rule: `g` and `u` have the same float element type and numpy-broadcast shapes; the result has
//! the broadcast shape, as `nn.mul`.

use super::{
    Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, require_float, result_shape,
};
use crate::shape::{broadcast, broadcast_index_map};
use crate::tensor::Data;
use crate::types::TensorType;

/// `bit.relu2_mul`.
pub const SPEC: OpSpec = OpSpec {
    name: "bit.relu2_mul",
    operands: Arity::Exactly(2),
    results: 1,
    attrs: &[],
};

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let g = operand(cx, 0)?;
    let u = operand(cx, 1)?;
    require_float("the gate", &g)?;
    if u.elem != g.elem {
        return Err(format!("operand element types differ: {g} and {u}"));
    }
    let dims = broadcast(&g.dims, &u.dims)?;
    Ok(vec![TensorType::new(dims, g.elem)])
}

/// `max(x, 0)²` in f64, keeping NaN (as `nn.relu2`).
pub fn relu2(x: f64) -> f64 {
    let r = if x.is_nan() { x } else { x.max(0.0) };
    r * r
}

/// Reference evaluation.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let g = cx.input(0)?;
    let u = cx.input(1)?;
    let elem = g.elem();
    let out_shape = result_shape(cx, 0)?;
    // The squared gate, rounded to the element type as the unfused `nn.relu2` stores it.
    let r = Data::from_f64(elem, g.data.to_f64().into_iter().map(relu2).collect()).to_f64();
    let uv = u.data.to_f64();
    let mg = broadcast_index_map(out_shape, &g.shape);
    let mu = broadcast_index_map(out_shape, &u.shape);
    let v: Vec<f64> = mg.iter().zip(&mu).map(|(&i, &j)| r[i] * uv[j]).collect();
    one(out_shape, Data::from_f64(elem, v))
}

/// Gradient rule, as `nn.mul(nn.relu2(g), u)`: `gg = go·u·2·max(g, 0)`, `gu = go·max(g, 0)²`, each
/// summed to its operand's shape.
pub fn vjp(cx: &super::VjpCtx) -> super::VjpResult {
    use super::grad::unbroadcast;
    let (g, u) = (cx.input(0)?, cx.input(1)?);
    let out = cx.output(0)?;
    let go = cx.cotangent(0)?;
    let mg = broadcast_index_map(&out.shape, &g.shape);
    let mu = broadcast_index_map(&out.shape, &u.shape);
    let (gv, uv) = (g.data.to_f64(), u.data.to_f64());
    let (mut dg, mut du) = (vec![0f64; go.len()], vec![0f64; go.len()]);
    for (k, (&i, &j)) in mg.iter().zip(&mu).enumerate() {
        dg[k] = go[k] * uv[j] * 2.0 * gv[i].max(0.0);
        du[k] = go[k] * relu2(gv[i]);
    }
    Ok(vec![
        Some(unbroadcast(&dg, &out.shape, &g.shape)),
        Some(unbroadcast(&du, &out.shape, &u.shape)),
    ])
}
