//! CUDA kernel for `Embedding` (buffers as `KernelKind` documents): one block per token, threads
//! copying the table row of its id (validated by the runtime before the launch) column by column.
//! A copy: exact.

use super::super::emit::{Kb, R};
use super::imm;
use crate::kernel::EmbeddingParams;
use inkwell::context::Context;
use inkwell::module::Module;

/// Defines the kernel.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &EmbeddingParams,
    threads: u64,
) -> R<()> {
    let hidden = p.hidden;
    let kb = Kb::kernel(cx, m, name, 3)?;
    let (table, ids, out) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?);
    let t = kb.block_id()?;
    let h = kb.i64c(imm(hidden)?);
    let id = kb.load(cx.i64_type(), ids, t)?.into_int_value();
    let src = kb.mul(id, h)?;
    let dst = kb.mul(t, h)?;
    kb.for_range(kb.tid()?, h, kb.i64c(imm(threads)?), |c| {
        let v = kb.load_f32(table, kb.add(src, c)?)?;
        kb.store(out, kb.add(dst, c)?, v)
    })?;
    kb.finish()
}
