//! Kernel `Relu2Mul` (see `KernelKind::Relu2Mul`): `out = (r·r)·u` with `r = max(g, 0)` in
//! f32, eight lanes per iteration (two f32x4), bit-identical to the reference.
//!
//! `r` is `g < 0 ? 0 : g`: a NaN gate compares false and stays NaN (Cranelift's `fmax` would also
//! keep it, at more instructions), and `-0` stays `-0`, whose square is `+0` as the reference's.
//! The reference squares and multiplies in f64 and rounds each result to f32 once: a product of two
//! f32 values is exact in f64, so that is the correctly rounded f32 product, which `fmul` is.

use crate::BackendError;
use crate::cpu::emit::loops::{emit_for_signed, emit_static_loop};
use crate::cpu::emit::{MEM, TableLoads, define_kernel, off32, size};
use crate::kernel::Relu2MulParams;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &Relu2MulParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let n = size(name, p.n)?;
    off32(name, (n * 4) as u64)?;
    define_kernel(module, name, TableLoads::Fixed, &[], |b, entry| {
        let g = entry.buf(b, 0);
        let u = entry.buf(b, 1);
        let out = entry.buf(b, 2);
        let zero = b.ins().f32const(0.0);
        let zero4 = b.ins().splat(F32X4, zero);
        emit_for_signed(b, entry.row_begin, entry.row_end, 1, |b, row| {
            let ro = b.ins().imul_imm_s(row, (n * 4) as i64);
            let rows = [g, u, out].map(|p| b.ins().iadd(p, ro));
            emit_static_loop(b, name, (n / 8) as u64, 32, |b, o| {
                let [ga, ua, oa] = rows.map(|p| b.ins().iadd(p, o));
                for off in [0, 16] {
                    relu2_mul(b, true, zero4, ga, ua, oa, off);
                }
                Ok(())
            })?;
            let [ga, ua, oa] = rows;
            let mut e = n / 8 * 8;
            if n - e >= 4 {
                relu2_mul(b, true, zero4, ga, ua, oa, off32(name, (e * 4) as u64)?);
                e += 4;
            }
            for e in e..n {
                relu2_mul(b, false, zero, ga, ua, oa, off32(name, (e * 4) as u64)?);
            }
            Ok(())
        })
    })
}

/// `out = (r·r)·u`, `r = g < 0 ? 0 : g`, for four lanes (`vector`) or one at byte offset `off`.
fn relu2_mul(
    b: &mut FunctionBuilder,
    vector: bool,
    zero: Value,
    g: Value,
    u: Value,
    out: Value,
    off: i32,
) {
    let ty = if vector { F32X4 } else { F32 };
    let gv = b.ins().load(ty, MEM, g, off);
    let uv = b.ins().load(ty, MEM, u, off);
    let neg = b.ins().fcmp(FloatCC::LessThan, gv, zero);
    let r = if vector {
        // Clear the negative lanes: `g & !mask`.
        let mask = b.ins().bitcast(F32X4, MemFlagsData::new(), neg);
        b.ins().band_not(gv, mask)
    } else {
        b.ins().select(neg, zero, gv)
    };
    let sq = b.ins().fmul(r, r);
    let h = b.ins().fmul(sq, uv);
    b.ins().store(MEM, h, out, off);
}
