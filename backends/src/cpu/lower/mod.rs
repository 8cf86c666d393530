//! Lowering a planned function into a `Program`: one launch per op (two for `nn.attention`: the cache
//! write, then the attention), one kernel per distinct `KernelKind`, every buffer placed by the memory
//! plan, and the weights (including derived packed weights and the RoPE tables) laid out in one blob.
//!
//! This file is the driver: the walk over the ops in order, each done as `table::lowering` says
//! (per-op functions in `ops`, the lm_head policy in `head`), the launches and the distinct kernels,
//! and `ProgramParts`. The weights blob is `blob` (with the derived forms in `derived`); the launches
//! only the logits need are found by `last_token`; each launch's label (where in the model it is)
//! is `site_label`'s.
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
mod head;
mod last_token;
mod ops;
mod site_label;
mod table;

pub use blob::PlacedWeight;

use super::HeadDtype;
use super::jit::compile_kernels;
use crate::BackendError;
use crate::kernel::{KernelKind, KernelOp};
use bitnet_ir::module::{Function, Operation};
use bitnet_ir::{ElemType, ValueId, WeightStore};
use bitnet_runtime::{AlignedBytes, BufRef, KernelFn, Launch, Program, Region, Rows};
use blob::{Blob, is_constant};
use last_token::{last_token_ops, mark_last_token};
use std::collections::BTreeMap;
use table::OpLowering;

/// Choices the lowering makes that change numerics or layout. Each backend has its constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowerOptions {
    /// How the lm_head stores its weights.
    pub head: HeadDtype,
    /// How every other dense `x·Wᵀ` projection (a dense checkpoint's q/k/v/o, gate/up/down) stores
    /// its weights; `Auto` keeps them as they are (bf16 when exactly bf16, else f32).
    pub dense: HeadDtype,
    /// Store an embedding table whose values are all exactly bf16 (else all exactly f16) in that
    /// format in `layout` order (`KernelKind::Embedding` with `half`): half the bytes, and with an
    /// lm_head tied to it and read in the same format (`HeadDtype::Auto` picks it), one copy for
    /// both. Off, the table stays f32, for a backend whose embedding kernel reads only that.
    pub half_embedding: bool,
}

impl LowerOptions {
    /// The CPU backend's options (JIT and AOT): the lm_head as `head` says, a 16-bit embedding
    /// where exact.
    pub fn cpu(head: HeadDtype) -> LowerOptions {
        LowerOptions {
            head,
            dense: HeadDtype::Auto,
            half_embedding: true,
        }
    }

    /// These options with dense projections stored as `dense` says.
    pub fn with_dense(self, dense: HeadDtype) -> LowerOptions {
        LowerOptions { dense, ..self }
    }

    /// The CUDA backend's options: the lm_head in f16 (f32 accumulation), the embedding f32 (what
    /// its embedding kernel reads).
    pub fn cuda() -> LowerOptions {
        LowerOptions {
            head: HeadDtype::F16,
            dense: HeadDtype::Auto,
            half_embedding: false,
        }
    }
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
    /// `Program::batchable`: true, since every kernel kind that depends on the sequence
    /// (`KernelOp::per_sequence`) has its launches marked `Launch::per_sequence`.
    pub batchable: bool,
    /// Every `nn.weight` the function names, by name: where its bytes are in `weights`.
    pub weight_index: BTreeMap<String, PlacedWeight>,
}

impl ProgramParts {
    /// How the lm_head's weight is stored (`f16`, `bf16`, `f32` or `i8`), read off the kernel of
    /// the matmul that writes the logits (its output is its last buffer): what `--head-dtype auto`
    /// picked, for `compile` to say. `None` for a program whose logits no matmul writes.
    pub fn head_storage(&self) -> Option<&'static str> {
        self.launches
            .iter()
            .filter(|l| l.bufs.last() == Some(&self.logits))
            .find_map(|l| match self.kinds.get(l.kernel)? {
                KernelKind::MatmulNtHalf(p) => Some(p.format.name()),
                KernelKind::MatmulNt(p) => Some(if p.bf16 { "bf16" } else { "f32" }),
                KernelKind::MatmulI8(_) => Some("i8"),
                KernelKind::MatmulQ4(_) => Some("q4"),
                _ => None,
            })
    }

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
            batchable: self.batchable,
            code,
        })
    }
}

/// Lowers `f` (planned per `plan`) into a JIT-compiled `Program` reading weights from `store`.
pub fn lower(
    f: &Function,
    plan: &Assignment,
    store: &dyn WeightStore,
    options: &LowerOptions,
) -> Result<Program, BackendError> {
    let parts = plan_program(f, plan, store, options)?;
    let (module, fns) = compile_kernels(&parts.kinds)?;
    parts.into_program(fns, Box::new(JitCode(module)))
}

