//! Lowering a planned function into a `Program`: one launch per op (two for `nn.attention`: the cache
//! write, then the attention), one kernel per distinct `KernelKind`, every buffer placed by the memory
//! plan, and the weights (including derived packed weights and the RoPE tables) laid out in one blob.
//!
//! Input: a function after the default pipeline, `pack-weights` with this backend's layout
//! (`PACK_BLOCK`, `PACK_ORDER`) and `plan-memory`, given as a backend-neutral `Assignment`.
//!
//! The lm_head (the `nn.matmul` whose result is the logits) is stored as `LowerOptions::head`
//! says; with `HeadDtype::I8` it becomes an `ActQuant` launch into scratch placed after the planned
//! arena, then a `MatmulI8`. The launches of the ops only the logits need, row by row (the final
//! norm and the lm_head), are marked `Launch::last_token` for `Executor::forward_last`.

mod blob;
mod derived;
mod last_token;

pub use blob::PlacedWeight;

use super::jit::compile_kernels;
use super::kernels::rope::rope_table;
use super::{HeadDtype, PACK_BLOCK, PACK_ORDER};
use crate::BackendError;
use crate::kernel::HalfFormat;
use crate::kernel::{
    ActQuantParams, AddParams, AttentionParams, EmbeddingParams, KernelKind, KvStoreParams,
    MatmulI8Params, MatmulNtHalfParams, MatmulNtParams, Relu2MulParams, RmsNormParams,
    RmsNormQuantParams, RopeParams, TernaryMatmulParams,
};
use bitnet_ir::module::Function;
use bitnet_ir::{Dim, ElemType, OpKind, TensorType, ValueId, WeightStore};
use bitnet_runtime::{AlignedBytes, BufRef, KernelFn, Launch, Program, Region, Rows};
use blob::{Blob, is_constant};
use last_token::{last_token_ops, mark_last_token};
use std::cell::Cell;
use std::collections::BTreeMap;

/// Choices the lowering makes that change numerics or layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LowerOptions {
    /// How the lm_head stores its weights.
    pub head: HeadDtype,
}

/// Where the memory plan put each value: arena buffers and KV-cache slots (cache arguments and the
/// attention results that alias them), each as (offset, bytes).
#[derive(Clone, Debug, Default)]
pub struct Assignment {
    /// Arena placement of each planned value.
    pub arena: BTreeMap<ValueId, (u64, u64)>,
    /// KV-region placement of each cache value.
    pub kv: BTreeMap<ValueId, (u64, u64)>,
    /// Arena size.
    pub arena_bytes: u64,
    /// KV-region size.
    pub kv_bytes: u64,
}

fn unsupported(op: &'static str, detail: impl Into<String>) -> BackendError {
    BackendError::Unsupported {
        backend: "cpu",
        op,
        detail: detail.into(),
    }
}

fn input(msg: impl Into<String>) -> BackendError {
    BackendError::Input(msg.into())
}

/// Everything a `Program` holds except compiled code: the kernels to generate, the launch plan, the
/// sizes and the weights blob. The JIT (`lower`) and the AOT compiler (`super::aot`) both start here.
#[derive(Clone, Debug)]
pub struct ProgramParts {
    /// The distinct kernels, by index (launches refer to them).
    pub kinds: Vec<KernelKind>,
    /// The launches, in order.
    pub launches: Vec<Launch>,
    /// Arena size in bytes.
    pub arena_bytes: u64,
    /// KV-cache size in bytes.
    pub kv_bytes: u64,
    /// The weights, laid out as the launches expect (64-byte aligned tensors), in the buffer the
    /// executor adopts.
    pub weights: AlignedBytes,
    /// The largest T (the context length).
    pub context: u64,
    /// Vocabulary size.
    pub vocab: u64,
    /// Where the token ids go.
    pub tokens: BufRef,
    /// Where the logits come from.
    pub logits: BufRef,
    /// Every `nn.weight` the function names, by name: where its bytes are in `weights`.
    pub weight_index: BTreeMap<String, PlacedWeight>,
}

