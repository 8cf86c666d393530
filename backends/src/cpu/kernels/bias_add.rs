//! Kernel `BiasAdd` (see `KernelKind::BiasAdd`): `out[t] = x[t] + b` in f32 for every row t, one
//! bias row `b` shared by all (a projection's bias: Llama's `attention_bias`, Qwen2's q/k/v), eight
//! lanes per iteration (two f32x4), then four, then one at a time; bit-identical to the reference.
//!
//! The reference adds in f64 and rounds once to f32, which is the correctly rounded f32 sum that
//! `fadd` gives (see `add.rs`). Both operands are loaded before the store, so `out` may be `x`.

use crate::BackendError;
use crate::cpu::emit::loops::{emit_for_signed, emit_static_loop};
use crate::cpu::emit::{MEM, TableLoads, define_kernel, off32, size};
use crate::kernel::BiasAddParams;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &BiasAddParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let n = size(name, p.n)?;
    off32(name, (n * 4) as u64)?;
    define_kernel(module, name, TableLoads::Fixed, &[], |b, entry| {
        let x = entry.buf(b, 0);
        let bias = entry.buf(b, 1);
        let out = entry.buf(b, 2);
        emit_for_signed(b, entry.row_begin, entry.row_end, 1, |b, row| {
            let ro = b.ins().imul_imm_s(row, (n * 4) as i64);
            let rows = [b.ins().iadd(x, ro), bias, b.ins().iadd(out, ro)];
            emit_static_loop(b, name, (n / 8) as u64, 32, |b, o| {
                let [xa, ba, oa] = rows.map(|p| b.ins().iadd(p, o));
                for off in [0, 16] {
                    add(b, true, xa, ba, oa, off);
                }
                Ok(())
            })?;
            let [xa, ba, oa] = rows;
            let mut e = n / 8 * 8;
            if n - e >= 4 {
                add(b, true, xa, ba, oa, off32(name, (e * 4) as u64)?);
                e += 4;
            }
            for e in e..n {
                add(b, false, xa, ba, oa, off32(name, (e * 4) as u64)?);
            }
            Ok(())
        })
    })
}

/// `out = x + bias` for four lanes (`vector`) or one, at byte offset `off`.
fn add(b: &mut FunctionBuilder, vector: bool, x: Value, bias: Value, out: Value, off: i32) {
    let ty = if vector { F32X4 } else { F32 };
    let xv = b.ins().load(ty, MEM, x, off);
    let bv = b.ins().load(ty, MEM, bias, off);
    let s = b.ins().fadd(xv, bv);
    b.ins().store(MEM, s, out, off);
}
