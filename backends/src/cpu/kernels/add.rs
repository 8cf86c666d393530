//! Kernel `Add` (see `KernelKind::Add`): `out = a + b` in f32, eight lanes per iteration
//! (two f32x4), then four, then one at a time; bit-identical to the reference.
//!
//! The reference adds in f64 and rounds once to f32: the f64 sum of two f32 values, rounded to f32,
//! is the correctly rounded f32 sum (f64 has more than twice f32's significand bits), which `fadd` is.
//! The full-precision baseline's residual adds (`nn.add %h, %proj`) are what reaches this kernel.

use crate::BackendError;
use crate::cpu::emit::loops::{emit_for_signed, emit_static_loop};
use crate::cpu::emit::{MEM, TableLoads, define_kernel, off32, size};
use crate::kernel::AddParams;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &AddParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let n = size(name, p.n)?;
    off32(name, (n * 4) as u64)?;
    define_kernel(module, name, TableLoads::Fixed, &[], |b, entry| {
        let a = entry.buf(b, 0);
        let c = entry.buf(b, 1);
        let out = entry.buf(b, 2);
        emit_for_signed(b, entry.row_begin, entry.row_end, 1, |b, row| {
            let ro = b.ins().imul_imm_s(row, (n * 4) as i64);
            let rows = [a, c, out].map(|p| b.ins().iadd(p, ro));
            emit_static_loop(b, name, (n / 8) as u64, 32, |b, o| {
                let [aa, ca, oa] = rows.map(|p| b.ins().iadd(p, o));
                for off in [0, 16] {
                    add(b, true, aa, ca, oa, off);
                }
                Ok(())
            })?;
            let [aa, ca, oa] = rows;
            let mut e = n / 8 * 8;
            if n - e >= 4 {
                add(b, true, aa, ca, oa, off32(name, (e * 4) as u64)?);
                e += 4;
            }
            for e in e..n {
                add(b, false, aa, ca, oa, off32(name, (e * 4) as u64)?);
            }
            Ok(())
        })
    })
}

/// `out = a + b` for four lanes (`vector`) or one, at byte offset `off`. Both operands are loaded
/// before the store, so `out` may be `a` or `b` itself.
fn add(b: &mut FunctionBuilder, vector: bool, a: Value, c: Value, out: Value, off: i32) {
    let ty = if vector { F32X4 } else { F32 };
    let av = b.ins().load(ty, MEM, a, off);
    let cv = b.ins().load(ty, MEM, c, off);
    let s = b.ins().fadd(av, cv);
    b.ins().store(MEM, s, out, off);
}
