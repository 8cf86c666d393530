//! `dense-baseline`: turns every ternary projection back into a dense full-precision matmul, for the
//! benchmark's baseline ("the same model with full-precision weights"). Each `bit.ternary_matmul` (or
//! `bit.ternary_matmul_packed`) becomes `nn.matmul(x, nn.transpose(W))`, where `x` is the unquantized
//! activation that fed its `bit.act_quant` (the quantizer is dropped) and `W = γ·W̃` (each weight ±γ or
//! 0, exactly what the ternary op multiplies by) is a derived weight stored in bf16, the dtype of a
//! full-precision checkpoint. A residual operand becomes an `nn.add` after the matmul.
//!
//! Needs: `lower-bitlinear` first (it finds the projections); the weights' values through the pass
//! context (ternary or packed weights, and the constant weight scale γ, evaluated here). Activations
//! that come from a `bit.rms_norm_quant` (after `fuse-norm-quant`) get an `nn.rms_norm` in its place.
//! Guarantees: no `bit.ternary_matmul*` is left; the result is NOT the interpreter's result on the
//! input: activations are not quantized and γ is rounded to bf16, so the numerics are not BitNet's (the
//! pass is for benchmarks only). A projection whose activations or scale cannot be traced is an error,
//! since a half-ternary baseline would mislead. Derived weights: `<name>#dense.bf16` (`[N, K]`, bf16,
//! declared f32 in the IR, as importers declare a bf16 checkpoint's weights).
//!
//! Before → after (`tests/filetests/passes/dense_baseline.bir`):
//! ```text
//! %q, %s = bit.act_quant %x {eps = 1e-5} : tensor<Tx4xi8>, tensor<Tx1xf32>
//! %z = bit.ternary_matmul %q, %s, %w, %g, %h : tensor<Tx2xf32>
//!   →  %0 = nn.weight {name = "ternary_2x4#dense.bf16"} : tensor<2x4xf32>
//!      %1 = nn.transpose %0 {perm = [1, 0]} : tensor<4x2xf32>
//!      %2 = nn.matmul %x, %1 : tensor<Tx2xf32>
//!      %z = nn.add %h, %2 : tensor<Tx2xf32>
//! ```

use crate::{Pass, PassContext, PassError};
use bitnet_ir::attr::{Attr, Attrs};
use bitnet_ir::module::{Function, Module, OpId, ValueDef};
use bitnet_ir::ops::EvalCtx;
use bitnet_ir::ops::ternary_matmul_packed::{PackOrder, padded_k, unpack_row};
use bitnet_ir::{Data, ElemType, OpKind, Tensor, TensorType, ValueId, WeightStore};
use std::collections::HashMap;

/// The `dense-baseline` pass.
pub struct DenseBaseline;

impl Pass for DenseBaseline {
    fn name(&self) -> &'static str {
        "dense-baseline"
    }

    fn summary(&self) -> &'static str {
        "benchmark baseline, not BitNet's numerics: ternary matmuls → dense f32 × bf16 (γ·W) matmuls on unquantized activations"
    }

    fn run(&self, module: &mut Module, cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        for f in &mut module.functions {
            changed |= dense_function(f, cx)?;
        }
        Ok(changed)
    }
}

fn fail(message: String) -> PassError {
    PassError::Failed {
        pass: "dense-baseline",
        message,
    }
}

/// A value's name for messages (its text name, or its number).
fn display_name(f: &Function, v: ValueId) -> String {
    f.value(v).name.clone().unwrap_or_else(|| v.0.to_string())
}

/// The static shape of `v`, or an error naming it.
fn static_shape(f: &Function, v: ValueId) -> Result<Vec<usize>, PassError> {
    f.ty(v)
        .static_shape()
        .map(|s| s.into_iter().map(|d| d as usize).collect())
        .ok_or_else(|| {
            fail(format!(
                "%{} has a symbolic type {}",
                display_name(f, v),
                f.ty(v)
            ))
        })
}

/// Constant subgraphs deeper than this are not evaluated (a weight scale is a few ops at most).
const MAX_DEPTH: usize = 16;

/// The value of `v`, computed from weights and literals alone by the ops' reference `eval`.
fn constant_value(
    f: &Function,
    weights: &dyn WeightStore,
    v: ValueId,
    depth: usize,
) -> Result<Tensor, PassError> {
    let not_constant = || {
        fail(format!(
            "%{} is not computed from weights and literals",
            display_name(f, v)
        ))
    };
    let ValueDef::OpResult { op, index } = f.value(v).def else {
        return Err(not_constant());
    };
    if depth > MAX_DEPTH {
        return Err(not_constant());
    }
    let op = f.op(op);
    let inputs = op
        .operands
        .iter()
        .map(|&x| constant_value(f, weights, x, depth + 1))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let shapes = op
        .results
        .iter()
        .map(|&r| static_shape(f, r))
        .collect::<Result<Vec<_>, _>>()?;
    let elems: Vec<ElemType> = op.results.iter().map(|&r| f.ty(r).elem).collect();
    let ecx = EvalCtx {
        inputs: &refs,
        attrs: &op.attrs,
        result_shapes: &shapes,
        result_elems: &elems,
        weights,
    };
    let mut out = op
        .kind
        .eval(&ecx)
        .map_err(|m| fail(format!("evaluating {}: {m}", op.kind.name())))?;
    let index = index as usize;
    if index < out.len() {
        Ok(out.swap_remove(index))
    } else {
        Err(not_constant())
    }
}

