//! CUDA kernel for `BiasAdd` (buffers as `KernelKind` documents): one block per token row,
//! `out[t, c] = x[t, c] + b[c]` in f32 element by element (exact; each element is read and written by
//! one thread, so `out` may be `x` itself).

use super::super::emit::{Kb, R};
use super::imm;
use crate::kernel::BiasAddParams;
use inkwell::context::Context;
use inkwell::module::Module;

/// Defines the kernel.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &BiasAddParams,
    threads: u64,
) -> R<()> {
    let n = p.n;
    let kb = Kb::kernel(cx, m, name, 3)?;
    let (x, bias, out) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?);
    let nn = kb.i64c(imm(n)?);
    let base = kb.mul(kb.block_id()?, nn)?;
    kb.for_range(kb.tid()?, nn, kb.i64c(imm(threads)?), |c| {
        let at = kb.add(base, c)?;
        let v = kb.fadd(kb.load_f32(x, at)?, kb.load_f32(bias, c)?)?;
        kb.store(out, at, v)
    })?;
    kb.finish()
}
