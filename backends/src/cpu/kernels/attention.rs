//! Kernel `Attention` (see `KernelKind::Attention` for its buffers, rows and numerics; the cache
//! write before it is `kv_store.rs`).
//!
//! Row r is query head `h = r mod heads` of token `t = r / heads` (its q and out rows
//! are both at `r·head_dim`), reading KV head `g = h / (heads / kv_heads)` of cache rows
//! `0..=pos + t`. The caches are head-major (`kv_store.rs`): row j of head g is at `(g·C + j)·d`.
//! It mirrors the reference `eval` operation by operation, so the result is bit-identical:
//! 1. scores: `s_j = (Σ_i q_i·k_ji) · scale`, each dot an f64 sum in index order from −0.0 (as
//!    `Iterator::sum`), eight keys at a time (eight independent add chains, each still in index
//!    order), then the rest one by one; `m = max_j s_j` as `f64::max` folds it from −∞;
//! 2. `e_j = exp(s_j − m)` through the runtime's `exp` symbol, `sum = Σ_j e_j` in order from −0.0;
//! 3. `w_j = e_j / sum`;
//! 4. `out_c = Σ_j w_j·v_jc` in f64 in order of j from −0.0, rounded to f32 once. The columns are
//!    independent, so 16 of them run at once in eight f64x2 accumulators while j advances.
//!
//! Scratch: the kernel cannot allocate, and the softmax needs every score before the first weight
//! (the max, then the sum). When the context is at most `SCORES_ON_STACK_MAX_CONTEXT`, the scores
//! live in a stack slot of `context` f64 (64 KiB at most), overwritten in place by `e_j`, then by
//! `w_j`: each dot product and each `exp` is computed once. For a longer context a frame that large
//! would be unsafe, so the kernel recomputes instead: pass 1 computes the scores for the max, pass 2
//! recomputes them for the sum, pass 3 recomputes them a tile of `TILE_KEYS` at a time into a stack
//! slot of weights and accumulates that tile into the outputs (three dots and two `exp`s per key,
//! same values since every step is deterministic). Either way the outputs accumulate in a stack slot
//! of `head_dim` f64. The frame is thus up to about 66 KiB: more than a guard page, so it relies on
//! stack probes (`enable_probestack`) or on enough stack below the caller; the executor's workers
//! (`std::thread::spawn`, 2 MiB) and the main thread have far more.
//!
//! On x86-64 with AVX2 and FMA (`emit::uses_float_micro_kernels`) and a head size up to
//! `bitnet_runtime::native::attention::MAX_HEAD_DIM`, the kernel calls the runtime's micro-kernel
//! instead (`bitnet_runtime::native::attention`: the same values bit for bit, keys in the lanes of
//! 512-bit or 256-bit vectors as the running CPU has them, the query heads of a KV head sharing
//! each pass over the cache).
//!
//! `out` may alias `q` (each row reads its q row before it writes its out row, the same place).
//! The caches are loaded as read-only memory: nothing may write them during the launch.

use crate::BackendError;
use crate::cpu::emit::loops::emit_for_unsigned;
use crate::cpu::emit::{
    MEM, RO, TableLoads, bad_params, codegen_err, define_kernel, imm64, mul, off32,
};
use crate::kernel::AttentionParams;
use bitnet_runtime::math::EXP_F64;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, Endianness, FuncRef, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value,
    types,
};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Linkage, Module};

