//! Node conversion: the supported op set, the dispatch, and the elementwise ops (arithmetic,
//! comparisons, `Clip`, `Cast`, `Where`, `IsNaN`, `Softmax`, `Identity`, `Constant`).
//!
//! Each converter returns one handle per node output (`None` for an output it cannot produce).
//! The model's math is emitted as written; only ONNX ops without an IR counterpart are decomposed
//! (`Gemm`, 1-D `MatMul`, `IsNaN`, dynamic `Clip` bounds, bool `Equal`/`ReduceMax`).

use super::math_ops;
use super::node::NodeCx;
use super::shape_ops;
use super::tensor_proto;
use super::values::{H, Importer};
use bitnet_ir::attr::{Attr, Attrs};
use bitnet_ir::{Data, ElemType, OpKind, Tensor};

/// Every ONNX op (default domain) the importer converts.
pub(crate) const SUPPORTED: &[&str] = &[
    "Abs",
    "Add",
    "Cast",
    "CastLike",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Div",
    "Dropout",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Gather",
    "Gemm",
    "Identity",
    "IsNaN",
    "LayerNormalization",
    "MatMul",
    "Max",
    "Min",
    "Mul",
    "Neg",
    "Pow",
    "RMSNormalization",
    "Reciprocal",
    "ReduceMax",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Round",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// The input slots of `op` whose values must be known at import (they become IR attributes).
pub(crate) fn constant_slots(op: &str) -> &'static [usize] {
    match op {
        "Reshape" | "Expand" | "Unsqueeze" | "Squeeze" | "ReduceMean" | "ReduceMax"
        | "ReduceSum" => &[1],
        "Slice" => &[1, 2, 3, 4],
        "ConstantOfShape" => &[0],
        _ => &[],
    }
}

/// Converts one node.
pub(crate) fn convert(imp: &mut Importer, n: &NodeCx) -> Result<Vec<Option<H>>, String> {
    let one = |h: H| Ok(vec![Some(h)]);
    match n.op {
        "Add" => one(binary(imp, n, OpKind::Add)?),
        "Sub" => one(binary(imp, n, OpKind::Sub)?),
        "Mul" => one(binary(imp, n, OpKind::Mul)?),
        "Div" => one(binary(imp, n, OpKind::Div)?),
        "Pow" => one(binary(imp, n, OpKind::Pow)?),
        "Equal" => one(equal(imp, n)?),
        "Max" => one(variadic(imp, n, OpKind::Max)?),
        "Min" => one(variadic(imp, n, OpKind::Min)?),
        "Neg" => one(unary(imp, n, OpKind::Neg)?),
        "Abs" => one(unary(imp, n, OpKind::Abs)?),
        "Relu" => one(unary(imp, n, OpKind::Relu)?),
        "Sqrt" => one(unary(imp, n, OpKind::Sqrt)?),
        "Reciprocal" => one(unary(imp, n, OpKind::Reciprocal)?),
        "Round" => one(unary(imp, n, OpKind::Round)?),
        "Sigmoid" => one(unary(imp, n, OpKind::Sigmoid)?),
        "Tanh" => one(unary(imp, n, OpKind::Tanh)?),
        "Erf" => one(unary(imp, n, OpKind::Erf)?),
        "Exp" => one(unary(imp, n, OpKind::Exp)?),
        "Identity" => one(n.input(0)?),
        // Inference: Dropout passes its input through; its mask output is not supported.
        "Dropout" => {
            if let Some(h) = n.opt_input(2)
                && imp.constant(h, "the training_mode input")?.data.to_i64() != [0]
            {
                return Err("Dropout in training mode is not supported".into());
            }
            one(n.input(0)?)
        }
        "Clip" => one(clip(imp, n)?),
        "Cast" => {
            let to = tensor_proto::elem_type(n.required_int("to")? as i32)?;
            one(imp.cast(n.input(0)?, to)?)
        }
        "CastLike" => {
            let to = imp.ty(n.input(1)?).elem;
            one(imp.cast(n.input(0)?, to)?)
        }
        "Where" => {
            let ins = [n.input(0)?, n.input(1)?, n.input(2)?];
            one(imp.emit1(OpKind::Where, &ins, Attrs::new())?)
        }
        "IsNaN" => one(is_nan(imp, n.input(0)?)?),
        "Softmax" => {
            let attrs = Attrs::new().with("axis", Attr::Int(n.int("axis", -1)));
            one(imp.emit1(OpKind::Softmax, &[n.input(0)?], attrs)?)
        }
        "Constant" => one(constant(imp, n)?),
        "MatMul" => one(math_ops::matmul(imp, n.input(0)?, n.input(1)?)?),
        "Gemm" => one(math_ops::gemm(imp, n)?),
        "ReduceMean" => one(math_ops::reduce(imp, n, OpKind::ReduceMean)?),
        "ReduceMax" => one(math_ops::reduce(imp, n, OpKind::ReduceMax)?),
        "ReduceSum" => one(math_ops::reduce(imp, n, OpKind::ReduceSum)?),
        "LayerNormalization" => math_ops::layer_norm(imp, n),
        "RMSNormalization" => one(math_ops::rms_norm(imp, n)?),
        "Reshape" => one(shape_ops::reshape(imp, n)?),
        "Expand" => one(shape_ops::expand(imp, n)?),
        "Unsqueeze" => one(shape_ops::unsqueeze(imp, n)?),
        "Squeeze" => one(shape_ops::squeeze(imp, n)?),
        "Concat" => one(shape_ops::concat(imp, n)?),
        "Slice" => one(shape_ops::slice(imp, n)?),
        "Transpose" => one(shape_ops::transpose(imp, n)?),
        "Shape" => one(shape_ops::shape(imp, n)?),
        "ConstantOfShape" => one(shape_ops::constant_of_shape(imp, n)?),
        "Gather" => {
            let attrs = Attrs::new().with("axis", Attr::Int(n.int("axis", 0)));
            one(imp.emit1(OpKind::Gather, &[n.input(0)?, n.input(1)?], attrs)?)
        }
        other => Err(format!("unsupported op {other}")),
    }
}

