//! Elementwise binary ops with numpy broadcasting: `nn.add`, `nn.sub`, `nn.mul`, `nn.div`, `nn.pow`,
//! `nn.max`, `nn.min`, `nn.equal`.
//!
//! Syntax: `%z = nn.add %x, %y : tensor<Tx128xf32>`.
//!
//! Math: `z[i] = x[bx(i)] ∘ y[by(i)]` where `bx`, `by` are the numpy broadcast maps.
//! Types: both operands have the same element type, except `nn.pow`, whose exponent may be any
//! numeric type (ONNX Pow); the result has the first operand's element type (`bool` for `nn.equal`).
//! Floats compute in f64 and round once to the element type, which for +, -, ×, ÷ gives exactly the
//! IEEE f32 result on f32 operands. Integers compute in i64 and wrap to the
//! element type, as ONNX and numpy do; integer division truncates toward zero and division by zero
//! is an error. `nn.max`/`nn.min` propagate NaN.

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, result_shape};
use crate::shape::{broadcast, broadcast_index_map};
use crate::tensor::Data;
use crate::types::{ElemType, TensorType};

/// The members of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `x + y`.
    Add,
    /// `x - y`.
    Sub,
    /// `x * y`.
    Mul,
    /// `x / y`.
    Div,
    /// `x ^ y`.
    Pow,
    /// `max(x, y)`.
    Max,
    /// `min(x, y)`.
    Min,
    /// `x == y` (bool result).
    Equal,
}

/// The spec of one member.
pub fn spec(op: BinaryOp) -> OpSpec {
    let name = match op {
        BinaryOp::Add => "nn.add",
        BinaryOp::Sub => "nn.sub",
        BinaryOp::Mul => "nn.mul",
        BinaryOp::Div => "nn.div",
        BinaryOp::Pow => "nn.pow",
        BinaryOp::Max => "nn.max",
        BinaryOp::Min => "nn.min",
        BinaryOp::Equal => "nn.equal",
    };
    OpSpec {
        name,
        operands: Arity::Exactly(2),
        results: 1,
        attrs: &[],
    }
}

/// Type rule.
pub fn infer(op: BinaryOp, cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let a = operand(cx, 0)?;
    let b = operand(cx, 1)?;
    let numeric = |t: &TensorType| t.elem.is_float() || t.elem.is_int();
    if !numeric(&a) || !numeric(&b) {
        return Err(format!(
            "operands must be numeric (float or integer), found {a} and {b}"
        ));
    }
    if op != BinaryOp::Pow && a.elem != b.elem {
        return Err(format!("operand element types differ: {a} and {b}"));
    }
    let dims = broadcast(&a.dims, &b.dims)?;
    let elem = if op == BinaryOp::Equal {
        ElemType::Bool
    } else {
        a.elem
    };
    Ok(vec![TensorType::new(dims, elem)])
}

fn apply_f64(op: BinaryOp, x: f64, y: f64) -> f64 {
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Pow => x.powf(y),
        BinaryOp::Max => {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.max(y)
            }
        }
        BinaryOp::Min => {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.min(y)
            }
        }
        BinaryOp::Equal => f64::from(u8::from(x == y)),
    }
}

fn apply_i64(op: BinaryOp, x: i64, y: i64) -> Result<i64, String> {
    Ok(match op {
        BinaryOp::Add => x.wrapping_add(y),
        BinaryOp::Sub => x.wrapping_sub(y),
        BinaryOp::Mul => x.wrapping_mul(y),
        BinaryOp::Div => {
            if y == 0 {
                return Err("integer division by zero".into());
            }
            x.wrapping_div(y)
        }
        BinaryOp::Pow => {
            if y < 0 {
                return Err(format!("integer power with negative exponent {y}"));
            }
            // Square and multiply with wrapping, exact modulo 2^64 like numpy.
            let (mut base, mut e, mut acc) = (x, y as u64, 1i64);
            while e > 0 {
                if e & 1 == 1 {
                    acc = acc.wrapping_mul(base);
                }
                base = base.wrapping_mul(base);
                e >>= 1;
            }
            acc
        }
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        BinaryOp::Equal => i64::from(x == y),
    })
}

