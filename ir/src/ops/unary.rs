//! Elementwise unary ops: `nn.neg`, `nn.sqrt`, `nn.reciprocal`, `nn.abs`, `nn.round`, `nn.relu`,
//! `nn.relu2`, `nn.silu`, `nn.sigmoid`, `nn.tanh`, `nn.erf`, `nn.exp`.
//!
//! Syntax: `%y = nn.relu2 %x : tensor<Tx6912xf32>`.
//!
//! Math (per element): neg `-x`; sqrt `√x`; reciprocal `1/x`; abs `|x|`; round: nearest integer with
//! ties to even (`round(2.5) = 2`, as torch, numpy and ONNX do); relu `max(x, 0)`; relu2 `max(x, 0)²`
//! (BitNet's squared ReLU); silu `x·σ(x)`; sigmoid `σ(x) = 1/(1+e^-x)`; tanh; erf; exp.
//! The result has the operand's type. `neg`, `abs` and `relu` also take integers (wrapping, as ONNX);
//! everything else needs a float. Floats compute in f64 and round once to the element type (exact
//! IEEE results for neg, abs, sqrt, reciprocal and round on f32).

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, require_float};
use crate::tensor::Data;
use crate::types::TensorType;
use bitnet_numerics::exp;

/// The members of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// `√x`.
    Sqrt,
    /// `1/x`.
    Reciprocal,
    /// `|x|`.
    Abs,
    /// Round half to even.
    Round,
    /// `max(x, 0)`.
    Relu,
    /// `max(x, 0)²`.
    Relu2,
    /// `x·σ(x)`.
    Silu,
    /// `1/(1+e^-x)`.
    Sigmoid,
    /// `tanh x`.
    Tanh,
    /// The error function.
    Erf,
    /// `e^x`.
    Exp,
}

/// The spec of one member.
pub fn spec(op: UnaryOp) -> OpSpec {
    let name = match op {
        UnaryOp::Neg => "nn.neg",
        UnaryOp::Sqrt => "nn.sqrt",
        UnaryOp::Reciprocal => "nn.reciprocal",
        UnaryOp::Abs => "nn.abs",
        UnaryOp::Round => "nn.round",
        UnaryOp::Relu => "nn.relu",
        UnaryOp::Relu2 => "nn.relu2",
        UnaryOp::Silu => "nn.silu",
        UnaryOp::Sigmoid => "nn.sigmoid",
        UnaryOp::Tanh => "nn.tanh",
        UnaryOp::Erf => "nn.erf",
        UnaryOp::Exp => "nn.exp",
    };
    OpSpec {
        name,
        operands: Arity::Exactly(1),
        results: 1,
        attrs: &[],
    }
}

fn takes_integers(op: UnaryOp) -> bool {
    matches!(op, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu)
}

/// Type rule.
pub fn infer(op: UnaryOp, cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let x = operand(cx, 0)?;
    if takes_integers(op) {
        if !(x.elem.is_int() || x.elem.is_float()) {
            return Err(format!(
                "the operand must be numeric (float or integer), found {x}"
            ));
        }
    } else {
        require_float("the operand", &x)?;
    }
    Ok(vec![x])
}

/// `x·σ(x)` in f64: `nn.silu`, and the gate of `bit.silu_mul`, which must round the same way.
pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}

/// `1/(1+e^-x)`, written so that large |x| neither overflows nor loses the tail.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + exp(-x))
    } else {
        let e = exp(x);
        e / (1.0 + e)
    }
}

fn apply(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Round => x.round_ties_even(),
        // `f64::max` would turn NaN into 0; torch and numpy keep NaN.
        UnaryOp::Relu => {
            if x.is_nan() {
                x
            } else {
                x.max(0.0)
            }
        }
        UnaryOp::Relu2 => {
            let r = if x.is_nan() { x } else { x.max(0.0) };
            r * r
        }
        UnaryOp::Silu => silu(x),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Erf => libm::erf(x),
        UnaryOp::Exp => exp(x),
    }
}

/// Integer semantics (wrapping, as ONNX); `None` for the float-only members.
fn apply_int(op: UnaryOp, v: i64) -> Option<i64> {
    match op {
        UnaryOp::Neg => Some(v.wrapping_neg()),
        UnaryOp::Abs => Some(v.wrapping_abs()),
        UnaryOp::Relu => Some(v.max(0)),
        UnaryOp::Sqrt
        | UnaryOp::Reciprocal
        | UnaryOp::Round
        | UnaryOp::Relu2
        | UnaryOp::Silu
        | UnaryOp::Sigmoid
        | UnaryOp::Tanh
        | UnaryOp::Erf
        | UnaryOp::Exp => None,
    }
}

/// Reference evaluation.
pub fn eval(op: UnaryOp, cx: &EvalCtx) -> EvalResult {
    let x = cx.input(0)?;
    let elem = x.elem();
    let data = if elem.is_float() {
        Data::from_f64(
            elem,
            x.data.to_f64().into_iter().map(|v| apply(op, v)).collect(),
        )
    } else {
        let v = x
            .data
            .to_i64()
            .into_iter()
            .map(|v| apply_int(op, v))
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| format!("{} needs a float operand", spec(op).name))?;
        Data::from_i64(elem, v)
    };
    one(&x.shape, data)
}

/// The derivative of `op` at `x`, where `y = op(x)`. Round's is 0 (it is piecewise constant: the
/// straight-through estimator of quantization-aware training is stated in the graph with
/// `nn.stop_gradient`, not hidden here); abs and relu take 0 at 0, as torch does.
fn derivative(op: UnaryOp, x: f64, y: f64) -> f64 {
    match op {
        UnaryOp::Neg => -1.0,
        UnaryOp::Sqrt => 0.5 / y,
        UnaryOp::Reciprocal => -y * y,
        UnaryOp::Abs => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        UnaryOp::Round => 0.0,
        UnaryOp::Relu => f64::from(u8::from(x > 0.0)),
        UnaryOp::Relu2 => 2.0 * x.max(0.0),
        UnaryOp::Silu => {
            let s = sigmoid(x);
            s * (1.0 + x * (1.0 - s))
        }
        UnaryOp::Sigmoid => {
            let s = sigmoid(x);
            s * (1.0 - s)
        }
        UnaryOp::Tanh => {
            let t = x.tanh();
            1.0 - t * t
        }
        UnaryOp::Erf => std::f64::consts::FRAC_2_SQRT_PI * exp(-x * x),
        UnaryOp::Exp => exp(x),
    }
}

/// Gradient rule: `g · op'(x)` elementwise (see `derivative`); none for integer operands.
pub fn vjp(op: UnaryOp, cx: &super::VjpCtx) -> super::VjpResult {
    let x = cx.input(0)?;
    if !x.elem().is_float() {
        return Ok(vec![None]);
    }
    let g = cx.cotangent(0)?;
    let xs = x.data.to_f64();
    let gx = xs
        .iter()
        .zip(g.iter())
        .map(|(&xv, &gv)| gv * derivative(op, xv, apply(op, xv)))
        .collect();
    Ok(vec![Some(gx)])
}
