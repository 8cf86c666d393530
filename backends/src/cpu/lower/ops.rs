//! The per-op lowering functions of the table (`super::table`): each checks what its kernel
//! supports, places the op's constants in the blob and appends its launches. Operands and results
//! are in the arena (or the KV region) where the memory plan put them.

use super::blob::{is_constant, weight_name};
use super::head::{self, head_weight};
use super::{Lowering, Site, input, unsupported};
use crate::BackendError;
use crate::cpu::kernels::rope::rope_table;
use crate::cpu::{HeadDtype, PACK_BLOCK, PACK_ORDER};
use crate::kernel::{
    ActQuantParams, AddParams, AttentionParams, BiasAddParams, EmbeddingParams, HalfFormat,
    KernelKind, KvStoreParams, Relu2MulParams, RmsNormParams, RmsNormQuantParams, RopeParams,
    SiluMulParams, TernaryMatmulParams,
};
use bitnet_ir::module::Function;
use bitnet_ir::{Dim, ElemType, OpKind, TensorType, ValueId};
use bitnet_runtime::Rows;

/// The static last dimension of `ty`.
pub(super) fn last_dim(ty: &TensorType) -> Result<u64, BackendError> {
    ty.dims
        .last()
        .and_then(Dim::as_static)
        .ok_or_else(|| input(format!("{ty} has no static last dimension")))
}

/// `nn.embedding(table, ids)`, when the options allow 16-bit tables and every value is exactly a
/// bf16, else exactly an f16: rows in index order at the table's place in the model file, mapped
/// from it where the file's alignment allows (`Blob::in_order`), unless a matmul reads the same
/// weight as pairs (a tied 16-bit lm_head); then exact pairs in that format, shared with it.
/// Otherwise, and when the options do not allow 16-bit tables, f32.
pub(super) fn embedding(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let f = site.f;
    let (table, ids, out) = (site.operand(0)?, site.operand(1)?, site.result(0)?);
    site.f32_only(table)?;
    let t = f
        .ty(table)
        .static_shape()
        .ok_or_else(|| input("the embedding table is symbolic"))?;
    let (Some(&vocab), Some(&hidden), 2) = (t.first(), t.get(1), t.len()) else {
        return Err(unsupported(
            "nn.embedding",
            "the table is not [vocab, hidden]",
        ));
    };
    let formats = [HalfFormat::Bf16, HalfFormat::F16];
    let in_order = match weight_name(f, table) {
        Some(name) if lw.options.half_embedding && !read_as_pairs(lw, f, name) => {
            lw.blob.in_order(f, table, &formats)?
        }
        _ => None,
    };
    let half = match in_order {
        Some(placed) => Some(placed),
        None if lw.options.half_embedding => {
            lw.blob.exact_pairs(f, table, hidden as usize, &formats)?
        }
        None => None,
    };
    let table_buf = match half {
        Some((b, _)) => b,
        None => lw.blob.constant(f, table, ElemType::F32)?,
    };
    let bufs = vec![table_buf, lw.arena(ids)?, lw.arena(out)?];
    let kind = KernelKind::Embedding(EmbeddingParams {
        vocab,
        hidden,
        half: half.map(|(_, format)| format),
        in_order: in_order.is_some(),
    });
    lw.launch(kind, bufs, Rows::PerToken(1), site.label.clone())
}

/// `bit.rms_norm_quant(x, w)`: the norm weight f32.
pub(super) fn rms_norm_quant(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let (f, op) = (site.f, site.op);
    let (x, w) = (site.operand(0)?, site.operand(1)?);
    site.f32_only(x)?;
    let k = last_dim(f.ty(x))?;
    let eps_norm = op.attrs.float("eps_norm").unwrap_or(1e-5) as f32;
    let eps = op.attrs.float("eps").unwrap_or(1e-5) as f32;
    let bufs = vec![
        lw.arena(x)?,
        lw.blob.constant(f, w, ElemType::F32)?,
        lw.arena(site.result(0)?)?,
        lw.arena(site.result(1)?)?,
    ];
    let kind = KernelKind::RmsNormQuant(RmsNormQuantParams {
        k,
        eps_norm_bits: eps_norm.to_bits(),
        eps_bits: eps.to_bits(),
        reciprocal: op.attrs.bool_or("reciprocal", false),
    });
    lw.launch(kind, bufs, Rows::PerToken(1), site.label.clone())
}