/// The ternary values `[N, K]` (row-major) of a matmul's weight operand.
fn ternary_values(
    f: &Function,
    weights: &dyn WeightStore,
    op: OpId,
) -> Result<(Vec<i8>, usize, usize), PassError> {
    let o = f.op(op);
    let (Some(&w), Some(&y)) = (o.operands.get(2), o.results.first()) else {
        return Err(fail("a ternary matmul without a weight".into()));
    };
    let tensor = constant_value(f, weights, w, 0)?;
    let [n, rows_k] = tensor.shape[..] else {
        return Err(fail(format!(
            "%{}: the weight is not rank 2",
            display_name(f, y)
        )));
    };
    match (o.kind, tensor.data) {
        (OpKind::TernaryMatmul, Data::Ternary(t)) => Ok((t, n, rows_k)),
        (OpKind::TernaryMatmulPacked, Data::U8(bytes)) => {
            let block = o.attrs.int_or("block", 0) as usize;
            let k = o.attrs.int_or("k", 0) as usize;
            let order = o
                .attrs
                .str("order")
                .and_then(PackOrder::from_name)
                .ok_or_else(|| fail(format!("%{}: unknown pack order", display_name(f, y))))?;
            if padded_k(k, block).map(|p| p / 4) != Some(rows_k) {
                return Err(fail(format!(
                    "%{}: packed rows of {rows_k} bytes do not hold k = {k} in blocks of {block}",
                    display_name(f, y)
                )));
            }
            let mut t = vec![0i8; n * k];
            for (row, out) in bytes.chunks(rows_k.max(1)).zip(t.chunks_mut(k.max(1))) {
                unpack_row(row, block, order, out)
                    .map_err(|m| fail(format!("%{}: {m}", display_name(f, y))))?;
            }
            Ok((t, n, k))
        }
        (_, data) => Err(fail(format!(
            "%{}: the weight holds {} values",
            display_name(f, y),
            data.elem()
        ))),
    }
}

/// `γ·t` for every ternary `t`, rounded to bf16 (so every element is exactly ±bf16(γ) or 0).
fn dequantize(t: &[i8], gamma: f32) -> Result<Data, PassError> {
    let Data::BF16(levels) = Data::from_f32(ElemType::BF16, vec![-gamma, 0.0, gamma]) else {
        return Err(fail("internal: bf16 conversion".into()));
    };
    let (neg, zero, pos) = match levels[..] {
        [a, b, c] => (a, b, c),
        _ => return Err(fail("internal: bf16 conversion".into())),
    };
    Ok(Data::BF16(
        t.iter()
            .map(|&v| match v {
                1 => pos,
                -1 => neg,
                _ => zero,
            })
            .collect(),
    ))
}

/// The name of the weight a matmul reads (an `nn.weight`'s name without the suffixes passes add),
/// or, for a literal, one made from the function and the value.
fn base_name(f: &Function, w: ValueId) -> String {
    let named = f
        .def_op(w)
        .map(|o| f.op(o))
        .filter(|o| o.kind == OpKind::Weight)
        .and_then(|o| o.attrs.str("name"));
    match named {
        Some(name) => name.split('#').next().unwrap_or(name).to_string(),
        None => format!("{}.%{}", f.name, display_name(f, w)),
    }
}

/// The unquantized activation behind a matmul's `xq` operand: the operand of its `bit.act_quant`,
/// or a new `nn.rms_norm` in place of a `bit.rms_norm_quant` (one per such op, inserted before it).
fn unquantized(
    f: &mut Function,
    xq: ValueId,
    norms: &mut HashMap<OpId, ValueId>,
) -> Result<ValueId, PassError> {
    let def = f
        .def_op(xq)
        .filter(|_| matches!(f.value(xq).def, ValueDef::OpResult { index: 0, .. }));
    let Some(def) = def else {
        return Err(fail(format!(
            "the activations %{} are not a quantizer's result",
            display_name(f, xq)
        )));
    };
    let op = f.op(def).clone();
    match (op.kind, op.operands.as_slice()) {
        (OpKind::ActQuant, &[x]) => Ok(x),
        (OpKind::RmsNormQuant, &[x, w]) => {
            if let Some(&y) = norms.get(&def) {
                return Ok(y);
            }
            let eps = op.attrs.float("eps_norm").unwrap_or(1e-5);
            let ty = f.ty(x).clone();
            let y = f.insert_op_before(
                def,
                OpKind::RmsNorm,
                vec![x, w],
                Attrs::new().with("eps", Attr::Float(eps)),
                vec![ty],
            )[0];
            norms.insert(def, y);
            Ok(y)
        }
        _ => Err(fail(format!(
            "the activations %{} come from {}, not bit.act_quant or bit.rms_norm_quant",
            display_name(f, xq),
            op.kind.name()
        ))),
    }
}

