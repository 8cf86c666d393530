//! Shape ops: `Reshape`, `Expand`, `Unsqueeze`, `Squeeze`, `Concat`, `Slice`, `Transpose`, `Shape`,
//! `ConstantOfShape`. Their shape-like inputs (target shapes, axes, slice bounds) must be known at
//! import and become IR attributes or declared result types; `Shape` is evaluated at import from the
//! static dimensions of its operand.

use super::node::NodeCx;
use super::tensor_proto;
use super::values::{H, Importer};
use bitnet_ir::attr::{Attr, Attrs};
use bitnet_ir::shape::broadcast;
use bitnet_ir::{Data, Dim, ElemType, OpKind, Tensor, TensorType};

/// The i64 values of a constant shape-like input.
fn ints_input(imp: &Importer, h: H, what: &str) -> Result<Vec<i64>, String> {
    let t = imp.constant(h, what)?;
    if !matches!(t.elem(), ElemType::I64 | ElemType::I32) || t.shape.len() > 1 {
        return Err(format!(
            "{what} must be a 1-D integer tensor, found {}",
            t.ty()
        ));
    }
    Ok(t.data.to_i64())
}

/// The dims `Reshape` gives `input` for the target `shape`: `0` copies the input's dim (unless
/// `allowzero`), `-1` takes what is left (a static quotient, or the one symbol not accounted for).
pub(crate) fn reshape_dims(
    input: &[Dim],
    shape: &[i64],
    allowzero: bool,
) -> Result<Vec<Dim>, String> {
    let mut dims = Vec::with_capacity(shape.len());
    let mut infer_at = None;
    for (i, &s) in shape.iter().enumerate() {
        dims.push(match s {
            0 if !allowzero => input.get(i).cloned().ok_or_else(|| {
                format!(
                    "shape {shape:?}: a 0 at axis {i} but the input has rank {}",
                    input.len()
                )
            })?,
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                Dim::Static(1)
            }
            s if s >= 0 => Dim::Static(s as u64),
            s => return Err(format!("shape {shape:?}: bad entry {s}")),
        });
    }
    let Some(at) = infer_at else {
        return Ok(dims);
    };
    let split = |d: &[Dim]| {
        let mut prod = 1u64;
        let mut syms: Vec<String> = Vec::new();
        for x in d {
            match x {
                Dim::Static(n) => prod = prod.saturating_mul(*n),
                Dim::Sym(s) => syms.push(s.clone()),
            }
        }
        (prod, syms)
    };
    let (p_in, mut s_in) = split(input);
    let (p_out, s_out) = split(&dims);
    for s in &s_out {
        let k = s_in
            .iter()
            .position(|x| x == s)
            .ok_or_else(|| format!("shape {shape:?}: cannot infer -1 for input dims {input:?}"))?;
        s_in.remove(k);
    }
    let cannot = || format!("shape {shape:?}: cannot infer -1 for input dims {input:?}");
    dims[at] = match s_in.as_slice() {
        [] if p_out > 0 && p_in % p_out == 0 => Dim::Static(p_in / p_out),
        [sym] if p_in == p_out => Dim::Sym(sym.clone()),
        _ => return Err(cannot()),
    };
    Ok(dims)
}

pub(crate) fn reshape(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let x = n.input(0)?;
    let shape = ints_input(imp, n.input(1)?, "the shape input")?;
    let ty = imp.ty(x);
    let dims = reshape_dims(&ty.dims, &shape, n.int("allowzero", 0) != 0)?;
    if dims == ty.dims {
        return Ok(x);
    }
    imp.emit(
        OpKind::Reshape,
        &[x],
        Attrs::new(),
        Some(TensorType::new(dims, ty.elem)),
    )
}

/// `Expand`: numpy-broadcasts the input and the target shape together.
pub(crate) fn expand(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let x = n.input(0)?;
    let shape = ints_input(imp, n.input(1)?, "the shape input")?;
    let target: Vec<Dim> = shape
        .iter()
        .map(|&s| u64::try_from(s).map(Dim::Static))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("the shape {shape:?} has a negative entry"))?;
    let ty = imp.ty(x);
    let dims = broadcast(&ty.dims, &target)?;
    if dims == ty.dims {
        return Ok(x);
    }
    imp.emit(
        OpKind::Expand,
        &[x],
        Attrs::new(),
        Some(TensorType::new(dims, ty.elem)),
    )
}

/// The axes of `Unsqueeze`/`Squeeze`: the second input (opset 13), or the older attribute.
fn axes(imp: &Importer, n: &NodeCx) -> Result<Option<Vec<i64>>, String> {
    match n.opt_input(1) {
        Some(h) => Ok(Some(ints_input(imp, h, "the axes input")?)),
        None => Ok(n.ints("axes").map(<[i64]>::to_vec)),
    }
}

