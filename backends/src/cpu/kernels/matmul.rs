//! Kernel `MatmulNt` (see `KernelKind::MatmulNt` for its buffers, rows and numerics):
//! `out[t, r] = x[t]·w[r]`.
//!
//! Row r streams weight row r once and dots it with every token's x row (the weight row stays in L1
//! across tokens). The dot runs in f32: eight f32x4 accumulators over blocks of 32 elements (eight
//! accumulators keep enough loads in flight to stream the weights at about the single-core memory
//! bandwidth), then up to seven more f32x4 steps for `k mod 32` into accumulators 0.., then the
//! pairwise sum `((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))` reduced across lanes as
//! `(l0 + l1) + (l2 + l3)`, then the last `k mod 4` products one at a time. This is not the
//! interpreter's exactly rounded f64 sum: the error is that of an f32 sum of about k/32 terms per
//! lane (tested to 1e-5 relative to the largest output; about 5e-7 observed on random data).
//!
//! `x` and `w` are loaded as read-only memory (Cranelift may fold the loads into the arithmetic),
//! so `out` must not alias `x`.

use crate::BackendError;
use crate::cpu::emit::loops::emit_for_unsigned;
use crate::cpu::emit::{MEM, RO, TableLoads, define_kernel, imm64, mul, off32};
use crate::kernel::MatmulNtParams;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

/// f32x4 accumulators of the main loop (a power of two).
const ACCS: usize = 8;

/// Emits the f32 dot product of the `k` floats at `xp` and the `k` weights at `wp` (f32, or bf16
/// widened exactly: a bf16 is the high half of an f32).
fn emit_dot(
    name: &str,
    b: &mut FunctionBuilder,
    xp: Value,
    wp: Value,
    k: u64,
    bf16: bool,
) -> Result<Value, BackendError> {
    if bf16 {
        return emit_dot_bf16(name, b, xp, wp, k);
    }
    let block = 4 * ACCS as u64;
    let blocks = k / block;
    let zero = b.ins().f32const(0.0);
    let zero4 = b.ins().splat(types::F32X4, zero);
    let mut accs = vec![zero4; ACCS];
    if blocks > 0 {
        let start = b.ins().iconst(types::I64, 0);
        let end = b.ins().iconst(types::I64, imm64(name, blocks * block * 4)?);
        accs = emit_for_unsigned(b, start, end, 4 * block as i64, &accs, true, |b, o, acc| {
            let xo = b.ins().iadd(xp, o);
            let wo = b.ins().iadd(wp, o);
            let mut next = Vec::with_capacity(ACCS);
            for (a, &acc) in (0i32..).zip(acc) {
                let xv = b.ins().load(types::F32X4, RO, xo, a * 16);
                let wv = b.ins().load(types::F32X4, RO, wo, a * 16);
                let prod = b.ins().fmul(xv, wv);
                next.push(b.ins().fadd(acc, prod));
            }
            Ok(next)
        })?;
    }
    let mut at = blocks * block;
    let mut a = 0;
    while k - at >= 4 {
        let o = off32(name, at * 4)?;
        let xv = b.ins().load(types::F32X4, RO, xp, o);
        let wv = b.ins().load(types::F32X4, RO, wp, o);
        let prod = b.ins().fmul(xv, wv);
        accs[a] = b.ins().fadd(accs[a], prod);
        a += 1;
        at += 4;
    }
    // Pairwise: (a0 + a1) + (a2 + a3), and so on.
    while accs.len() > 1 {
        accs = accs
            .chunks(2)
            .map(|p| match *p {
                [a, c] => b.ins().fadd(a, c),
                _ => p[0],
            })
            .collect();
    }
    let v = accs[0];
    let lanes: Vec<Value> = (0..4).map(|l| b.ins().extractlane(v, l)).collect();
    let l01 = b.ins().fadd(lanes[0], lanes[1]);
    let l23 = b.ins().fadd(lanes[2], lanes[3]);
    let mut s = b.ins().fadd(l01, l23);
    while at < k {
        let o = off32(name, at * 4)?;
        let xv = b.ins().load(types::F32, RO, xp, o);
        let wv = b.ins().load(types::F32, RO, wp, o);
        let prod = b.ins().fmul(xv, wv);
        s = b.ins().fadd(s, prod);
        at += 1;
    }
    Ok(s)
}

