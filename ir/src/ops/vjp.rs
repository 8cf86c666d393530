//! `nn.vjp`: one operand's cotangent under another op's gradient rule, the op a backward function
//! (`autodiff::emit_backward`) is made of.
//!
//! Syntax:
//! `%gx = nn.vjp %x, %w, %y, %gy {of = "nn.rms_norm", wrt = 0, cotangents = [0], eps = 1e-5} : tensor<Tx8xf64>`.
//!
//! Operands: the forward op's operands, then its results, then the cotangents of the results listed
//! in `cotangents` (result indices, increasing); a result not listed has no cotangent (nothing
//! downstream depends on it) and the rule sees zeros, as in the reverse sweep. Attributes: `of`, the
//! forward op's text name; `wrt`, the operand whose cotangent this op computes; the forward op's own
//! attributes, checked against its schema.
//!
//! Math: `OpKind::vjp` of op `of` (the rule in that op's file) applied to those values (the
//! cotangents widened to f64), the cotangent of operand `wrt` taken and rounded once to the
//! cotangents' element type. An operand the rule gives no gradient (a stop-gradient, an integer) gets
//! zeros. With f64 cotangents a reverse sweep over the same function gives the same bits: both run
//! the same rule on the same values and sum the contributions in the same order.
//!
//! Type rule: operand `wrt`'s shape, in the cotangents' element type (one float type for all of
//! them, at least one); the cotangent operands have their results' shapes. The forward operands and
//! results must be what op `of`'s own type rule gives; the forward op must have a float operand
//! `wrt` and a gradient rule of its own (not `nn.vjp`).

use super::{Arity, EvalCtx, EvalResult, InferCtx, OpKind, OpSpec, VjpCtx, operand};
use crate::attr::{AttrKind, AttrSpec, Attrs};
use crate::tensor::{Data, Tensor};
use crate::types::{ElemType, TensorType};

/// `nn.vjp` (its own attributes; the forward op's are added by `attr_specs`).
pub const SPEC: OpSpec = OpSpec {
    name: "nn.vjp",
    operands: Arity::AtLeast(1),
    results: 1,
    attrs: &[
        AttrSpec::req("of", AttrKind::Str),
        AttrSpec::req("wrt", AttrKind::Int),
        AttrSpec::req("cotangents", AttrKind::Ints),
    ],
};

/// Its own attribute names, which no forward op's schema may use.
const OWN: [&str; 3] = ["of", "wrt", "cotangents"];

/// The attribute schema of an `nn.vjp` with these attributes: its own, and those of the op `of`
/// names (its own alone when `of` names no op, which `infer` then reports).
pub fn attr_specs(attrs: &Attrs) -> Vec<AttrSpec> {
    let mut specs = SPEC.attrs.to_vec();
    if let Some(kind) = attrs.str("of").and_then(OpKind::from_name)
        && kind != OpKind::Vjp
    {
        specs.extend(kind.spec().attrs.iter().filter(|a| !OWN.contains(&a.name)));
    }
    specs
}

/// How an `nn.vjp`'s operands divide.
struct Split {
    /// The forward op.
    of: OpKind,
    /// The operand whose cotangent it computes.
    wrt: usize,
    /// The forward op's operand count.
    operands: usize,
    /// The forward op's result count.
    results: usize,
    /// Which results have a cotangent operand, increasing.
    cotangents: Vec<usize>,
}

/// Reads the attributes and divides `n` operands.
fn split(attrs: &Attrs, n: usize) -> Result<Split, String> {
    let name = attrs.str("of").ok_or("needs the attribute `of`")?;
    let of = OpKind::from_name(name).ok_or_else(|| format!("`of = \"{name}\"` names no op"))?;
    if of == OpKind::Vjp {
        return Err("second derivatives are not supported: `of` cannot be nn.vjp".into());
    }
    let results = of.spec().results;
    let cotangents: Vec<usize> = attrs
        .ints("cotangents")
        .ok_or("needs the attribute `cotangents`")?
        .iter()
        .map(|&c| usize::try_from(c).ok().filter(|&c| c < results))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            format!("`cotangents` must list result indices of {name}, below {results}")
        })?;
    if cotangents.is_empty() || cotangents.windows(2).any(|w| w[0] >= w[1]) {
        return Err("`cotangents` must list at least one result, increasing".into());
    }
    let operands = n
        .checked_sub(results + cotangents.len())
        .filter(|&k| of.spec().operands.accepts(k))
        .ok_or_else(|| {
            format!(
                "takes {name}'s operands ({}), its {results} result(s) and {} cotangent(s); found {n} operands",
                of.spec().operands.describe(),
                cotangents.len()
            )
        })?;
    let wrt = attrs.int_or("wrt", -1);
    let wrt = usize::try_from(wrt)
        .ok()
        .filter(|&w| w < operands)
        .ok_or_else(|| format!("`wrt = {wrt}` is not an operand of {name} (it has {operands})"))?;
    Ok(Split {
        of,
        wrt,
        operands,
        results,
        cotangents,
    })
}

