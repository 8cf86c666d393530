//! Kernel `Embedding` (see `KernelKind::Embedding` for its buffers, rows and numerics): each row t
//! copies table row `ids[t]` to output row t. The ids are validated by the runtime.
//!
//! - f32 table: 16-byte vector moves (64 bytes per loop iteration). A copy moves bits, so the result
//!   is the interpreter's exactly.
//! - bf16 table (`bf16: true`), rows in `matmul_half::layout` order (the lm_head's layout, so a tied
//!   head and embedding share one copy): per group of eight weights, i32 lane l of the group's 16
//!   bytes holds weight l in its low half and weight 4 + l in its high half. A bf16 is the high half
//!   of an f32, so the low halves shifted left by 16 are weights 0–3 as f32 and the high halves
//!   masked with `0xFFFF_0000` are weights 4–7: two 16-byte stores per group, exact. The last
//!   `hidden mod 8` weights (stored in order after the groups) widen one at a time.

use crate::BackendError;
use crate::cpu::emit::loops::emit_for_unsigned;
use crate::cpu::emit::simd::emit_copy;
use crate::cpu::emit::{MEM, TableLoads, define_kernel, imm64, mul, off32};
use crate::kernel::EmbeddingParams;
use cranelift_codegen::ir::{InstBuilder, types};
use cranelift_module::{FuncId, Module};

/// Keeps the high half of a lane (a bf16 there is an f32).
const BF16_MASK: i64 = 0xFFFF_0000u32 as i32 as i64;

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &EmbeddingParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let EmbeddingParams { hidden, bf16, .. } = *p;
    let row_bytes = mul(name, hidden, 4)?;
    let row_imm = imm64(name, row_bytes)?;
    let src_imm = imm64(name, mul(name, hidden, if bf16 { 2 } else { 4 })?)?;
    define_kernel(module, name, TableLoads::Movable, &[], |b, e| {
        let table = e.buf(b, 0);
        let ids = e.buf(b, 1);
        let out = e.buf(b, 2);
        let mask = if bf16 {
            let m = b.ins().iconst(types::I32, BF16_MASK);
            Some(b.ins().splat(types::I32X4, m))
        } else {
            None
        };
        emit_for_unsigned(b, e.row_begin, e.row_end, 1, &[], false, |b, t, _| {
            let id_at = b.ins().ishl_imm_s(t, 3);
            let id_at = b.ins().iadd(ids, id_at);
            let id = b.ins().load(types::I64, MEM, id_at, 0);
            let src = b.ins().imul_imm_s(id, src_imm);
            let src = b.ins().iadd(table, src);
            let dst = b.ins().imul_imm_s(t, row_imm);
            let dst = b.ins().iadd(out, dst);
            let Some(mask) = mask else {
                emit_copy(name, b, src, dst, row_bytes)?;
                return Ok(vec![]);
            };
            let groups = hidden / 8;
            if groups > 0 {
                let zero = b.ins().iconst(types::I64, 0);
                let end = b.ins().iconst(types::I64, imm64(name, groups)?);
                emit_for_unsigned(b, zero, end, 1, &[], true, |b, g, _| {
                    let s = b.ins().ishl_imm_s(g, 4);
                    let s = b.ins().iadd(src, s);
                    let d = b.ins().ishl_imm_s(g, 5);
                    let d = b.ins().iadd(dst, d);
                    let raw = b.ins().load(types::I32X4, MEM, s, 0);
                    let lo = b.ins().ishl_imm_u(raw, 16);
                    let hi = b.ins().band(raw, mask);
                    b.ins().store(MEM, lo, d, 0);
                    b.ins().store(MEM, hi, d, 16);
                    Ok(vec![])
                })?;
            }
            for at in groups * 8..hidden {
                let raw = b.ins().load(types::I16, MEM, src, off32(name, at * 2)?);
                let wide = b.ins().uextend(types::I32, raw);
                let bits = b.ins().ishl_imm_u(wide, 16);
                b.ins().store(MEM, bits, dst, off32(name, at * 4)?);
            }
            Ok(vec![])
        })?;
        Ok(())
    })
}
