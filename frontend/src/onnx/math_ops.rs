//! Contractions, reductions and normalizations: `MatMul` (numpy 1-D rules via unsqueeze/squeeze),
//! `Gemm` (transpose, matmul, scale, add), `ReduceMean`/`ReduceMax`/`ReduceSum` (axes as an input,
//! opset 18, or an attribute; `noop_with_empty_axes`), `LayerNormalization` (with its optional
//! `Mean` and `InvStdDev` outputs) and `RMSNormalization`.

use super::node::NodeCx;
use super::values::{H, Importer};
use bitnet_ir::attr::{Attr, Attrs};
use bitnet_ir::{ElemType, OpKind};

/// ONNX MatMul: a 1-D left operand is a row `[1, K]`, a 1-D right operand a column `[K, 1]`, and
/// the added axes are removed from the product (numpy's `matmul`).
pub(crate) fn matmul(imp: &mut Importer, a: H, b: H) -> Result<H, String> {
    let a1 = imp.ty(a).rank() == 1;
    let b1 = imp.ty(b).rank() == 1;
    let a2 = if a1 {
        imp.emit1(
            OpKind::Unsqueeze,
            &[a],
            Attrs::new().with("axes", Attr::Ints(vec![0])),
        )?
    } else {
        a
    };
    let b2 = if b1 {
        imp.emit1(
            OpKind::Unsqueeze,
            &[b],
            Attrs::new().with("axes", Attr::Ints(vec![1])),
        )?
    } else {
        b
    };
    let y = imp.emit1(OpKind::MatMul, &[a2, b2], Attrs::new())?;
    let rank = imp.ty(y).rank() as i64;
    let mut squeeze = Vec::new();
    if a1 {
        squeeze.push(rank - 2);
    }
    if b1 {
        squeeze.push(rank - 1);
    }
    if squeeze.is_empty() {
        return Ok(y);
    }
    imp.emit1(
        OpKind::Squeeze,
        &[y],
        Attrs::new().with("axes", Attr::Ints(squeeze)),
    )
}

/// `Gemm`: `alpha · A' · B' + beta · C` with `A' = Aᵀ` if `transA`, `B' = Bᵀ` if `transB`.
pub(crate) fn gemm(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let flip = |imp: &mut Importer, x: H, on: bool| -> Result<H, String> {
        if !on {
            return Ok(x);
        }
        let attrs = Attrs::new().with("perm", Attr::Ints(vec![1, 0]));
        imp.emit1(OpKind::Transpose, &[x], attrs)
    };
    let a = flip(imp, n.input(0)?, n.int("transA", 0) != 0)?;
    let b = flip(imp, n.input(1)?, n.int("transB", 0) != 0)?;
    let elem = imp.ty(a).elem;
    let mut y = imp.emit1(OpKind::MatMul, &[a, b], Attrs::new())?;
    let (alpha, beta) = (n.float("alpha", 1.0), n.float("beta", 1.0));
    if alpha != 1.0 {
        let s = imp.scalar(f64::from(alpha), elem);
        y = imp.emit1(OpKind::Mul, &[y, s], Attrs::new())?;
    }
    if let Some(mut c) = n.opt_input(2) {
        if beta != 1.0 {
            let s = imp.scalar(f64::from(beta), elem);
            c = imp.emit1(OpKind::Mul, &[c, s], Attrs::new())?;
        }
        y = imp.emit1(OpKind::Add, &[y, c], Attrs::new())?;
    }
    Ok(y)
}

/// The reductions. Empty or absent axes reduce everything, or nothing with `noop_with_empty_axes`.
pub(crate) fn reduce(imp: &mut Importer, n: &NodeCx, kind: OpKind) -> Result<H, String> {
    let x = n.input(0)?;
    let axes = match n.opt_input(1) {
        Some(h) => {
            let t = imp.constant(h, "the axes input")?;
            if t.shape.len() > 1 || !matches!(t.elem(), ElemType::I64 | ElemType::I32) {
                return Err(format!(
                    "the axes input must be a 1-D integer tensor, found {}",
                    t.ty()
                ));
            }
            Some(t.data.to_i64())
        }
        None => n.ints("axes").map(<[i64]>::to_vec),
    };
    let mut attrs = Attrs::new().with("keepdims", Attr::Bool(n.int("keepdims", 1) != 0));
    match axes {
        Some(a) if !a.is_empty() => attrs = attrs.with("axes", Attr::Ints(a)),
        _ if n.int("noop_with_empty_axes", 0) != 0 => return Ok(x),
        _ => {}
    }
    // The IR reduces numbers; a bool ReduceMax is the same reduction over 0/1.
    if imp.ty(x).elem == ElemType::Bool && kind == OpKind::ReduceMax {
        let x8 = imp.cast(x, ElemType::U8)?;
        let r = imp.emit1(kind, &[x8], attrs)?;
        return imp.cast(r, ElemType::Bool);
    }
    imp.emit1(kind, &[x], attrs)
}

/// `LayerNormalization(X, Scale, B?)` → `nn.layer_norm`; the optional `Mean` and `InvStdDev`
/// outputs are computed beside it as `mean(X)` and `1/√(mean((X-mean)²) + ε)` over the same axes.
pub(crate) fn layer_norm(imp: &mut Importer, n: &NodeCx) -> Result<Vec<Option<H>>, String> {
    let x = n.input(0)?;
    let mut ins = vec![x, n.input(1)?];
    ins.extend(n.opt_input(2));
    let axis = n.int("axis", -1);
    let eps = f64::from(n.float("epsilon", 1e-5));
    let attrs = Attrs::new()
        .with("eps", Attr::Float(eps))
        .with("axis", Attr::Int(axis));
    let y = imp.emit1(OpKind::LayerNorm, &ins, attrs)?;
    if !n.wants_output(1) && !n.wants_output(2) {
        return Ok(vec![Some(y)]);
    }
    let ty = imp.ty(x);
    let rank = ty.rank() as i64;
    let first = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&first) {
        return Err(format!("axis {axis} is out of range for {ty}"));
    }
    let over = Attrs::new()
        .with("axes", Attr::Ints((first..rank).collect()))
        .with("keepdims", Attr::Bool(true));
    let mean = imp.emit1(OpKind::ReduceMean, &[x], over.clone())?;
    let d = imp.emit1(OpKind::Sub, &[x, mean], Attrs::new())?;
    let d2 = imp.emit1(OpKind::Mul, &[d, d], Attrs::new())?;
    let var = imp.emit1(OpKind::ReduceMean, &[d2], over)?;
    let e = imp.scalar(eps, ty.elem);
    let ve = imp.emit1(OpKind::Add, &[var, e], Attrs::new())?;
    let sd = imp.emit1(OpKind::Sqrt, &[ve], Attrs::new())?;
    let inv = imp.emit1(OpKind::Reciprocal, &[sd], Attrs::new())?;
    Ok(vec![Some(y), Some(mean), Some(inv)])
}

/// `RMSNormalization(X, Scale)` → `nn.rms_norm`.
pub(crate) fn rms_norm(imp: &mut Importer, n: &NodeCx) -> Result<H, String> {
    let attrs = Attrs::new()
        .with("eps", Attr::Float(f64::from(n.float("epsilon", 1e-5))))
        .with("axis", Attr::Int(n.int("axis", -1)));
    imp.emit1(OpKind::RmsNorm, &[n.input(0)?, n.input(1)?], attrs)
}