/// The longest context whose scores the kernel keeps in a stack slot (8 bytes each: 64 KiB).
pub const SCORES_ON_STACK_MAX_CONTEXT: u64 = 8192;
/// Keys per tile of the recomputing variant (a stack slot of 8 KiB).
pub const TILE_KEYS: u64 = 1024;
/// Keys whose dot products run together (a power of two: the block count is a mask).
const KEY_BLOCK: usize = 8;
const _: () = assert!(KEY_BLOCK.is_power_of_two());
/// f64x2 accumulators of the output pass (16 columns per pass over the keys).
const OUT_PAIRS: usize = 8;

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &AttentionParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let AttentionParams {
        heads,
        kv_heads,
        head_dim,
        context,
        scale_bits,
    } = *p;
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || head_dim == 0 {
        return Err(bad_params(
            name,
            "heads must be a positive multiple of kv_heads and head_dim positive",
        ));
    }
    if context == 0 {
        return Err(bad_params(name, "the context is empty"));
    }
    // The caches are head-major (`KvStore`): a head's rows are `head_dim` apart, heads `context`
    // rows apart.
    let row_bytes = mul(name, head_dim, 4)?;
    off32(name, mul(name, row_bytes, KEY_BLOCK as u64)?)?;
    off32(name, mul(name, head_dim, 8)?)?;
    let head_bytes = mul(name, row_bytes, context)?;
    // Every head's offset, up to the whole cache's bytes, fits.
    mul(name, head_bytes, kv_heads)?;
    if crate::cpu::emit::uses_float_micro_kernels(module.isa())
        && bitnet_runtime::native::attention::supports(heads, kv_heads, head_dim)
    {
        // The runtime's micro-kernel (`bitnet_runtime::native::attention`: the same values, bit
        // for bit).
        let param = |v: u64, what: &str| {
            i64::try_from(v).map_err(|_| bad_params(name, &format!("{what} beyond i64")))
        };
        let params = [
            param(heads, "heads")?,
            param(kv_heads, "kv_heads")?,
            param(head_dim, "head_dim")?,
            param(context, "context")?,
            scale_bits as i64,
        ];
        return crate::cpu::emit::define_micro_kernel_call(
            module,
            name,
            bitnet_runtime::native::ATTENTION,
            &params,
        );
    }
    let on_stack = context <= SCORES_ON_STACK_MAX_CONTEXT;
    let geo = Geometry {
        heads: imm64(name, heads)?,
        group: imm64(name, heads / kv_heads)?,
        d: head_dim,
        d_bytes: imm64(name, mul(name, head_dim, 4)?)?,
        row_bytes: imm64(name, row_bytes)?,
        head_bytes: imm64(name, head_bytes)?,
        scale: f64::from_bits(scale_bits),
        on_stack,
        scratch_keys: if on_stack { context } else { TILE_KEYS },
    };
    build_attention(module, name, &geo)
}

/// The static parameters of an attention kernel.
struct Geometry {
    heads: i64,
    /// Query heads per KV head.
    group: i64,
    /// Head size.
    d: u64,
    /// Head size in bytes of f32.
    d_bytes: i64,
    /// Bytes between two cache rows of one head (`d_bytes`: the caches are head-major).
    row_bytes: i64,
    /// Bytes between two heads' first cache rows (`context·d_bytes`).
    head_bytes: i64,
    scale: f64,
    /// Whether all scores fit the stack slot (else the recomputing variant).
    on_stack: bool,
    /// f64 entries of the score/weight slot.
    scratch_keys: u64,
}

/// The values of one attention row that every pass uses.
#[derive(Clone, Copy)]
struct Row {
    /// The query row.
    q: Value,
    /// Key row 0 of this row's KV head.
    k: Value,
    /// Value row 0 of this row's KV head.
    v: Value,
}

fn call_exp(b: &mut FunctionBuilder, exp: FuncRef, x: Value) -> Result<Value, BackendError> {
    let call = b.ins().call(exp, &[x]);
    b.inst_results(call)
        .first()
        .copied()
        .ok_or_else(|| BackendError::Input("internal: the exp call has no result".into()))
}