/// The forward op's attributes: this op's, less its own.
fn forward_attrs(attrs: &Attrs) -> Attrs {
    let mut a = attrs.clone();
    for k in OWN {
        a.0.remove(k);
    }
    a
}

/// Type rule: operand `wrt`'s shape in the cotangents' element type; every cotangent operand of its
/// result's shape, all of one float type.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let s = split(cx.attrs, cx.operands.len())?;
    let x = operand(cx, s.wrt)?;
    if !x.elem.is_float() {
        return Err(format!(
            "operand {} of {} is {x}: only a float operand has a cotangent",
            s.wrt,
            s.of.name()
        ));
    }
    // The forward operands and results must be what op `of` makes of them: its rule indexes them
    // as its own `infer` promised.
    let forward = &cx.operands[..s.operands];
    let results = &cx.operands[s.operands..s.operands + s.results];
    let attrs = forward_attrs(cx.attrs);
    let inferred =
        s.of.infer(&InferCtx {
            operands: forward,
            attrs: &attrs,
            declared: results,
        })
        .map_err(|m| format!("the forward operands do not fit {}: {m}", s.of.name()))?;
    if inferred != results {
        let show = |t: &[TensorType]| {
            t.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "{} of these operands gives {}, but the forward results given are {}",
            s.of.name(),
            show(&inferred),
            show(results)
        ));
    }
    let elem = operand(cx, s.operands + s.results)?.elem;
    if !elem.is_float() {
        return Err(format!("cotangents must be float, found {elem}"));
    }
    for (k, &r) in s.cotangents.iter().enumerate() {
        let y = operand(cx, s.operands + r)?;
        let g = operand(cx, s.operands + s.results + k)?;
        if g.dims != y.dims || g.elem != elem {
            return Err(format!(
                "the cotangent of result {r} must be {} (its result's shape, the first cotangent's type), found {g}",
                TensorType::new(y.dims.clone(), elem)
            ));
        }
    }
    Ok(vec![TensorType::new(x.dims, elem)])
}

/// Reference evaluation: the forward op's rule, operand `wrt`'s cotangent (zeros where it gives
/// none), rounded once to the result's element type.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let wrt = split(cx.attrs, cx.inputs.len())?.wrt;
    let mut all = eval_all(cx)?;
    if wrt >= all.len() {
        return Err(format!("internal: no operand {wrt}"));
    }
    Ok(vec![all.swap_remove(wrt)])
}

/// The cotangent of every forward operand as `eval` gives operand `wrt`'s (the rule runs once; the
/// `nn.vjp` ops of one forward op differ only in `wrt`, so a backend may share this): zeros where
/// the rule gives none.
pub fn eval_all(cx: &EvalCtx) -> Result<Vec<Tensor>, String> {
    let s = split(cx.attrs, cx.inputs.len())?;
    let inputs = &cx.inputs[..s.operands];
    let outputs = &cx.inputs[s.operands..s.operands + s.results];
    let given: Vec<Vec<f64>> = cx.inputs[s.operands + s.results..]
        .iter()
        .map(|t| t.data.to_f64())
        .collect();
    let mut cotangents: Vec<Option<&[f64]>> = vec![None; s.results];
    for (&r, g) in s.cotangents.iter().zip(&given) {
        cotangents[r] = Some(g);
    }
    let attrs = forward_attrs(cx.attrs);
    let rule = VjpCtx {
        inputs,
        outputs,
        cotangents: &cotangents,
        attrs: &attrs,
    };
    let mut grads = s.of.vjp(&rule)?;
    grads.resize(s.operands, None);
    let elem = cx.result_elems.first().copied().unwrap_or(ElemType::F64);
    grads
        .into_iter()
        .zip(inputs)
        .map(|(g, x)| {
            let g = match g {
                Some(g) if g.len() == x.numel() => g,
                Some(g) => {
                    return Err(format!(
                        "internal: {}'s rule gave {} elements for an operand of {}",
                        s.of.name(),
                        g.len(),
                        x.numel()
                    ));
                }
                None => vec![0.0; x.numel()],
            };
            Tensor::new(x.shape.clone(), Data::from_f64(elem, g))
                .ok_or_else(|| "internal: a cotangent's shape".to_string())
        })
        .collect()
}

/// Why an `nn.vjp` is not differentiated.
pub const NO_SECOND_DERIVATIVES: &str =
    "second derivatives are not supported: nn.vjp (a backward function's op) has no gradient rule";

/// Gradient rule: none; a backward function is not differentiated again.
pub fn vjp(_cx: &VjpCtx) -> super::VjpResult {
    Err(NO_SECOND_DERIVATIVES.into())
}