impl ProgramParts {
    /// The `Program` running these parts with `fns` (one entry point per kind, in order), keeping
    /// `code` alive as long as the program.
    pub fn into_program(
        self,
        fns: Vec<KernelFn>,
        code: Box<dyn std::any::Any + Send + Sync>,
    ) -> Result<Program, BackendError> {
        if fns.len() != self.kinds.len() {
            return Err(input(format!(
                "{} kernel entry points for {} kernels",
                fns.len(),
                self.kinds.len()
            )));
        }
        let kernels = self.kinds.iter().map(KernelKind::symbol).zip(fns).collect();
        Ok(Program {
            kernels,
            launches: self.launches,
            arena_bytes: self.arena_bytes,
            kv_bytes: self.kv_bytes,
            weights: self.weights,
            context: self.context,
            vocab: self.vocab,
            tokens: self.tokens,
            logits: self.logits,
            code,
        })
    }
}

/// Lowers `f` (planned per `plan`) into a JIT-compiled `Program` reading weights from `store`.
pub fn lower(
    f: &Function,
    plan: &Assignment,
    store: &dyn WeightStore,
) -> Result<Program, BackendError> {
    lower_with(f, plan, store, &LowerOptions::default())
}

/// `lower` with `options`.
pub fn lower_with(
    f: &Function,
    plan: &Assignment,
    store: &dyn WeightStore,
    options: &LowerOptions,
) -> Result<Program, BackendError> {
    let parts = plan_program_compact(f, plan, store, options)?;
    let (module, fns) = compile_kernels(&parts.kinds)?;
    parts.into_program(fns, Box::new(JitCode(module)))
}

/// Lowers `f` (planned per `plan`) into kernels, a launch plan, sizes and weights, without generating
/// code.
pub fn plan_program(
    f: &Function,
    plan: &Assignment,
    store: &dyn WeightStore,
) -> Result<ProgramParts, BackendError> {
    plan_program_with(f, plan, store, &LowerOptions::default())
}

/// `plan_program` with `options`. The embedding table stays f32 (`KernelKind::Embedding` with
/// `bf16: false`), for backends whose embedding kernel reads only that.
pub fn plan_program_with(
    f: &Function,
    plan: &Assignment,
    store: &dyn WeightStore,
    options: &LowerOptions,
) -> Result<ProgramParts, BackendError> {
    plan_program_inner(f, plan, store, options, false)
}

/// `plan_program_with`, with an embedding table whose values are all exactly bf16 stored as bf16
/// in `matmul_half::layout` order (`KernelKind::Embedding` with `bf16: true`): half the bytes, and
/// with an lm_head tied to it and read as bf16 (`HeadDtype::Auto`), one copy for both. What the
/// CPU backend (JIT and AOT) compiles with.
pub fn plan_program_compact(
    f: &Function,
    plan: &Assignment,
    store: &dyn WeightStore,
    options: &LowerOptions,
) -> Result<ProgramParts, BackendError> {
    plan_program_inner(f, plan, store, options, true)
}

