//! CUDA kernel for `Relu2Mul` (buffers as `KernelKind` documents): one block per token row,
//! `r = max(g, 0)` with NaN kept (`g < 0 ? 0 : g`), `out = (r·r)·u` in f32: exact, element by
//! element (`out` may be `g` or `u` itself).

use super::super::emit::{Kb, R};
use super::imm;
use crate::kernel::Relu2MulParams;
use inkwell::FloatPredicate;
use inkwell::context::Context;
use inkwell::module::Module;

/// Defines the kernel.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &Relu2MulParams,
    threads: u64,
) -> R<()> {
    let n = p.n;
    let kb = Kb::kernel(cx, m, name, 3)?;
    let (g, u, out) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?);
    let nn = kb.i64c(imm(n)?);
    let base = kb.mul(kb.block_id()?, nn)?;
    kb.for_range(kb.tid()?, nn, kb.i64c(imm(threads)?), |c| {
        let at = kb.add(base, c)?;
        let gv = kb.load_f32(g, at)?;
        let neg =
            kb.b.build_float_compare(FloatPredicate::OLT, gv, kb.f32c(0.0), "neg")?;
        let r =
            kb.b.build_select(neg, kb.f32c(0.0), gv, "r")?
                .into_float_value();
        let v = kb.fmul(kb.fmul(r, r)?, kb.load_f32(u, at)?)?;
        kb.store(out, at, v)
    })?;
    kb.finish()
}