/// Emits the scores of keys `j_begin..j_end` of `row` and hands each, in order of j, to
/// `consume(b, j, s, carried)`, which returns the carried values for the next key.
#[allow(clippy::too_many_arguments)]
fn emit_scores<F>(
    name: &str,
    b: &mut FunctionBuilder,
    geo: &Geometry,
    row: Row,
    j_begin: Value,
    j_end: Value,
    init: &[Value],
    consume: &mut F,
) -> Result<Vec<Value>, BackendError>
where
    F: FnMut(&mut FunctionBuilder, Value, Value, &[Value]) -> Result<Vec<Value>, BackendError>,
{
    let count = b.ins().isub(j_end, j_begin);
    let whole = b.ins().band_imm_s(count, -(KEY_BLOCK as i64));
    let blocks_end = b.ins().iadd(j_begin, whole);
    let zero = b.ins().iconst(types::I64, 0);
    let d_end = b.ins().iconst(types::I64, geo.d_bytes);
    let stride = geo.row_bytes;
    let mut block = |b: &mut FunctionBuilder,
                     j0: Value,
                     keys: usize,
                     carried: &[Value]|
     -> Result<Vec<Value>, BackendError> {
        let krow = b.ins().imul_imm_s(j0, stride);
        let krow = b.ins().iadd(row.k, krow);
        let neg_zero = b.ins().f64const(-0.0);
        let accs = vec![neg_zero; keys];
        let dots = emit_for_unsigned(b, zero, d_end, 4, &accs, true, |b, i, acc| {
            let qi = b.ins().iadd(row.q, i);
            let qv = b.ins().load(types::F32, MEM, qi, 0);
            let qd = b.ins().fpromote(types::F64, qv);
            let ki = b.ins().iadd(krow, i);
            let mut next = Vec::with_capacity(acc.len());
            for (kk, &a) in (0i64..).zip(acc) {
                let off = off32(name, (kk * stride) as u64)?;
                let kv = b.ins().load(types::F32, RO, ki, off);
                let kd = b.ins().fpromote(types::F64, kv);
                let prod = b.ins().fmul(qd, kd);
                next.push(b.ins().fadd(a, prod));
            }
            Ok(next)
        })?;
        let scale = b.ins().f64const(geo.scale);
        let mut carried = carried.to_vec();
        for (kk, dot) in (0i64..).zip(dots) {
            let s = b.ins().fmul(dot, scale);
            let j = b.ins().iadd_imm_s(j0, kk);
            carried = consume(b, j, s, &carried)?;
        }
        Ok(carried)
    };
    let carried = emit_for_unsigned(
        b,
        j_begin,
        blocks_end,
        KEY_BLOCK as i64,
        init,
        false,
        |b, j0, carried| block(b, j0, KEY_BLOCK, carried),
    )?;
    emit_for_unsigned(b, blocks_end, j_end, 1, &carried, false, |b, j, carried| {
        block(b, j, 1, carried)
    })
}

/// Loads two f32 at `at + off` as an f64x2.
fn load_pair(b: &mut FunctionBuilder, at: Value, off: i32) -> Value {
    let raw = b.ins().load(types::F64, RO, at, off);
    // A splat of the 8 bytes (one movddup) gives lanes (a, b, a, b); the low two are promoted.
    let vec = b.ins().splat(types::F64X2, raw);
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let f4 = b.ins().bitcast(types::F32X4, little, vec);
    b.ins().fvpromote_low(f4)
}

/// Adds `Σ_j w_j·v_jc` for keys `js..je` to the accumulators of columns `c0..c0 + 2·pairs (+1 when
/// single)`, where `c0_bytes = 4·c0`; the weights of the keys are consecutive f64 at `w`.
#[allow(clippy::too_many_arguments)]
fn accumulate_columns(
    name: &str,
    b: &mut FunctionBuilder,
    geo: &Geometry,
    acc: Value,
    w: Value,
    w_end: Value,
    v_first: Value,
    c0_bytes: Value,
    pairs: usize,
    single: bool,
) -> Result<(), BackendError> {
    let acc_at = b.ins().ishl_imm_s(c0_bytes, 1);
    let acc_at = b.ins().iadd(acc, acc_at);
    let single_off = off32(name, pairs as u64 * 8)?;
    let mut accs: Vec<Value> = (0i32..)
        .take(pairs)
        .map(|a| b.ins().load(types::F64X2, MEM, acc_at, a * 16))
        .collect();
    if single {
        accs.push(b.ins().load(types::F64, MEM, acc_at, 2 * single_off));
    }
    let v0 = b.ins().iadd(v_first, c0_bytes);
    let mut init = vec![v0];
    init.extend(&accs);
    let stride = geo.row_bytes;
    let out = emit_for_unsigned(b, w, w_end, 8, &init, true, |b, wp, carried| {
        let vr = carried[0];
        let wj = b.ins().load(types::F64, MEM, wp, 0);
        let wv = b.ins().splat(types::F64X2, wj);
        let mut next = Vec::with_capacity(carried.len());
        next.push(b.ins().iadd_imm_s(vr, stride));
        for (a, &acc) in (0i32..).zip(&carried[1..1 + pairs]) {
            let v = load_pair(b, vr, a * 8);
            let prod = b.ins().fmul(wv, v);
            next.push(b.ins().fadd(acc, prod));
        }
        if single {
            let v = b.ins().load(types::F32, RO, vr, single_off);
            let v = b.ins().fpromote(types::F64, v);
            let prod = b.ins().fmul(wj, v);
            next.push(b.ins().fadd(carried[1 + pairs], prod));
        }
        Ok(next)
    })?;
    for (a, &v) in (0i32..).zip(&out[1..1 + pairs]) {
        b.ins().store(MEM, v, acc_at, a * 16);
    }
    if single {
        b.ins().store(MEM, out[1 + pairs], acc_at, 2 * single_off);
    }
    Ok(())
}