/// `bit.act_quant(x)`.
pub(super) fn act_quant(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let (f, op) = (site.f, site.op);
    let x = site.operand(0)?;
    site.f32_only(x)?;
    let eps = op.attrs.float("eps").unwrap_or(1e-5) as f32;
    let bufs = vec![
        lw.arena(x)?,
        lw.arena(site.result(0)?)?,
        lw.arena(site.result(1)?)?,
    ];
    let kind = KernelKind::ActQuant(ActQuantParams {
        k: last_dim(f.ty(x))?,
        eps_bits: eps.to_bits(),
        reciprocal: op.attrs.bool_or("reciprocal", false),
    });
    lw.launch(kind, bufs, Rows::PerToken(1), site.label.clone())
}

/// `nn.rms_norm(x, w)` over the last axis: the norm weight f32.
pub(super) fn rms_norm(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let (f, op) = (site.f, site.op);
    let (x, w) = (site.operand(0)?, site.operand(1)?);
    site.f32_only(x)?;
    let axis = op.attrs.int_or("axis", -1);
    if axis != -1 && axis != f.ty(x).rank() as i64 - 1 {
        return Err(unsupported("nn.rms_norm", "only over the last axis"));
    }
    let eps = op.attrs.float("eps").unwrap_or(1e-5) as f32;
    let bufs = vec![
        lw.arena(x)?,
        lw.blob.constant(f, w, ElemType::F32)?,
        lw.arena(site.result(0)?)?,
    ];
    let kind = KernelKind::RmsNorm(RmsNormParams {
        k: last_dim(f.ty(x))?,
        eps_bits: eps.to_bits(),
    });
    lw.launch(kind, bufs, Rows::PerToken(1), site.label.clone())
}

/// `bit.ternary_matmul_packed(xq, xs, w, ws[, residual])` in this backend's packing layout: the
/// packed weights as bytes, the weight scales f32.
pub(super) fn ternary_matmul(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let (f, op) = (site.f, site.op);
    let block = op.attrs.int_or("block", 0) as usize;
    let order = op.attrs.str("order").unwrap_or("");
    if block != PACK_BLOCK || order != PACK_ORDER.name() || op.attrs.str("rowsum").is_some() {
        return Err(unsupported(
            "bit.ternary_matmul_packed",
            format!(
                "layout block {block} order {order:?}; this backend reads block {PACK_BLOCK}, order {}",
                PACK_ORDER.name()
            ),
        ));
    }
    let (xq, xs, w, ws) = (
        site.operand(0)?,
        site.operand(1)?,
        site.operand(2)?,
        site.operand(3)?,
    );
    let residual = op.operands.get(4).copied();
    let out = site.result(0)?;
    let k = last_dim(f.ty(xq))?;
    let n = last_dim(f.ty(out))?;
    let mut bufs = vec![
        lw.arena(xq)?,
        lw.arena(xs)?,
        lw.blob.constant(f, w, ElemType::U8)?,
        lw.blob.constant(f, ws, ElemType::F32)?,
    ];
    if let Some(r) = residual {
        bufs.push(lw.arena(r)?);
    }
    bufs.push(lw.arena(out)?);
    let kind = KernelKind::TernaryMatmul(TernaryMatmulParams {
        k,
        n,
        residual: residual.is_some(),
    });
    lw.launch(kind, bufs, Rows::Static(n), site.label.clone())
}

/// `bit.relu2_mul(g, u)` on operands of one type.
pub(super) fn relu2_mul(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let f = site.f;
    let (g, u, out) = (site.operand(0)?, site.operand(1)?, site.result(0)?);
    site.f32_only(g)?;
    if f.ty(g) != f.ty(u) {
        return Err(unsupported("bit.relu2_mul", "broadcasting operands"));
    }
    let kind = KernelKind::Relu2Mul(Relu2MulParams {
        n: last_dim(f.ty(out))?,
    });
    let bufs = vec![lw.arena(g)?, lw.arena(u)?, lw.arena(out)?];
    lw.launch(kind, bufs, Rows::PerToken(1), site.label.clone())
}