/// What one dense weight is made from: the ternary weight operand and γ (as f32 bits).
type DenseKey = (ValueId, u32);

fn dense_function(f: &mut Function, cx: &mut PassContext) -> Result<bool, PassError> {
    let matmuls: Vec<OpId> = f
        .op_order()
        .filter(|&o| {
            matches!(
                f.op(o).kind,
                OpKind::TernaryMatmul | OpKind::TernaryMatmulPacked
            )
        })
        .collect();
    if matmuls.is_empty() {
        return Ok(false);
    }
    let mut dense: HashMap<DenseKey, ValueId> = HashMap::new();
    let mut norms: HashMap<OpId, ValueId> = HashMap::new();
    let mut bytes = 0usize;
    for &mm in &matmuls {
        let op = f.op(mm).clone();
        let (Some(&xq), Some(&w), Some(&ws), Some(&y)) = (
            op.operands.first(),
            op.operands.get(2),
            op.operands.get(3),
            op.results.first(),
        ) else {
            return Err(fail("a ternary matmul with too few operands".into()));
        };
        // The residual is the operand after the weight scale (and after the row sums, if any).
        let residual_at = if op.attrs.str("rowsum").is_some() {
            5
        } else {
            4
        };
        let residual = op.operands.get(residual_at).copied();
        let x = unquantized(f, xq, &mut norms)?;
        if f.ty(x).elem != ElemType::F32 {
            return Err(fail(format!(
                "%{}: activations of type {} (f32 only)",
                display_name(f, y),
                f.ty(x)
            )));
        }
        let key;
        let made = {
            let weights = cx.weights_after();
            let scale = constant_value(f, &weights, ws, 0)?.data.to_f32();
            let &[gamma] = scale.as_slice() else {
                return Err(fail(format!(
                    "%{}: the weight scale is not one value",
                    display_name(f, y)
                )));
            };
            key = (w, gamma.to_bits());
            if dense.contains_key(&key) {
                None
            } else {
                let (t, n, k) = ternary_values(f, &weights, mm)?;
                Some((dequantize(&t, gamma)?, n, k))
            }
        };
        if let Some((data, n, k)) = made {
            let base = format!("{}#dense.bf16", base_name(f, w));
            let mut name = base.clone();
            let mut i = 1;
            while cx.derived.tensors.contains_key(&name) {
                name = format!("{base}.{i}");
                i += 1;
            }
            let tensor = Tensor::new(vec![n, k], data)
                .ok_or_else(|| fail("internal: dense weight shape".into()))?;
            bytes += tensor.data.len() * 2;
            cx.derived.tensors.insert(name.clone(), tensor);
            let wd = f.insert_op_before(
                mm,
                OpKind::Weight,
                Vec::new(),
                Attrs::new().with("name", Attr::Str(name)),
                vec![TensorType::of(&[n as u64, k as u64], ElemType::F32)],
            )[0];
            let wt = f.insert_op_before(
                mm,
                OpKind::Transpose,
                vec![wd],
                Attrs::new().with("perm", Attr::Ints(vec![1, 0])),
                vec![TensorType::of(&[k as u64, n as u64], ElemType::F32)],
            )[0];
            dense.insert(key, wt);
        }
        let Some(&wt) = dense.get(&key) else {
            return Err(fail("internal: dense weight missing".into()));
        };
        let ty = f.ty(y).clone();
        let mut new = f.insert_op_before(
            mm,
            OpKind::MatMul,
            vec![x, wt],
            Attrs::new(),
            vec![ty.clone()],
        )[0];
        if let Some(r) = residual {
            new = f.insert_op_before(mm, OpKind::Add, vec![r, new], Attrs::new(), vec![ty])[0];
        }
        f.replace_uses(y, new);
        f.values[new.index()].name = f.values[y.index()].name.take();
    }
    cx.notes.push(format!(
        "dense-baseline @{}: {} ternary matmul(s) → dense nn.matmul over {} bf16 weight(s) ({bytes} bytes); unquantized activations, not BitNet's numerics",
        f.name,
        matmuls.len(),
        dense.len()
    ));
    f.remove_dead_ops();
    Ok(true)
}