/// Adds the weighted values of keys `js..je` (weights at `w`) to all `d` accumulators.
#[allow(clippy::too_many_arguments)]
fn accumulate(
    name: &str,
    b: &mut FunctionBuilder,
    geo: &Geometry,
    row: Row,
    acc: Value,
    w: Value,
    js: Value,
    je: Value,
) -> Result<(), BackendError> {
    let keys = b.ins().isub(je, js);
    let w_bytes = b.ins().ishl_imm_s(keys, 3);
    let w_end = b.ins().iadd(w, w_bytes);
    let v_first = b.ins().imul_imm_s(js, geo.row_bytes);
    let v_first = b.ins().iadd(row.v, v_first);
    let full = geo.d / (2 * OUT_PAIRS as u64);
    let chunk_bytes = 8 * OUT_PAIRS as i64;
    if full > 0 {
        let zero = b.ins().iconst(types::I64, 0);
        let end = b.ins().iconst(types::I64, imm64(name, full)? * chunk_bytes);
        emit_for_unsigned(b, zero, end, chunk_bytes, &[], true, |b, c0, _| {
            accumulate_columns(name, b, geo, acc, w, w_end, v_first, c0, OUT_PAIRS, false)?;
            Ok(vec![])
        })?;
    }
    let rest = geo.d % (2 * OUT_PAIRS as u64);
    if rest > 0 {
        let c0 = b.ins().iconst(types::I64, imm64(name, full)? * chunk_bytes);
        let pairs = (rest / 2) as usize;
        accumulate_columns(
            name,
            b,
            geo,
            acc,
            w,
            w_end,
            v_first,
            c0,
            pairs,
            rest % 2 == 1,
        )?;
    }
    Ok(())
}