/// `bit.silu_mul(g, u)` (its type rule makes both f32 of one shape).
pub(super) fn silu_mul(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let f = site.f;
    let (g, u, out) = (site.operand(0)?, site.operand(1)?, site.result(0)?);
    site.f32_only(g)?;
    if f.ty(g) != f.ty(u) {
        return Err(unsupported("bit.silu_mul", "operands of different shapes"));
    }
    let kind = KernelKind::SiluMul(SiluMulParams {
        n: last_dim(f.ty(out))?,
    });
    let bufs = vec![lw.arena(g)?, lw.arena(u)?, lw.arena(out)?];
    lw.launch(kind, bufs, Rows::PerToken(1), site.label.clone())
}

/// `nn.add(a, b)` on two `[T, n]` activations, or on `[T, n]` and a constant `[n]` row (a projection's
/// bias: `BiasAdd`).
pub(super) fn add(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let f = site.f;
    let (a, b, out) = (site.operand(0)?, site.operand(1)?, site.result(0)?);
    site.f32_only(a)?;
    let n = last_dim(f.ty(out))?;
    let bias = f.ty(b).rank() == 1 && f.ty(b).dims.first().and_then(Dim::as_static) == Some(n);
    if bias && is_constant(f, b) && f.ty(a) == f.ty(out) && f.ty(out).rank() == 2 {
        // A projection's bias: one constant row added to every token's row.
        site.f32_only(b)?;
        let kind = KernelKind::BiasAdd(BiasAddParams { n });
        let bufs = vec![
            lw.arena(a)?,
            lw.blob.constant(f, b, ElemType::F32)?,
            lw.arena(out)?,
        ];
        return lw.launch(kind, bufs, Rows::PerToken(1), site.label.clone());
    }
    if f.ty(a) != f.ty(out) || f.ty(b) != f.ty(out) || f.ty(out).rank() != 2 {
        return Err(unsupported(
            "nn.add",
            "only [T, n] + [T, n], or [T, n] + a constant [n] row (a bias)",
        ));
    }
    let kind = KernelKind::Add(AddParams {
        n: last_dim(f.ty(out))?,
    });
    let bufs = vec![lw.arena(a)?, lw.arena(b)?, lw.arena(out)?];
    lw.launch(kind, bufs, Rows::PerToken(1), site.label.clone())
}

/// `nn.rope(x)`: the cos/sin table of every position of the context for the op's frequencies
/// (from `theta`, or the scaled ones of its `inv_freq` attribute), computed here and placed in the
/// blob once per (context, frequencies).
pub(super) fn rope(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let (f, op) = (site.f, site.op);
    let (x, out) = (site.operand(0)?, site.result(0)?);
    site.f32_only(x)?;
    let width = last_dim(f.ty(x))?;
    let d = op.attrs.int_or("head_dim", 0) as u64;
    let inv_freq = bitnet_ir::ops::rope::inv_freq(&op.attrs);
    if inv_freq.len() as u64 * 2 != d {
        return Err(input("nn.rope: inv_freq does not hold head_dim/2 values"));
    }
    let context = lw.context;
    let table = rope_table(context as usize, &inv_freq);
    let table_bytes: Vec<u8> = table.iter().flat_map(|v| v.to_le_bytes()).collect();
    let key: String = inv_freq
        .iter()
        .map(|v| format!("{:08x}", v.to_bits()))
        .collect();
    let tb = lw
        .blob
        .push(format!("rope:{context}:{d}:{key}"), &table_bytes);
    let kind = KernelKind::Rope(RopeParams { width, head_dim: d });
    let bufs = vec![lw.arena(x)?, tb, lw.arena(out)?];
    lw.launch(kind, bufs, Rows::PerToken(1), site.label.clone())
}