/// The state of one lowering, which the per-op functions (`ops`, `head`) append to: the blob, the
/// distinct kernels, the launches in order, and the scratch placed after the planned arena.
pub(super) struct Lowering<'a> {
    f: &'a Function,
    plan: &'a Assignment,
    options: &'a LowerOptions,
    /// The largest T (the context length).
    context: u64,
    blob: Blob<'a>,
    /// Each distinct kernel with its index in `kind_list`.
    kinds: BTreeMap<KernelKind, usize>,
    kind_list: Vec<KernelKind>,
    launches: Vec<Launch>,
    /// The end of the arena: the planned arena, then the scratch placed so far.
    arena_end: u64,
    /// The int8 activations (and their per-token scales) of int8 matmuls, by `k`: placed once in
    /// scratch and reused, since each is consumed by the launch right after its quantization.
    act_scratch: BTreeMap<u64, (BufRef, BufRef)>,
    /// The launches only the logits need (indices into `launches`).
    tail_launches: Vec<usize>,
    /// Whether the op being lowered is one only the logits need.
    in_tail: bool,
    /// The kernel ops the table lets the op being lowered emit.
    emits: &'static [KernelOp],
}

impl Lowering<'_> {
    /// The arena buffer of `v`.
    fn arena(&self, v: ValueId) -> Result<BufRef, BackendError> {
        self.plan
            .arena
            .get(&v)
            .map(|&(offset, bytes)| BufRef {
                region: Region::Arena,
                offset,
                bytes,
            })
            .ok_or_else(|| input(format!("value {} has no arena buffer", v.0)))
    }

    /// The KV-cache slot of cache value `v`.
    fn kv(&self, v: ValueId) -> Result<BufRef, BackendError> {
        self.plan
            .kv
            .get(&v)
            .map(|&(offset, bytes)| BufRef {
                region: Region::Kv,
                offset,
                bytes,
            })
            .ok_or_else(|| input(format!("cache value {} has no KV slot", v.0)))
    }

    /// The scratch buffers of per-token int8 activations `[T, k]` and their f32 scales `[T]`,
    /// placed once per `k`.
    fn act_scratch(&mut self, k: u64) -> (BufRef, BufRef) {
        if let Some(&bufs) = self.act_scratch.get(&k) {
            return bufs;
        }
        let xq = self.scratch(self.context.saturating_mul(k));
        let xs = self.scratch(self.context.saturating_mul(4));
        self.act_scratch.insert(k, (xq, xs));
        (xq, xs)
    }

    /// `bytes` of scratch after the planned arena (int8 matmuls' quantized activations), 64-byte
    /// aligned.
    fn scratch(&mut self, bytes: u64) -> BufRef {
        let offset = self.arena_end.div_ceil(64) * 64;
        self.arena_end = offset + bytes;
        BufRef {
            region: Region::Arena,
            offset,
            bytes,
        }
    }

    /// Appends a launch of `kind`, numbering the kernel when it is new. The kind must be one that
    /// the table says the current op emits.
    fn launch(
        &mut self,
        kind: KernelKind,
        bufs: Vec<BufRef>,
        rows: Rows,
        label: String,
    ) -> Result<(), BackendError> {
        if !self.emits.contains(&kind.op()) {
            return Err(input(format!(
                "internal: {label} launches a {} kernel that the lowering table does not list",
                kind.op().name()
            )));
        }
        let per_sequence = if kind.op().per_sequence() {
            Some(sequence_strides(&bufs, self.context, &label)?)
        } else {
            None
        };
        let row_group = kind.row_group();
        let next = self.kind_list.len();
        let kernel = match self.kinds.get(&kind) {
            Some(&index) => index,
            None => {
                self.kinds.insert(kind.clone(), next);
                self.kind_list.push(kind);
                next
            }
        };
        if self.in_tail {
            self.tail_launches.push(self.launches.len());
        }
        self.launches.push(Launch {
            kernel,
            bufs,
            rows,
            label,
            last_token: None,
            per_sequence,
            row_group,
        });
        Ok(())
    }
}

/// One op being lowered: the function it is in, the op, and the label of its launches.
pub(super) struct Site<'a> {
    f: &'a Function,
    op: &'a Operation,
    /// `[layer N ]ROLE: dialect.op → %result` (`site_label`).
    label: String,
}