/// Reference evaluation.
pub fn eval(op: BinaryOp, cx: &EvalCtx) -> EvalResult {
    let a = cx.input(0)?;
    let b = cx.input(1)?;
    let out_shape = result_shape(cx, 0)?;
    let ma = broadcast_index_map(out_shape, &a.shape);
    let mb = broadcast_index_map(out_shape, &b.shape);
    let elem = a.elem();
    let out_elem = if op == BinaryOp::Equal {
        ElemType::Bool
    } else {
        elem
    };
    // Floats compute in f64; so does pow with an integer base and a float exponent (the result then
    // converts like a cast).
    let data = if elem.is_float() || b.elem().is_float() {
        let (x, y) = (a.data.to_f64(), b.data.to_f64());
        let v: Vec<f64> = ma
            .iter()
            .zip(&mb)
            .map(|(&i, &j)| apply_f64(op, x[i], y[j]))
            .collect();
        Data::from_f64(out_elem, v)
    } else {
        let (x, y) = (a.data.to_i64(), b.data.to_i64());
        let v = ma
            .iter()
            .zip(&mb)
            .map(|(&i, &j)| apply_i64(op, x[i], y[j]))
            .collect::<Result<Vec<i64>, String>>()?;
        Data::from_i64(out_elem, v)
    };
    one(out_shape, data)
}

/// Gradient rule: `∂(x+y) = (g, g)`, `∂(x−y) = (g, −g)`, `∂(x·y) = (g·y, g·x)`,
/// `∂(x/y) = (g/y, −g·x/y²)`, `∂(xʸ) = (g·y·xʸ⁻¹, g·xʸ·ln x)` (no gradient to an integer exponent);
/// max and min send `g` to the operand they chose, half to each on a tie (as torch does); equal has
/// none. Broadcast operands get the cotangent summed over the broadcast axes.
pub fn vjp(op: BinaryOp, cx: &super::VjpCtx) -> super::VjpResult {
    use super::grad::{if_float, unbroadcast};
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if op == BinaryOp::Equal || !a.elem().is_float() {
        return Ok(vec![None, None]);
    }
    let out = cx.output(0)?;
    let g = cx.cotangent(0)?;
    let ma = broadcast_index_map(&out.shape, &a.shape);
    let mb = broadcast_index_map(&out.shape, &b.shape);
    let (x, y, z) = (a.data.to_f64(), b.data.to_f64(), out.data.to_f64());
    let n = g.len();
    let (mut gx, mut gy) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (k, (&i, &j)) in ma.iter().zip(&mb).enumerate() {
        let (xv, yv, gv) = (x[i], y[j], g[k]);
        let (dx, dy) = match op {
            BinaryOp::Add => (gv, gv),
            BinaryOp::Sub => (gv, -gv),
            BinaryOp::Mul => (gv * yv, gv * xv),
            BinaryOp::Div => (gv / yv, -gv * xv / (yv * yv)),
            BinaryOp::Pow => (gv * yv * xv.powf(yv - 1.0), gv * z[k] * xv.ln()),
            BinaryOp::Max | BinaryOp::Min => {
                let x_wins = if op == BinaryOp::Max {
                    xv > yv
                } else {
                    xv < yv
                };
                if xv == yv {
                    (gv / 2.0, gv / 2.0)
                } else if x_wins {
                    (gv, 0.0)
                } else {
                    (0.0, gv)
                }
            }
            BinaryOp::Equal => (0.0, 0.0),
        };
        gx.push(dx);
        gy.push(dy);
    }
    Ok(vec![
        if_float(a, unbroadcast(&gx, &out.shape, &a.shape)),
        if_float(b, unbroadcast(&gy, &out.shape, &b.shape)),
    ])
}