/// `nn.attention(q, k, v, k_cache, v_cache)`: the cache write (`KvStore`), then the attention over
/// the cache.
pub(super) fn attention(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let (f, op) = (site.f, site.op);
    let (q, k, v, kc, vc) = (
        site.operand(0)?,
        site.operand(1)?,
        site.operand(2)?,
        site.operand(3)?,
        site.operand(4)?,
    );
    site.f32_only(q)?;
    let heads = op.attrs.int_or("heads", 0) as u64;
    let kv_heads = op.attrs.int_or("kv_heads", 0) as u64;
    let kvw = last_dim(f.ty(k))?;
    let d = kvw / kv_heads.max(1);
    let cache_len = f
        .ty(kc)
        .dims
        .first()
        .and_then(Dim::as_static)
        .ok_or_else(|| input("symbolic cache"))?;
    let scale = op.attrs.float("scale").unwrap_or(1.0 / (d as f64).sqrt());
    let bufs = vec![lw.arena(k)?, lw.arena(v)?, lw.kv(kc)?, lw.kv(vc)?];
    lw.launch(
        KernelKind::KvStore(KvStoreParams {
            kvw,
            head_dim: d,
            context: cache_len,
        }),
        bufs,
        Rows::PerToken(1),
        format!("{} (cache write)", site.label),
    )?;
    let kind = KernelKind::Attention(AttentionParams {
        heads,
        kv_heads,
        head_dim: d,
        context: cache_len,
        scale_bits: scale.to_bits(),
    });
    let bufs = vec![
        lw.arena(q)?,
        lw.kv(kc)?,
        lw.kv(vc)?,
        lw.arena(site.result(0)?)?,
    ];
    lw.launch(kind, bufs, Rows::PerToken(heads), site.label.clone())
}

/// `nn.matmul(x, transpose(W))` with a constant `W [n, k]` and rank-2 activations: the lm_head when
/// its result is the logits, stored as `LowerOptions::head` says (`super::head`).
pub(super) fn matmul(lw: &mut Lowering<'_>, site: &Site<'_>) -> Result<(), BackendError> {
    let f = site.f;
    let (x, wt) = (site.operand(0)?, site.operand(1)?);
    site.f32_only(x)?;
    let w = transposed_weight(f, wt).ok_or_else(|| {
        unsupported(
            "nn.matmul",
            "only x·Wᵀ with a constant weight W (a dense projection or the lm_head)",
        )
    })?;
    let out = site.result(0)?;
    if f.ty(x).rank() != 2 {
        return Err(unsupported(
            "nn.matmul",
            format!("{} (rank 2 activations only)", f.ty(x)),
        ));
    }
    let k = last_dim(f.ty(x))?;
    let n = last_dim(f.ty(out))?;
    let dtype = matmul_dtype(lw, f, out);
    let weight = head_weight(&mut lw.blob, f, w, k as usize, dtype)?;
    head::launch(lw, site, weight, x, out, k, n)
}

/// The constant `W` of `wt = transpose(W)` (perm `[1, 0]`), if `wt` is that.
fn transposed_weight(f: &Function, wt: ValueId) -> Option<ValueId> {
    f.def_op(wt)
        .map(|o| f.op(o))
        .filter(|o| o.kind == OpKind::Transpose && o.attrs.ints("perm") == Some(&[1, 0]))
        .and_then(|o| o.operands.first().copied())
        .filter(|&w| is_constant(f, w))
}

/// The `HeadDtype` the weight of the matmul whose result is `out` is stored as: the lm_head's
/// (the matmul whose result is the logits), or the dense projections' unless that is `Auto`.
fn matmul_dtype(lw: &Lowering<'_>, f: &Function, out: ValueId) -> Option<HeadDtype> {
    if f.returns.first() == Some(&out) {
        Some(lw.options.head)
    } else {
        Some(lw.options.dense).filter(|&d| d != HeadDtype::Auto)
    }
}

/// Whether a matmul of `f` reads weight `name` as 16-bit pairs in `layout` order (`head`'s policy
/// with `Auto`, `F16` or `Bf16`): a tied lm_head that an embedding table in index order would
/// make the blob hold twice.
fn read_as_pairs(lw: &Lowering<'_>, f: &Function, name: &str) -> bool {
    f.op_order().into_iter().any(|id| {
        let op = f.op(id);
        let (Some(&wt), Some(&out)) = (op.operands.get(1), op.results.first()) else {
            return false;
        };
        op.kind == OpKind::MatMul
            && transposed_weight(f, wt).and_then(|w| weight_name(f, w)) == Some(name)
            && matches!(
                matmul_dtype(lw, f, out),
                Some(HeadDtype::Auto | HeadDtype::F16 | HeadDtype::Bf16)
            )
    })
}