impl Site<'_> {
    /// Operand `i`.
    fn operand(&self, i: usize) -> Result<ValueId, BackendError> {
        self.op
            .operands
            .get(i)
            .copied()
            .ok_or_else(|| input(format!("{}: missing operand {i}", self.label)))
    }

    /// Result `i`.
    fn result(&self, i: usize) -> Result<ValueId, BackendError> {
        self.op
            .results
            .get(i)
            .copied()
            .ok_or_else(|| input(format!("{}: missing result {i}", self.label)))
    }

    /// Refuses `v` unless it is f32 (what the kernels read).
    fn f32_only(&self, v: ValueId) -> Result<(), BackendError> {
        if self.f.ty(v).elem == ElemType::F32 {
            Ok(())
        } else {
            Err(unsupported(
                self.op.kind.name(),
                format!("{} (f32 only)", self.f.ty(v)),
            ))
        }
    }
}

/// Lowers `f` (planned per `plan`) into kernels, a launch plan, sizes and weights, without generating
/// code: each op in order, as the table (`table::lowering`) says. The JIT (`lower`), the AOT
/// compiler and the CUDA backend all start here.
pub fn plan_program(
    f: &Function,
    plan: &Assignment,
    store: &dyn WeightStore,
    options: &LowerOptions,
) -> Result<ProgramParts, BackendError> {
    let context = f
        .symbols
        .first()
        .map(|s| s.max)
        .ok_or_else(|| input("the function has no token-count symbol"))?;
    let mut lw = Lowering {
        f,
        plan,
        options,
        context,
        blob: Blob::new(f, context, store),
        kinds: BTreeMap::new(),
        kind_list: Vec::new(),
        launches: Vec::new(),
        arena_end: plan.arena_bytes,
        act_scratch: BTreeMap::new(),
        tail_launches: Vec::new(),
        in_tail: false,
        emits: &[],
    };
    let tail_ops = last_token_ops(f);
    let mut labeler = site_label::Labeler::default();
    for id in f.op_order() {
        let op = f.op(id);
        // An op on constants alone (a transposed weight, the reciprocal of a scale) is evaluated at
        // compile time where its result is used.
        if !op.operands.is_empty() && op.operands.iter().all(|&x| is_constant(f, x)) {
            continue;
        }
        match table::lowering(op.kind) {
            OpLowering::Free | OpLowering::View => {}
            OpLowering::FoldOnly => return Err(unsupported(op.kind.name(), table::FOLD_ONLY)),
            OpLowering::Unsupported(reason) => return Err(unsupported(op.kind.name(), reason)),
            OpLowering::Kernel(entry) => {
                lw.in_tail = tail_ops.contains(&id);
                lw.emits = entry.emits;
                let site = Site {
                    f,
                    op,
                    label: labeler.label(f, op),
                };
                (entry.lower)(&mut lw, &site)?;
            }
        }
    }
    lw.into_parts()
}

impl Lowering<'_> {
    /// The parts, once every op is lowered: the remaining weights placed, the last-token launches
    /// marked.
    fn into_parts(mut self) -> Result<ProgramParts, BackendError> {
        let f = self.f;
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
        let vocab = ops::last_dim(f.ty(logits))?;
        self.blob.place_remaining(f)?;
        mark_last_token(&mut self.launches, &self.tail_launches, self.context);
        Ok(ProgramParts {
            tokens: self.arena(tokens)?,
            logits: self.arena(logits)?,
            kinds: self.kind_list,
            launches: self.launches,
            arena_bytes: self.arena_end,
            kv_bytes: self.plan.kv_bytes,
            weights: self.blob.bytes,
            weight_index: self.blob.weights,
            context: self.context,
            vocab,
            batchable: true,
        })
    }
}

/// The strides of `Launch::per_sequence` for a launch over `bufs`: an activation buffer holds
/// `context` rows of equal size; weights and the KV cache have none (the executor points a
/// sequence's launches at its own cache).
fn sequence_strides(bufs: &[BufRef], context: u64, label: &str) -> Result<Vec<u64>, BackendError> {
    bufs.iter()
        .enumerate()
        .map(|(i, b)| match b.region {
            Region::Weights | Region::Kv => Ok(0),
            Region::Arena if context > 0 && b.bytes % context == 0 => Ok(b.bytes / context),
            Region::Arena => Err(input(format!(
                "internal: {label}: buffer {i} of {} bytes does not hold {context} equal token rows",
                b.bytes
            ))),
        })
        .collect()
}

/// Keeps the JIT module (and so the kernels' code) alive as long as the program; never read.
struct JitCode(#[allow(dead_code)] cranelift_jit::JITModule);

// SAFETY: the JIT module is only kept alive, never used again after finalization; its code pages are
// immutable, so sharing it between threads is sound.
unsafe impl Send for JitCode {}
unsafe impl Sync for JitCode {}