pub(crate) fn unsqueeze(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let axes = axes(imp, n)?.ok_or("Unsqueeze needs axes")?;
    let attrs = Attrs::new().with("axes", Attr::Ints(axes));
    imp.emit1(OpKind::Unsqueeze, &[n.input(0)?], attrs)
}

pub(crate) fn squeeze(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let mut attrs = Attrs::new();
    if let Some(axes) = axes(imp, n)? {
        attrs = attrs.with("axes", Attr::Ints(axes));
    }
    imp.emit1(OpKind::Squeeze, &[n.input(0)?], attrs)
}

pub(crate) fn concat(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let axis = n.required_int("axis")?;
    let ins = (0..n.inputs.len())
        .map(|i| n.input(i))
        .collect::<Result<Vec<H>, String>>()?;
    imp.emit1(
        OpKind::Concat,
        &ins,
        Attrs::new().with("axis", Attr::Int(axis)),
    )
}

pub(crate) fn slice(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let x = n.input(0)?;
    let starts = ints_input(imp, n.input(1)?, "the starts input")?;
    let ends = ints_input(imp, n.input(2)?, "the ends input")?;
    let mut attrs = Attrs::new()
        .with("starts", Attr::Ints(starts))
        .with("ends", Attr::Ints(ends));
    if let Some(h) = n.opt_input(3) {
        attrs = attrs.with("axes", Attr::Ints(ints_input(imp, h, "the axes input")?));
    }
    if let Some(h) = n.opt_input(4) {
        attrs = attrs.with("steps", Attr::Ints(ints_input(imp, h, "the steps input")?));
    }
    imp.emit1(OpKind::Slice, &[x], attrs)
}

pub(crate) fn transpose(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let x = n.input(0)?;
    let rank = imp.ty(x).rank() as i64;
    let perm = match n.ints("perm") {
        Some(p) => p.to_vec(),
        None => (0..rank).rev().collect(),
    };
    imp.emit1(
        OpKind::Transpose,
        &[x],
        Attrs::new().with("perm", Attr::Ints(perm)),
    )
}

/// `Shape` (with the opset-15 `start`/`end` window), evaluated at import.
pub(crate) fn shape(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let ty = imp.ty(n.input(0)?);
    let rank = ty.rank() as i64;
    let clamp = |v: i64| if v < 0 { v + rank } else { v }.clamp(0, rank) as usize;
    let start = clamp(n.int("start", 0));
    let end = clamp(n.int("end", rank));
    let window = ty.dims.get(start..end.max(start)).unwrap_or(&[]);
    let values = window
        .iter()
        .map(|d| match d {
            Dim::Static(v) => Ok(*v as i64),
            Dim::Sym(s) => Err(format!(
                "the shape of {ty} has the symbolic dimension {s}; Shape is evaluated at import and \
                 needs static dimensions"
            )),
        })
        .collect::<Result<Vec<i64>, String>>()?;
    let t = Tensor::new(vec![values.len()], Data::I64(values)).ok_or("bad shape tensor")?;
    Ok(imp.known_tensor(t, n.outputs.first().cloned()))
}

/// `ConstantOfShape`: the `value` attribute (default f32 0) broadcast to the given shape.
pub(crate) fn constant_of_shape(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let shape = ints_input(imp, n.input(0)?, "the shape input")?;
    let dims: Vec<u64> = shape
        .iter()
        .map(|&s| u64::try_from(s))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("the shape {shape:?} has a negative entry"))?;
    let value = match n.tensor("value") {
        Some(t) => tensor_proto::decode(t, t.raw_data.as_deref())?,
        None => Tensor::new(vec![1], Data::F32(vec![0.0])).ok_or("bad value")?,
    };
    if value.numel() != 1 {
        return Err(format!(
            "the value attribute must hold one element, found {}",
            value.numel()
        ));
    }
    let elem = value.elem();
    let scalar = imp.known_tensor(
        Tensor {
            shape: Vec::new(),
            data: value.data,
        },
        None,
    );
    imp.emit(
        OpKind::Expand,
        &[scalar],
        Attrs::new(),
        Some(TensorType::of(&dims, elem)),
    )
}

#[cfg(test)]
mod tests {
    use super::reshape_dims;
    use bitnet_ir::Dim;

    fn s(n: u64) -> Dim {
        Dim::Static(n)
    }

    #[test]
    fn reshape_infers_static_and_symbolic() {
        let t = Dim::Sym("T".into());
        assert_eq!(
            reshape_dims(&[s(2), s(3), s(4)], &[0, -1], false).unwrap(),
            vec![s(2), s(12)]
        );
        assert_eq!(
            reshape_dims(&[s(1), t.clone(), s(128)], &[1, -1, 4, 32], false).unwrap(),
            vec![s(1), t.clone(), s(4), s(32)]
        );
        assert_eq!(
            reshape_dims(&[s(0), s(3), s(4)], &[3, 4, 0], true).unwrap(),
            vec![s(3), s(4), s(0)]
        );
        assert!(reshape_dims(&[s(2), s(3)], &[4, -1], false).is_err());
    }
}
