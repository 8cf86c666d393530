//! Kernel `SiluMul` (see `KernelKind::SiluMul`): `out = f32(g·σ(g))·u`, one element at a time,
//! bit-identical to the reference.
//!
//! The reference (`bit.silu_mul`, i.e. `nn.silu` then `nn.mul`) widens the gate to f64 and takes
//! `σ(g) = 1/(1 + exp(-g))` when `g ≥ 0`, else `e/(1 + e)` with `e = exp(g)`. The kernel calls the
//! runtime's `exp` once, on `-g` or `g` as that branch would, computes both quotients (IEEE division
//! cannot trap) and selects the branch's one, so every f64 operation is the reference's own. A NaN gate
//! takes the `g < 0` side in both and stays NaN. The silu is rounded to f32 (`fdemote`, to nearest),
//! then multiplied by `u` in f32, which is the reference's f64 product rounded once. Each element is
//! loaded before its result is stored, so `out` may be `g` or `u`.

use crate::BackendError;
use crate::cpu::emit::loops::{emit_for_signed, emit_static_loop};
use crate::cpu::emit::{MEM, TableLoads, codegen_err, define_kernel, off32, size};
use crate::kernel::SiluMulParams;
use bitnet_runtime::math::EXP_F64;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F64};
use cranelift_codegen::ir::{AbiParam, FuncRef, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Linkage, Module};

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &SiluMulParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let n = size(name, p.n)?;
    off32(name, (n * 4) as u64)?;
    let mut exp_sig = module.make_signature();
    exp_sig.params.push(AbiParam::new(F64));
    exp_sig.returns.push(AbiParam::new(F64));
    let exp_id = module
        .declare_function(EXP_F64, Linkage::Import, &exp_sig)
        .map_err(|e| codegen_err(name, e))?;
    define_kernel(module, name, TableLoads::Fixed, &[exp_id], |b, entry| {
        let exp = entry.import(name, 0)?;
        let g = entry.buf(b, 0);
        let u = entry.buf(b, 1);
        let out = entry.buf(b, 2);
        emit_for_signed(b, entry.row_begin, entry.row_end, 1, |b, row| {
            let ro = b.ins().imul_imm_s(row, (n * 4) as i64);
            let rows = [g, u, out].map(|p| b.ins().iadd(p, ro));
            emit_static_loop(b, name, n as u64, 4, |b, o| {
                let [ga, ua, oa] = rows.map(|p| b.ins().iadd(p, o));
                silu_mul(b, name, exp, ga, ua, oa)
            })
        })
    })
}

/// `out = f32(g·σ(g))·u` for the element at `g`, `u`, `out`.
fn silu_mul(
    b: &mut FunctionBuilder,
    name: &str,
    exp: FuncRef,
    g: Value,
    u: Value,
    out: Value,
) -> Result<(), BackendError> {
    let g32 = b.ins().load(F32, MEM, g, 0);
    let uv = b.ins().load(F32, MEM, u, 0);
    let x = b.ins().fpromote(F64, g32);
    let zero = b.ins().f64const(0.0);
    let one = b.ins().f64const(1.0);
    let nonneg = b.ins().fcmp(FloatCC::GreaterThanOrEqual, x, zero);
    let neg_x = b.ins().fneg(x);
    let arg = b.ins().select(nonneg, neg_x, x);
    let call = b.ins().call(exp, &[arg]);
    let e = b
        .inst_results(call)
        .first()
        .copied()
        .ok_or_else(|| codegen_err(name, "the exp call has no result"))?;
    let denom = b.ins().fadd(one, e);
    let from_nonneg = b.ins().fdiv(one, denom);
    let from_neg = b.ins().fdiv(e, denom);
    let sigma = b.ins().select(nonneg, from_nonneg, from_neg);
    let silu = b.ins().fmul(x, sigma);
    let s = b.ins().fdemote(F32, silu);
    let h = b.ins().fmul(s, uv);
    b.ins().store(MEM, h, out, 0);
    Ok(())
}