fn build_attention(
    module: &mut dyn Module,
    name: &str,
    geo: &Geometry,
) -> Result<FuncId, BackendError> {
    let mut exp_sig = module.make_signature();
    exp_sig.params.push(AbiParam::new(types::F64));
    exp_sig.returns.push(AbiParam::new(types::F64));
    let exp_id = module
        .declare_function(EXP_F64, Linkage::Import, &exp_sig)
        .map_err(|e| codegen_err(name, e))?;
    let scratch_bytes = u32::try_from(mul(name, geo.scratch_keys, 8)?)
        .map_err(|_| bad_params(name, "the scratch slot is too large"))?;
    let acc_bytes = u32::try_from(mul(name, geo.d, 8)?)
        .map_err(|_| bad_params(name, "the accumulator slot is too large"))?;
    let tile = imm64(name, geo.scratch_keys)?;
    define_kernel(module, name, TableLoads::Movable, &[exp_id], |b, e| {
        let exp = e.import(name, 0)?;
        let scratch_slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            scratch_bytes,
            4,
        ));
        let acc_slot = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            acc_bytes,
            4,
        ));
        let scratch = b.ins().stack_addr(types::I64, scratch_slot, 0);
        let acc = b.ins().stack_addr(types::I64, acc_slot, 0);
        let q = e.buf(b, 0);
        let kc = e.buf(b, 1);
        let vc = e.buf(b, 2);
        let out = e.buf(b, 3);
        let pos = e.pos(b);
        let heads = b.ins().iconst(types::I64, geo.heads);
        let group = b.ins().iconst(types::I64, geo.group);
        let zero = b.ins().iconst(types::I64, 0);
        emit_for_unsigned(b, e.row_begin, e.row_end, 1, &[], false, |b, r, _| {
            let t = b.ins().udiv(r, heads);
            let h = b.ins().urem(r, heads);
            let g = b.ins().udiv(h, group);
            let p = b.ins().iadd(pos, t);
            let n = b.ins().iadd_imm_s(p, 1);
            let row_off = b.ins().imul_imm_s(r, geo.d_bytes);
            let head_off = b.ins().imul_imm_s(g, geo.head_bytes);
            let row = Row {
                q: b.ins().iadd(q, row_off),
                k: b.ins().iadd(kc, head_off),
                v: b.ins().iadd(vc, head_off),
            };
            // Pass 1: the scores (kept when they fit) and their max.
            let neg_inf = b.ins().f64const(f64::NEG_INFINITY);
            let on_stack = geo.on_stack;
            let m = emit_scores(name, b, geo, row, zero, n, &[neg_inf], &mut |b, j, s, m| {
                if on_stack {
                    let at = b.ins().ishl_imm_s(j, 3);
                    let at = b.ins().iadd(scratch, at);
                    b.ins().store(MEM, s, at, 0);
                }
                let gt = b.ins().fcmp(FloatCC::GreaterThan, s, m[0]);
                Ok(vec![b.ins().select(gt, s, m[0])])
            })?[0];
            // Pass 2: e_j = exp(s_j - m) (kept when the scores are) and their sum.
            let neg_zero = b.ins().f64const(-0.0);
            let exp_sum = |b: &mut FunctionBuilder, s: Value, sum: Value| {
                let x = b.ins().fsub(s, m);
                let ej = call_exp(b, exp, x)?;
                Ok::<_, BackendError>((ej, b.ins().fadd(sum, ej)))
            };
            let sum = if on_stack {
                let end = b.ins().ishl_imm_s(n, 3);
                let end = b.ins().iadd(scratch, end);
                emit_for_unsigned(b, scratch, end, 8, &[neg_zero], true, |b, at, sum| {
                    let s = b.ins().load(types::F64, MEM, at, 0);
                    let (ej, sum) = exp_sum(b, s, sum[0])?;
                    b.ins().store(MEM, ej, at, 0);
                    Ok(vec![sum])
                })?[0]
            } else {
                emit_scores(
                    name,
                    b,
                    geo,
                    row,
                    zero,
                    n,
                    &[neg_zero],
                    &mut |b, _, s, sum| Ok(vec![exp_sum(b, s, sum[0])?.1]),
                )?[0]
            };
            // Pass 3: the accumulators start at -0.0, then take each tile's weighted values.
            let neg_zero2 = b.ins().splat(types::F64X2, neg_zero);
            for c in (0..geo.d / 2).map(|c| off32(name, c * 16)) {
                b.ins().store(MEM, neg_zero2, acc, c?);
            }
            if geo.d % 2 == 1 {
                b.ins()
                    .store(MEM, neg_zero, acc, off32(name, (geo.d - 1) * 8)?);
            }
            if on_stack {
                let end = b.ins().ishl_imm_s(n, 3);
                let end = b.ins().iadd(scratch, end);
                emit_for_unsigned(b, scratch, end, 8, &[], true, |b, at, _| {
                    let ej = b.ins().load(types::F64, MEM, at, 0);
                    let wj = b.ins().fdiv(ej, sum);
                    b.ins().store(MEM, wj, at, 0);
                    Ok(vec![])
                })?;
                accumulate(name, b, geo, row, acc, scratch, zero, n)?;
            } else {
                emit_for_unsigned(b, zero, n, tile, &[], true, |b, ts, _| {
                    let te = b.ins().iadd_imm_s(ts, tile);
                    let short = b.ins().icmp(IntCC::UnsignedLessThan, te, n);
                    let te = b.ins().select(short, te, n);
                    emit_scores(name, b, geo, row, ts, te, &[], &mut |b, j, s, _| {
                        let x = b.ins().fsub(s, m);
                        let ej = call_exp(b, exp, x)?;
                        let wj = b.ins().fdiv(ej, sum);
                        let at = b.ins().isub(j, ts);
                        let at = b.ins().ishl_imm_s(at, 3);
                        let at = b.ins().iadd(scratch, at);
                        b.ins().store(MEM, wj, at, 0);
                        Ok(vec![])
                    })?;
                    accumulate(name, b, geo, row, acc, scratch, ts, te)?;
                    Ok(vec![])
                })?;
            }
            // Pass 4: round to f32.
            let orow = b.ins().iadd(out, row_off);
            let d_end = b.ins().iconst(types::I64, geo.d_bytes);
            emit_for_unsigned(b, zero, d_end, 4, &[], true, |b, c, _| {
                let at = b.ins().ishl_imm_s(c, 1);
                let at = b.ins().iadd(acc, at);
                let a = b.ins().load(types::F64, MEM, at, 0);
                let y = b.ins().fdemote(types::F32, a);
                let o = b.ins().iadd(orow, c);
                b.ins().store(MEM, y, o, 0);
                Ok(vec![])
            })?;
            Ok(vec![])
        })?;
        Ok(())
    })
}
