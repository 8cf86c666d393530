//! CUDA kernel for `Attention` (buffers as `KernelKind` documents): one block of
//! `ATTENTION_THREADS` per row `r` (query head `h = r mod heads` of token `t = r / heads`), reading
//! KV head `h / (heads / kv_heads)` of cache rows `0..=pos + t` (head-major caches, as `KvStore`
//! writes them; causal; prefill and decode alike,
//! grouped-query heads by the division).
//!
//! 1. scores: each warp takes keys `j ≡ warp (mod warps)`; its lanes split the head's columns, sum
//!    `q_i·k_ji` in f32 and combine by shuffles; `s_j = dot · scale` goes to dynamic shared memory
//!    (`context` f32: the launch's `shared_bytes`);
//! 2. `m = max_j s_j` over the block, `e_j = exp(s_j − m)` (`ex2.approx`), `sum = Σ e_j` (block tree);
//! 3. `out_c = (Σ_j e_j·v_jc) / sum`, one thread per column, keys in order.
//!
//! f32 throughout, unlike the interpreter's f64: the scores carry f32 rounding, so the error grows
//! with `scale·Σ|q·k|` (about 1e-5 relative for small scores; the bound is stated on
//! `KernelKind::Attention` and checked by the kernel harness). `q` is read in step 1 and `out` written in step 3, after barriers, so `out`
//! may be `q` itself.

use super::super::emit::{Cg, Kb, R};
use super::imm;
use crate::kernel::AttentionParams;
use inkwell::context::Context;
use inkwell::module::Module;

/// The most dynamic shared memory a launch asks for without an opt-in (48 KiB): 12288 scores.
pub const MAX_SHARED_BYTES: u32 = 48 * 1024;

/// Defines the kernel.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &AttentionParams,
    threads: u64,
) -> R<()> {
    let AttentionParams {
        heads,
        kv_heads,
        head_dim,
        context,
        scale_bits,
    } = *p;
    if kv_heads == 0 || heads % kv_heads != 0 || head_dim == 0 {
        return Err(Cg("heads must be a positive multiple of kv_heads".into()));
    }
    let kb = Kb::kernel(cx, m, name, 4)?;
    let f32t = cx.f32_type();
    let (q, kc, vc, out) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?, kb.buf(3)?);
    let scores =
        kb.dynamic_shared(u32::try_from(context).map_err(|_| Cg("context too long".into()))?)?;
    let r = kb.block_id()?;
    let hn = kb.i64c(imm(heads)?);
    let t = kb.udiv(r, hn)?;
    let h = kb.urem(r, hn)?;
    let kvh = kb.udiv(h, kb.i64c(imm(heads / kv_heads)?))?;
    let d = kb.i64c(imm(head_dim)?);
    let keys = kb.add(kb.add(kb.pos()?, t)?, kb.i64c(1))?;
    let qrow = kb.mul(r, d)?;
    // Head-major caches (`KvStore`): row j of KV head g at (g·C + j)·d, so rows are d apart.
    let col0 = kb.mul(kvh, kb.i64c(imm(context.saturating_mul(head_dim))?))?;
    let tid = kb.tid()?;
    let lane = kb.urem(tid, kb.i64c(kb.warp() as i64))?;
    let warp = kb.udiv(tid, kb.i64c(kb.warp() as i64))?;
    let warps = threads.div_ceil(kb.warp());
    let scale = kb.f32c(f64::from_bits(scale_bits) as f32);
    // 1. Scores, and each lane's running max of them.
    let mloc = kb.var(f32t, kb.f32c(f32::NEG_INFINITY))?;
    kb.for_range(warp, keys, kb.i64c(imm(warps)?), |j| {
        let part = kb.var(f32t, kb.f32c(0.0))?;
        let krow = kb.add(kb.mul(j, d)?, col0)?;
        kb.for_range(lane, d, kb.i64c(kb.warp() as i64), |i| {
            let p = kb.fmul(
                kb.load_f32(q, kb.add(qrow, i)?)?,
                kb.load_f32(kc, kb.add(krow, i)?)?,
            )?;
            let acc = kb.get(&part)?.into_float_value();
            kb.set(&part, kb.fadd(acc, p)?)
        })?;
        let dot = kb.warp_reduce(kb.get(&part)?, |a, b| {
            Ok(kb.fadd(a.into_float_value(), b.into_float_value())?.into())
        })?;
        let s = kb.fmul(dot.into_float_value(), scale)?;
        kb.if_then(kb.eq(lane, kb.i64c(0))?, || kb.store(scores, j, s))?;
        let mv = kb.get(&mloc)?.into_float_value();
        kb.set(&mloc, kb.fmax(mv, s)?)
    })?;
    let mx = kb
        .block_reduce(kb.get(&mloc)?, threads, "max", |a, b| {
            Ok(kb.fmax(a.into_float_value(), b.into_float_value())?.into())
        })?
        .into_float_value();
    // 2. Exponentials and their sum.
    let sloc = kb.var(f32t, kb.f32c(0.0))?;
    kb.for_range(tid, keys, kb.i64c(imm(threads)?), |j| {
        let e = kb.exp_approx(kb.fsub(kb.load_f32(scores, j)?, mx)?)?;
        kb.store(scores, j, e)?;
        let acc = kb.get(&sloc)?.into_float_value();
        kb.set(&sloc, kb.fadd(acc, e)?)
    })?;
    let sum = kb
        .block_reduce(kb.get(&sloc)?, threads, "sum", |a, b| {
            Ok(kb.fadd(a.into_float_value(), b.into_float_value())?.into())
        })?
        .into_float_value();
    // 3. The weighted values, one column per thread.
    kb.for_range(tid, d, kb.i64c(imm(threads)?), |c| {
        let acc = kb.var(f32t, kb.f32c(0.0))?;
        let col = kb.add(col0, c)?;
        kb.for_range(kb.i64c(0), keys, kb.i64c(1), |j| {
            let p = kb.fmul(
                kb.load_f32(scores, j)?,
                kb.load_f32(vc, kb.add(kb.mul(j, d)?, col)?)?,
            )?;
            let a = kb.get(&acc)?.into_float_value();
            kb.set(&acc, kb.fadd(a, p)?)
        })?;
        let v = kb.fdiv(kb.get(&acc)?.into_float_value(), sum)?;
        kb.store(out, kb.add(qrow, c)?, v)
    })?;
    kb.finish()
}