/// `emit_dot` for bf16 weights: blocks of 32 as in the f32 path (each 16-byte load of eight bf16
/// widens into two f32x4 for accumulators 2j and 2j+1), then the same pairwise reduction, then the
/// last `k mod 32` products one at a time.
fn emit_dot_bf16(
    name: &str,
    b: &mut FunctionBuilder,
    xp: Value,
    wp: Value,
    k: u64,
) -> Result<Value, BackendError> {
    let block = 4 * ACCS as u64;
    let blocks = k / block;
    let zero = b.ins().f32const(0.0);
    let zero4 = b.ins().splat(types::F32X4, zero);
    let mut accs = vec![zero4; ACCS];
    let flags = cranelift_codegen::ir::MemFlagsData::new()
        .with_endianness(cranelift_codegen::ir::Endianness::Little);
    if blocks > 0 {
        let start = b.ins().iconst(types::I64, 0);
        let end = b.ins().iconst(types::I64, imm64(name, blocks)?);
        accs = emit_for_unsigned(b, start, end, 1, &accs, true, |b, i, acc| {
            let xo = b.ins().imul_imm_s(i, 4 * block as i64);
            let xo = b.ins().iadd(xp, xo);
            let wo = b.ins().imul_imm_s(i, 2 * block as i64);
            let wo = b.ins().iadd(wp, wo);
            let mut next = acc.to_vec();
            for j in 0..ACCS / 2 {
                let raw = b.ins().load(types::I16X8, RO, wo, (j * 16) as i32);
                for (half, a) in [(0usize, 2 * j), (1, 2 * j + 1)] {
                    let wide = if half == 0 {
                        b.ins().uwiden_low(raw)
                    } else {
                        b.ins().uwiden_high(raw)
                    };
                    let bits = b.ins().ishl_imm_u(wide, 16);
                    let wv = b.ins().bitcast(types::F32X4, flags, bits);
                    let xv = b.ins().load(types::F32X4, RO, xo, (a * 16) as i32);
                    let prod = b.ins().fmul(xv, wv);
                    next[a] = b.ins().fadd(next[a], prod);
                }
            }
            Ok(next)
        })?;
    }
    while accs.len() > 1 {
        accs = accs
            .chunks(2)
            .map(|p| match *p {
                [a, c] => b.ins().fadd(a, c),
                _ => p[0],
            })
            .collect();
    }
    let v = accs[0];
    let lanes: Vec<Value> = (0..4).map(|l| b.ins().extractlane(v, l)).collect();
    let l01 = b.ins().fadd(lanes[0], lanes[1]);
    let l23 = b.ins().fadd(lanes[2], lanes[3]);
    let mut s = b.ins().fadd(l01, l23);
    let mut at = blocks * block;
    while at < k {
        let xv = b.ins().load(types::F32, RO, xp, off32(name, at * 4)?);
        let raw = b.ins().load(types::I16, RO, wp, off32(name, at * 2)?);
        let wide = b.ins().uextend(types::I32, raw);
        let bits = b.ins().ishl_imm_u(wide, 16);
        let wv = b.ins().bitcast(types::F32, flags, bits);
        let prod = b.ins().fmul(xv, wv);
        s = b.ins().fadd(s, prod);
        at += 1;
    }
    Ok(s)
}

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &MatmulNtParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let MatmulNtParams { k, n, bf16 } = *p;
    let row_bytes = imm64(name, mul(name, k, 4)?)?;
    let w_row_bytes = imm64(name, mul(name, k, if bf16 { 2 } else { 4 })?)?;
    let out_row_bytes = imm64(name, mul(name, n, 4)?)?;
    off32(name, mul(name, k, 4)?)?;
    define_kernel(module, name, TableLoads::Movable, &[], |b, e| {
        let x = e.buf(b, 0);
        let w = e.buf(b, 1);
        let out = e.buf(b, 2);
        let tokens = e.tokens(b);
        let zero = b.ins().iconst(types::I64, 0);
        emit_for_unsigned(b, e.row_begin, e.row_end, 1, &[], false, |b, r, _| {
            let wr = b.ins().imul_imm_s(r, w_row_bytes);
            let wr = b.ins().iadd(w, wr);
            let or = b.ins().ishl_imm_s(r, 2);
            let or = b.ins().iadd(out, or);
            emit_for_unsigned(b, zero, tokens, 1, &[], false, |b, t, _| {
                let xt = b.ins().imul_imm_s(t, row_bytes);
                let xt = b.ins().iadd(x, xt);
                let s = emit_dot(name, b, xt, wr, k, bf16)?;
                let ot = b.ins().imul_imm_s(t, out_row_bytes);
                let ot = b.ins().iadd(or, ot);
                b.ins().store(MEM, s, ot, 0);
                Ok(vec![])
            })?;
            Ok(vec![])
        })?;
        Ok(())
    })
}