fn unary(imp: &mut Importer, n: &NodeCx, kind: OpKind) -> Result<H, String> {
    imp.emit1(kind, &[n.input(0)?], Attrs::new())
}

fn binary(imp: &mut Importer, n: &NodeCx, kind: OpKind) -> Result<H, String> {
    imp.emit1(kind, &[n.input(0)?, n.input(1)?], Attrs::new())
}

/// `Max`/`Min` of one or more operands, folded left.
fn variadic(imp: &mut Importer, n: &NodeCx, kind: OpKind) -> Result<H, String> {
    let mut acc = n.input(0)?;
    for i in 1..n.inputs.len() {
        acc = imp.emit1(kind, &[acc, n.input(i)?], Attrs::new())?;
    }
    Ok(acc)
}

/// `Equal`; bool operands are compared as u8 (`nn.equal` takes numbers).
fn equal(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let (mut a, mut b) = (n.input(0)?, n.input(1)?);
    if imp.ty(a).elem == ElemType::Bool {
        a = imp.cast(a, ElemType::U8)?;
        b = imp.cast(b, ElemType::U8)?;
    }
    imp.emit1(OpKind::Equal, &[a, b], Attrs::new())
}

/// `IsNaN(x) = where(x == x, false, true)`: NaN is the only value not equal to itself.
fn is_nan(imp: &mut Importer, x: H) -> Result<H, String> {
    let eq = imp.emit1(OpKind::Equal, &[x, x], Attrs::new())?;
    let no = imp.scalar(0.0, ElemType::Bool);
    let yes = imp.scalar(1.0, ElemType::Bool);
    imp.emit1(OpKind::Where, &[eq, no, yes], Attrs::new())
}

/// The single value of a bound (a scalar or a one-element tensor).
fn scalar_value(t: &Tensor, what: &str) -> Result<f64, String> {
    match t.data.to_f64().as_slice() {
        [v] => Ok(*v),
        v => Err(format!("{what} must hold one value, found {}", v.len())),
    }
}

/// `Clip(x, min?, max?)`: `nn.clip` with attributes when the bounds are known at import, else
/// `nn.max`/`nn.min` with the run-time bounds (the same math, ONNX's `min(max(x, lo), hi)`).
fn clip(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let x = n.input(0)?;
    let (lo, hi) = (n.opt_input(1), n.opt_input(2));
    if [lo, hi].iter().flatten().all(|&h| imp.is_static(h)) {
        let bound = |h: Option<H>, what: &str| -> Result<Option<f64>, String> {
            h.map(|h| scalar_value(&imp.constant(h, what)?, what))
                .transpose()
        };
        let lo = bound(lo, "the min input")?;
        let hi = bound(hi, "the max input")?;
        let mut attrs = Attrs::new();
        // ONNX: when min > max every element becomes max.
        let lo = match (lo, hi) {
            (Some(l), Some(h)) if l > h => Some(h),
            _ => lo,
        };
        if let Some(l) = lo {
            attrs = attrs.with("min", Attr::Float(l));
        }
        if let Some(h) = hi {
            attrs = attrs.with("max", Attr::Float(h));
        }
        if attrs.is_empty() {
            return Ok(x);
        }
        return imp.emit1(OpKind::Clip, &[x], attrs);
    }
    let mut y = x;
    if let Some(l) = lo {
        y = imp.emit1(OpKind::Max, &[y, l], Attrs::new())?;
    }
    if let Some(h) = hi {
        y = imp.emit1(OpKind::Min, &[y, h], Attrs::new())?;
    }
    Ok(y)
}

/// `Constant`: a tensor (`value`) or one of the scalar and list forms.
fn constant(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let name = n.outputs.first().cloned();
    let t = if let Some(t) = n.tensor("value") {
        if t.data_location == Some(1) {
            return Err("a Constant with external data is not supported".into());
        }
        tensor_proto::decode(t, t.raw_data.as_deref())?
    } else if let Some(a) = n.attr("value_float") {
        tensor(vec![], Data::F32(vec![a.f.unwrap_or(0.0)]))?
    } else if let Some(a) = n.attr("value_floats") {
        tensor(vec![a.floats.len()], Data::F32(a.floats.clone()))?
    } else if let Some(a) = n.attr("value_int") {
        tensor(vec![], Data::I64(vec![a.i.unwrap_or(0)]))?
    } else if let Some(a) = n.attr("value_ints") {
        tensor(vec![a.ints.len()], Data::I64(a.ints.clone()))?
    } else {
        let kinds: Vec<&str> = n.attrs.iter().map(|a| a.name()).collect();
        return Err(format!(
            "Constant with attribute(s) {kinds:?} is not supported (value, value_float(s) and \
             value_int(s) are)"
        ));
    };
    Ok(imp.known_tensor(t, name))
}

fn tensor(shape: Vec<usize>, data: Data) -> Result<Tensor, String> {
    Tensor::new(shape, data).ok_or_else(|| "the value does not match its shape".into())
}
