//! CUDA kernel for `KvStore` (buffers as `KernelKind` documents): one block per token `t`, copying
//! `k[t]` and `v[t]` into cache row `pos + t` of the head-major caches (column `c` of the row is
//! head `c / d`'s value `c mod d`, stored at `((c / d)·C + pos + t)·d + c mod d`; the runtime checks
//! `pos + T <= C` before the launch).

use super::super::emit::{Cg, Kb, R};
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
    let KvStoreParams {
        kvw,
        head_dim,
        context,
    } = *p;
    if p.kv_heads().is_none() {
        return Err(Cg(
            "the row width must be a positive multiple of the head size".into(),
        ));
    }
    let kb = Kb::kernel(cx, m, name, 4)?;
    let (k, v, kc, vc) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?, kb.buf(3)?);
    let w = kb.i64c(imm(kvw)?);
    let d = kb.i64c(imm(head_dim)?);
    let c_rows = kb.i64c(imm(context)?);
    let t = kb.block_id()?;
    let src = kb.mul(t, w)?;
    let row = kb.add(kb.pos()?, t)?;
    kb.for_range(kb.tid()?, w, kb.i64c(imm(threads)?), |c| {
        let g = kb.udiv(c, d)?;
        let i = kb.urem(c, d)?;
        let dst = kb.add(kb.mul(kb.add(kb.mul(g, c_rows)?, row)?, d)?, i)?;
        let s = kb.add(src, c)?;
        kb.store(kc, dst, kb.load_f32(k, s)?)?;
        kb.store(vc, dst, kb.load_f32(v, s)?)
    })?;
    kb.finish()
}
