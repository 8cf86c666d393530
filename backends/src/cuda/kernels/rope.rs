//! CUDA kernel for `Rope` (buffers as `KernelKind` documents): one block per token `t` (position
//! `p = pos + t`), one thread per rotated pair `(i, i + d/2)` of each head:
//! `y[i] = x[i]·c − x[i+d/2]·s`, `y[i+d/2] = x[i+d/2]·c + x[i]·s` with `c`, `s` from table row `p`,
//! each product rounded to f32 and then added (no fused multiply-add): the interpreter's arithmetic,
//! bit for bit. A thread loads both inputs of its pair before it stores, so `out` may be `x` itself.

use super::super::emit::{Cg, Kb, R};
use super::imm;
use crate::kernel::RopeParams;
use inkwell::context::Context;
use inkwell::module::Module;

/// Defines the kernel.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &RopeParams,
    threads: u64,
) -> R<()> {
    let RopeParams { width, head_dim } = *p;
    if head_dim < 2 {
        return Err(Cg("head_dim must be at least 2".into()));
    }
    let half = head_dim / 2;
    let kb = Kb::kernel(cx, m, name, 3)?;
    let (x, table, out) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?);
    let t = kb.block_id()?;
    let d = kb.i64c(imm(head_dim)?);
    let hh = kb.i64c(imm(half)?);
    let row = kb.mul(t, kb.i64c(imm(width)?))?;
    let trow = kb.mul(kb.add(kb.pos()?, t)?, d)?;
    let pairs = kb.i64c(imm(width / head_dim * half)?);
    kb.for_range(kb.tid()?, pairs, kb.i64c(imm(threads)?), |idx| {
        let head = kb.udiv(idx, hh)?;
        let i = kb.urem(idx, hh)?;
        let a0 = kb.add(row, kb.add(kb.mul(head, d)?, i)?)?;
        let a1 = kb.add(a0, hh)?;
        let x0 = kb.load_f32(x, a0)?;
        let x1 = kb.load_f32(x, a1)?;
        let c = kb.load_f32(table, kb.add(trow, i)?)?;
        let s = kb.load_f32(table, kb.add(kb.add(trow, hh)?, i)?)?;
        let y0 = kb.fsub(kb.fmul(x0, c)?, kb.fmul(x1, s)?)?;
        let y1 = kb.fadd(kb.fmul(x1, c)?, kb.fmul(x0, s)?)?;
        kb.store(out, a0, y0)?;
        kb.store(out, a1, y1)
    })?;
    kb.finish()
}