fn plan_program_inner(
    f: &Function,
    plan: &Assignment,
    store: &dyn WeightStore,
    options: &LowerOptions,
    bf16_embedding: bool,
) -> Result<ProgramParts, BackendError> {
    let context = f
        .symbols
        .first()
        .map(|s| s.max)
        .ok_or_else(|| input("the function has no token-count symbol"))?;
    let mut blob = Blob::new(f, context, store);
    let mut kinds: BTreeMap<KernelKind, usize> = BTreeMap::new();
    let mut kind_list: Vec<KernelKind> = Vec::new();
    let mut launches: Vec<Launch> = Vec::new();
    let arena = |v: ValueId| -> Result<BufRef, BackendError> {
        plan.arena
            .get(&v)
            .map(|&(offset, bytes)| BufRef {
                region: Region::Arena,
                offset,
                bytes,
            })
            .ok_or_else(|| input(format!("value {} has no arena buffer", v.0)))
    };
    let kv = |v: ValueId| -> Result<BufRef, BackendError> {
        plan.kv
            .get(&v)
            .map(|&(offset, bytes)| BufRef {
                region: Region::Kv,
                offset,
                bytes,
            })
            .ok_or_else(|| input(format!("cache value {} has no KV slot", v.0)))
    };
    let last = |ty: &TensorType| -> Result<u64, BackendError> {
        ty.dims
            .last()
            .and_then(Dim::as_static)
            .ok_or_else(|| input(format!("{ty} has no static last dimension")))
    };
    // Scratch after the planned arena (the int8 head's quantized activations).
    let mut arena_end = plan.arena_bytes;
    let mut scratch = |bytes: u64| {
        let offset = arena_end.div_ceil(64) * 64;
        arena_end = offset + bytes;
        BufRef {
            region: Region::Arena,
            offset,
            bytes,
        }
    };
    let tail_ops = last_token_ops(f);
    let in_tail = Cell::new(false);
    let mut tail_launches: Vec<usize> = Vec::new();
    let mut add = |kind: KernelKind, bufs: Vec<BufRef>, rows: Rows, label: String| {
        let next = kind_list.len();
        let index = *kinds.entry(kind.clone()).or_insert_with(|| {
            kind_list.push(kind);
            next
        });
        if in_tail.get() {
            tail_launches.push(launches.len());
        }
        launches.push(Launch {
            kernel: index,
            bufs,
            rows,
            label,
            last_token: None,
        });
    };
    for id in f.op_order() {
        in_tail.set(tail_ops.contains(&id));
        let op = f.op(id);
        let label = format!(
            "{} → %{}",
            op.kind.name(),
            op.results.first().map_or(0, |r| r.0)
        );
        let operand = |i: usize| {
            op.operands
                .get(i)
                .copied()
                .ok_or_else(|| input(format!("{label}: missing operand {i}")))
        };
        let result = |i: usize| {
            op.results
                .get(i)
                .copied()
                .ok_or_else(|| input(format!("{label}: missing result {i}")))
        };
        let f32_only = |v: ValueId| -> Result<(), BackendError> {
            if f.ty(v).elem == ElemType::F32 {
                Ok(())
            } else {
                Err(unsupported(
                    op.kind.name(),
                    format!("{} (f32 only)", f.ty(v)),
                ))
            }
        };
        match op.kind {
            OpKind::Weight | OpKind::Constant => {}
            // Views share their operand's buffer (the plan put them in the same bytes).
            OpKind::Reshape | OpKind::Squeeze | OpKind::Unsqueeze => {}
            // Ops on constants alone (a transposed weight, the reciprocal of a scale) are evaluated at
            // compile time where their result is used.
            _ if !op.operands.is_empty() && op.operands.iter().all(|&x| is_constant(f, x)) => {}
            OpKind::Embedding => {
                let (table, ids, out) = (operand(0)?, operand(1)?, result(0)?);
                f32_only(table)?;
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
                let paired = if bf16_embedding {
                    blob.bf16_pairs(f, table, hidden as usize)?
                } else {
                    None
                };
                let table_buf = match paired {
                    Some(b) => b,
                    None => blob.constant(f, table, ElemType::F32)?,
                };
                let bufs = vec![table_buf, arena(ids)?, arena(out)?];
                add(
                    KernelKind::Embedding(EmbeddingParams {
                        vocab,
                        hidden,
                        bf16: paired.is_some(),
                    }),
                    bufs,
                    Rows::PerToken(1),
                    label,
                );
            }
            OpKind::RmsNormQuant => {
                let (x, w) = (operand(0)?, operand(1)?);
                f32_only(x)?;
                let k = last(f.ty(x))?;
                let eps_norm = op.attrs.float("eps_norm").unwrap_or(1e-5) as f32;
                let eps = op.attrs.float("eps").unwrap_or(1e-5) as f32;
                let bufs = vec![
                    arena(x)?,
                    blob.constant(f, w, ElemType::F32)?,
                    arena(result(0)?)?,
                    arena(result(1)?)?,
                ];
                let reciprocal = op.attrs.bool_or("reciprocal", false);
                let kind = KernelKind::RmsNormQuant(RmsNormQuantParams {
                    k,
                    eps_norm_bits: eps_norm.to_bits(),
                    eps_bits: eps.to_bits(),
                    reciprocal,
                });
                add(kind, bufs, Rows::PerToken(1), label);
            }
            OpKind::ActQuant => {
                let x = operand(0)?;
                f32_only(x)?;
                let eps = op.attrs.float("eps").unwrap_or(1e-5) as f32;
                let bufs = vec![arena(x)?, arena(result(0)?)?, arena(result(1)?)?];
                let reciprocal = op.attrs.bool_or("reciprocal", false);
                add(
                    KernelKind::ActQuant(ActQuantParams {
                        k: last(f.ty(x))?,
                        eps_bits: eps.to_bits(),
                        reciprocal,
                    }),
                    bufs,
                    Rows::PerToken(1),
                    label,
                );
            }
            OpKind::RmsNorm => {
                let (x, w) = (operand(0)?, operand(1)?);
                f32_only(x)?;
                if op.attrs.int_or("axis", -1) != -1
                    && op.attrs.int_or("axis", -1) != f.ty(x).rank() as i64 - 1
                {
                    return Err(unsupported("nn.rms_norm", "only over the last axis"));
                }
                let eps = op.attrs.float("eps").unwrap_or(1e-5) as f32;
                let bufs = vec![
                    arena(x)?,
                    blob.constant(f, w, ElemType::F32)?,
                    arena(result(0)?)?,
                ];
                add(
                    KernelKind::RmsNorm(RmsNormParams {
                        k: last(f.ty(x))?,
                        eps_bits: eps.to_bits(),
                    }),
                    bufs,
                    Rows::PerToken(1),
                    label,
                );
            }
            OpKind::TernaryMatmulPacked => {
                let block = op.attrs.int_or("block", 0) as usize;
                let order = op.attrs.str("order").unwrap_or("");
                if block != PACK_BLOCK
                    || order != PACK_ORDER.name()
                    || op.attrs.str("rowsum").is_some()
                {
                    return Err(unsupported(
                        "bit.ternary_matmul_packed",
                        format!(
                            "layout block {block} order {order:?}; this backend reads block {PACK_BLOCK}, order {}",
                            PACK_ORDER.name()
                        ),
                    ));
                }
                let (xq, xs, w, ws) = (operand(0)?, operand(1)?, operand(2)?, operand(3)?);
                let residual = op.operands.get(4).copied();
                let out = result(0)?;
                let k = last(f.ty(xq))?;
                let n = last(f.ty(out))?;
                let mut bufs = vec![
                    arena(xq)?,
                    arena(xs)?,
                    blob.constant(f, w, ElemType::U8)?,
                    blob.constant(f, ws, ElemType::F32)?,
                ];
                if let Some(r) = residual {
                    bufs.push(arena(r)?);
                }
                bufs.push(arena(out)?);
                add(
                    KernelKind::TernaryMatmul(TernaryMatmulParams {
                        k,
                        n,
                        residual: residual.is_some(),
                    }),
                    bufs,
                    Rows::Static(n),
                    label,
                );
            }
            OpKind::TernaryMatmul => {
                return Err(unsupported(
                    "bit.ternary_matmul",
                    "ternary weights must be packed first (run pack-weights with the cpu layout)",
                ));
            }
            OpKind::Relu2Mul => {
                let (g, u, out) = (operand(0)?, operand(1)?, result(0)?);
                f32_only(g)?;
                if f.ty(g) != f.ty(u) {
                    return Err(unsupported("bit.relu2_mul", "broadcasting operands"));
                }
                add(
                    KernelKind::Relu2Mul(Relu2MulParams {
                        n: last(f.ty(out))?,
                    }),
                    vec![arena(g)?, arena(u)?, arena(out)?],
                    Rows::PerToken(1),
                    label,
                );
            }
            OpKind::Add => {
                let (a, b, out) = (operand(0)?, operand(1)?, result(0)?);
                f32_only(a)?;
                if f.ty(a) != f.ty(out) || f.ty(b) != f.ty(out) || f.ty(out).rank() != 2 {
                    return Err(unsupported(
                        "nn.add",
                        "only [T, n] + [T, n] (no broadcasting, no constant operand)",
                    ));
                }
                add(
                    KernelKind::Add(AddParams {
                        n: last(f.ty(out))?,
                    }),
                    vec![arena(a)?, arena(b)?, arena(out)?],
                    Rows::PerToken(1),
                    label,
                );
            }
            OpKind::Rope => {
                let (x, out) = (operand(0)?, result(0)?);
                f32_only(x)?;
                let width = last(f.ty(x))?;
                let d = op.attrs.int_or("head_dim", 0) as u64;
                let theta = op.attrs.float("theta").unwrap_or(10000.0) as f32;
                let table = rope_table(context as usize, d as usize, theta);
                let table_bytes: Vec<u8> = table.iter().flat_map(|v| v.to_le_bytes()).collect();
                let tb = blob.push(
                    format!("rope:{context}:{d}:{:08x}", theta.to_bits()),
                    &table_bytes,
                );
                add(
                    KernelKind::Rope(RopeParams { width, head_dim: d }),
                    vec![arena(x)?, tb, arena(out)?],
                    Rows::PerToken(1),
                    label,
                );
            }
            OpKind::Attention => {
                let (q, k, v, kc, vc) = (
                    operand(0)?,
                    operand(1)?,
                    operand(2)?,
                    operand(3)?,
                    operand(4)?,
                );
                f32_only(q)?;
                let heads = op.attrs.int_or("heads", 0) as u64;
                let kv_heads = op.attrs.int_or("kv_heads", 0) as u64;
                let kvw = last(f.ty(k))?;
                let d = kvw / kv_heads.max(1);
                let cache_len = f
                    .ty(kc)
                    .dims
                    .first()
                    .and_then(Dim::as_static)
                    .ok_or_else(|| input("symbolic cache"))?;
                let scale = op.attrs.float("scale").unwrap_or(1.0 / (d as f64).sqrt());
                add(
                    KernelKind::KvStore(KvStoreParams { kvw }),
                    vec![arena(k)?, arena(v)?, kv(kc)?, kv(vc)?],
                    Rows::PerToken(1),
                    format!("{label} (cache write)"),
                );
                let kind = KernelKind::Attention(AttentionParams {
                    heads,
                    kv_heads,
                    head_dim: d,
                    context: cache_len,
                    scale_bits: scale.to_bits(),
                });
                add(
                    kind,
                    vec![arena(q)?, kv(kc)?, kv(vc)?, arena(result(0)?)?],
                    Rows::PerToken(heads),
                    label,
                );
            }
            OpKind::MatMul => {
                let (x, wt) = (operand(0)?, operand(1)?);
                f32_only(x)?;
                // nn.matmul(x, transpose(W)) with a constant W [n, k]: the lm_head.
                let w = f
                    .def_op(wt)
                    .map(|o| f.op(o))
                    .filter(|o| {
                        o.kind == OpKind::Transpose && o.attrs.ints("perm") == Some(&[1, 0])
                    })
                    .and_then(|o| o.operands.first().copied())
                    .filter(|&w| is_constant(f, w))
                    .ok_or_else(|| {
                        unsupported(
                            "nn.matmul",
                            "only x·Wᵀ with a constant weight W (the lm_head)",
                        )
                    })?;
                let out = result(0)?;
                if f.ty(x).rank() != 2 {
                    return Err(unsupported(
                        "nn.matmul",
                        format!("{} (rank 2 activations only)", f.ty(x)),
                    ));
                }
                let k = last(f.ty(x))?;
                let n = last(f.ty(out))?;
                let head = if f.returns.first() == Some(&out) {
                    options.head
                } else {
                    HeadDtype::Auto
                };
                // The lm_head in 16-bit floats: f16 when asked, bf16 (the same values, half the
                // bytes) when every weight is exactly a bf16 (a bf16 checkpoint's lm_head).
                let half = match head {
                    HeadDtype::Auto if f.returns.first() == Some(&out) => Some(HalfFormat::Bf16),
                    HeadDtype::F16 => Some(HalfFormat::F16),
                    HeadDtype::Auto | HeadDtype::I8 => None,
                };
                let ku = k as usize;
                let half_buf = match half {
                    Some(HalfFormat::Bf16) => {
                        blob.bf16_pairs(f, w, ku)?.map(|b| (b, HalfFormat::Bf16))
                    }
                    Some(format) => Some((blob.f16_rows(f, w, ku)?, format)),
                    None => None,
                };
                match (head, half_buf) {
                    (HeadDtype::Auto | HeadDtype::F16, Some((wbuf, format))) => {
                        add(
                            KernelKind::MatmulNtHalf(MatmulNtHalfParams { k, n, format }),
                            vec![arena(x)?, wbuf, arena(out)?],
                            Rows::Static(n),
                            label,
                        );
                    }
                    (HeadDtype::Auto | HeadDtype::F16, None) => {
                        // Exactly bf16 weights of another matmul are read as bf16, others as f32.
                        let (wbuf, bf16) = match blob.constant(f, w, ElemType::BF16) {
                            Ok(b) => (b, true),
                            Err(_) => (blob.constant(f, w, ElemType::F32)?, false),
                        };
                        let bufs = vec![arena(x)?, wbuf, arena(out)?];
                        add(
                            KernelKind::MatmulNt(MatmulNtParams { k, n, bf16 }),
                            bufs,
                            Rows::Static(n),
                            label,
                        );
                    }
                    (HeadDtype::I8, _) => {
                        let (wq, ws) = blob.i8_rows(f, w, ku)?;
                        let xq = scratch(context.saturating_mul(k));
                        let xs = scratch(context.saturating_mul(4));
                        add(
                            KernelKind::ActQuant(ActQuantParams {
                                k,
                                eps_bits: 1e-5f32.to_bits(),
                                reciprocal: false,
                            }),
                            vec![arena(x)?, xq, xs],
                            Rows::PerToken(1),
                            format!("{label} (activation quant)"),
                        );
                        add(
                            KernelKind::MatmulI8(MatmulI8Params { k, n }),
                            vec![xq, xs, wq, ws, arena(out)?],
                            Rows::Static(n),
                            label,
                        );
                    }
                }
            }
            other => return Err(unsupported(other.name(), "no cpu kernel yet")),
        }
    }
    let tokens = f
        .args
        .first()
        .copied()
        .ok_or_else(|| input("the function has no token argument"))?;
    if f.ty(tokens).elem != ElemType::I64 {
        return Err(input(format!(
            "the first argument must be the token ids (i64), found {}",
            f.ty(tokens)
        )));
    }
    let logits = f
        .returns
        .first()
        .copied()
        .ok_or_else(|| input("the function returns nothing"))?;
    let vocab = last(f.ty(logits))?;
    blob.place_remaining(f)?;
    mark_last_token(&mut launches, &tail_launches, context);
    Ok(ProgramParts {
        kinds: kind_list,
        launches,
        arena_bytes: arena_end,
        kv_bytes: plan.kv_bytes,
        weights: blob.bytes,
        weight_index: blob.weights,
        context,
        vocab,
        tokens: arena(tokens)?,
        logits: arena(logits)?,
    })
}

/// Keeps the JIT module (and so the kernels' code) alive as long as the program; never read.
struct JitCode(#[allow(dead_code)] cranelift_jit::JITModule);

// SAFETY: the JIT module is only kept alive, never used again after finalization; its code pages are
// immutable, so sharing it between threads is sound.
unsafe impl Send for JitCode {}
unsafe impl Sync for JitCode {}
