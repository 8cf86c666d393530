//! CUDA kernel for `Add` (buffers as `KernelKind` documents): one block per token row, `out = a + b`
//! in f32 element by element (exact; each element is read and written by one thread, so `out` may be
//! `a` or `b` itself).

use super::super::emit::{Kb, R};
use super::imm;
use crate::kernel::AddParams;
use inkwell::context::Context;
use inkwell::module::Module;

/// Defines the kernel.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &AddParams,
    threads: u64,
) -> R<()> {
    let n = p.n;
    let kb = Kb::kernel(cx, m, name, 3)?;
    let (a, b, out) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?);
    let nn = kb.i64c(imm(n)?);
    let base = kb.mul(kb.block_id()?, nn)?;
    kb.for_range(kb.tid()?, nn, kb.i64c(imm(threads)?), |c| {
        let at = kb.add(base, c)?;
        let v = kb.fadd(kb.load_f32(a, at)?, kb.load_f32(b, at)?)?;
        kb.store(out, at, v)
    })?;
    kb.finish()
}
