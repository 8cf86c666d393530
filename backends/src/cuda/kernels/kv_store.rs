//! CUDA kernel for `KvStore` (buffers as `KernelKind` documents): one block per token `t`, copying
//! `k[t]` and `v[t]` into cache row `pos + t` (the runtime checks `pos + T <= C` before the launch).

use super::super::emit::{Kb, R};
use super::imm;
use crate::kernel::KvStoreParams;
use inkwell::context::Context;
use inkwell::module::Module;

/// Defines the kernel.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &KvStoreParams,
    threads: u64,
) -> R<()> {
    let kvw = p.kvw;
    let kb = Kb::kernel(cx, m, name, 4)?;
    let (k, v, kc, vc) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?, kb.buf(3)?);
    let w = kb.i64c(imm(kvw)?);
    let t = kb.block_id()?;
    let src = kb.mul(t, w)?;
    let dst = kb.mul(kb.add(kb.pos()?, t)?, w)?;
    kb.for_range(kb.tid()?, w, kb.i64c(imm(threads)?), |c| {
        let (s, d) = (kb.add(src, c)?, kb.add(dst, c)?);
        kb.store(kc, d, kb.load_f32(k, s)?)?;
        kb.store(vc, d, kb.load_f32(v, s)?)
    })?;
    kb.finish()
}
