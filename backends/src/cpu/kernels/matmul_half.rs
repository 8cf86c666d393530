//! Kernel `MatmulNtHalf` (see `KernelKind::MatmulNtHalf` for its buffers, rows and numerics):
//! `out[t, r] = x[t]·w[r]` with 16-bit float weights, f16 (the lm_head of `HeadDtype::F16`) or
//! bf16 (of `HeadDtype::Auto` when the weights are exactly bf16).
//!
//! Each weight row is stored in `layout` order: per group of eight weights, i32 lane l of the
//! group's 16 bytes holds weight l in its low half and weight 4 + l in its high half. Then one
//! 16-byte load gives both halves of the group without a shuffle or a widening:
//! - bf16 is the high half of an f32: the low halves shifted left by 16, and the high halves masked
//!   with `0xFFFF_0000`, are the weights as f32, exactly.
//! - f16: Cranelift 0.135 has no f16 → f32 vector conversion on x86-64 (it does not use F16C), so
//!   the kernel widens with integer operations: the low halves shifted left by 16 (the high halves
//!   as they are), then an arithmetic shift right by 3 and a mask with `0x8FFF_E000`, leave the sign
//!   in bit 31 and the f16 exponent and mantissa in bits 27–13: the f32 whose value is the f16's
//!   times 2^−112 (also for zero and subnormal f16: the f32 is then subnormal and exact). A multiply
//!   by 2^112 (exact) gives the weight. Infinities and NaN do not survive (`layout` refuses weights
//!   that overflow f16).
//!
//! On x86-64 with AVX2 and FMA (`emit::uses_float_micro_kernels`) the kernel calls the runtime's
//! micro-kernel instead (`bitnet_runtime::native::matmul_nt_half`: 512-bit or 256-bit lanes as the
//! running CPU has them, its own fixed order of sums, the same on both and for any number of
//! tokens).
//!
//! With f16, each row first touches one byte per cache line of the next row's weights (loads whose
//! values are unused), so that row is on its way from memory while this one is computed.
//!
//! The dot: eight f32x4 accumulators over blocks of 32 weights (lanes 0–3 of group j into
//! accumulator 2j mod 8, lanes 4–7 into 2j + 1), fused multiply-adds when the ISA has FMA, then the
//! remaining whole groups of 8 into accumulators 0.., the pairwise reduction
//! `((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))` across lanes as `(l0 + l1) + (l2 + l3)`,
//! and the last `k mod 8` weights (stored in order after the groups) one at a time. The error is
//! that of an f32 sum of about k/32 terms per lane (`MatmulNt`'s tolerance).

use crate::BackendError;
use crate::cpu::emit::loops::emit_for_unsigned;
use crate::cpu::emit::{MEM, RO, TableLoads, bad_params, define_kernel, imm64, mul, off32};
use crate::kernel::MatmulNtHalfParams;
pub use crate::kernel::layout::{HalfFormat, layout, layout_exact};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

/// Flags of the loads that touch the next row's weights (a software prefetch; Cranelift has no
/// prefetch instruction): they may trap as far as Cranelift knows, so they are kept though unused.
const TOUCH: MemFlagsData = MemFlagsData::new();

/// f32x4 accumulators of the main loop (a power of two).
const ACCS: usize = 8;

/// Keeps the sign, exponent and mantissa of an f16 moved to bits 31, 27–23 and 22–13.
const F16_MASK: i64 = 0x8FFF_E000u32 as i32 as i64;

/// Keeps the high half of a lane (a bf16 there is an f32).
const BF16_MASK: i64 = 0xFFFF_0000u32 as i32 as i64;

/// 2^112: the exponent bias difference between f32 (127) and f16 (15).
const SCALE: f32 = 5.192_297e33;

/// The constants of the widening, for `I32X4` lanes (`vector`) or one `I32`: the mask and, for
/// f16, 2^112.
#[derive(Clone, Copy)]
struct Widen {
    format: HalfFormat,
    mask: Value,
    scale: Value,
}

impl Widen {
    fn new(b: &mut FunctionBuilder, vector: bool, format: HalfFormat) -> Widen {
        let mask = match format {
            HalfFormat::F16 => F16_MASK,
            HalfFormat::Bf16 => BF16_MASK,
        };
        let mask = b.ins().iconst(types::I32, mask);
        let scale = b.ins().f32const(SCALE);
        if vector {
            Widen {
                format,
                mask: b.ins().splat(types::I32X4, mask),
                scale: b.ins().splat(types::F32X4, scale),
            }
        } else {
            Widen {
                format,
                mask,
                scale,
            }
        }
    }
}

/// The f32 value of the 16-bit float in the high half of each i32 lane of `v` (`I32X4` or `I32`,
/// as `c` was made for); the low half is ignored, or known zero when `low_zero`.
fn widen_high(b: &mut FunctionBuilder, v: Value, c: Widen, low_zero: bool) -> Value {
    let flags = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let ty = b.func.dfg.value_type(v);
    let fty = if ty == types::I32X4 {
        types::F32X4
    } else {
        types::F32
    };
    match c.format {
        HalfFormat::Bf16 => {
            let m = if low_zero { v } else { b.ins().band(v, c.mask) };
            b.ins().bitcast(fty, flags, m)
        }
        HalfFormat::F16 => {
            let s = b.ins().sshr_imm_u(v, 3);
            let m = b.ins().band(s, c.mask);
            let f = b.ins().bitcast(fty, flags, m);
            b.ins().fmul(f, c.scale)
        }
    }
}

/// `acc + x·w`, fused when the ISA has FMA.
fn mul_add(b: &mut FunctionBuilder, fma: bool, x: Value, w: Value, acc: Value) -> Value {
    if fma {
        b.ins().fma(x, w, acc)
    } else {
        let p = b.ins().fmul(x, w);
        b.ins().fadd(acc, p)
    }
}

/// Emits the dot product of the `k` floats at `xp` and the `k` weights at `wp` (in `layout`
/// order).
fn emit_dot(
    name: &str,
    b: &mut FunctionBuilder,
    xp: Value,
    wp: Value,
    k: u64,
    format: HalfFormat,
    fma: bool,
) -> Result<Value, BackendError> {
    let block = 4 * ACCS as u64;
    let blocks = k / block;
    let zero = b.ins().f32const(0.0);
    let zero4 = b.ins().splat(types::F32X4, zero);
    let wide4 = Widen::new(b, true, format);
    // Group j (8 weights at element 8j): low halves pair with x[8j..8j+4], high with x[8j+4..8j+8].
    let group = |b: &mut FunctionBuilder, xo: Value, wo: Value, j: u64, accs: &mut [Value]| {
        let raw = b.ins().load(types::I32X4, RO, wo, off32(name, j * 16)?);
        let lo = b.ins().ishl_imm_u(raw, 16);
        let lo = widen_high(b, lo, wide4, true);
        let hi = widen_high(b, raw, wide4, false);
        let a = (2 * j as usize) % ACCS;
        let xl = b.ins().load(types::F32X4, RO, xo, off32(name, j * 32)?);
        let xh = b
            .ins()
            .load(types::F32X4, RO, xo, off32(name, j * 32 + 16)?);
        accs[a] = mul_add(b, fma, xl, lo, accs[a]);
        accs[a + 1] = mul_add(b, fma, xh, hi, accs[a + 1]);
        Ok::<(), BackendError>(())
    };
    let mut accs = vec![zero4; ACCS];
    if blocks > 0 {
        let start = b.ins().iconst(types::I64, 0);
        let end = b.ins().iconst(types::I64, imm64(name, blocks)?);
        accs = emit_for_unsigned(b, start, end, 1, &accs, true, |b, i, acc| {
            let xo = b.ins().imul_imm_s(i, 4 * block as i64);
            let xo = b.ins().iadd(xp, xo);
            let wo = b.ins().imul_imm_s(i, 2 * block as i64);
            let wo = b.ins().iadd(wp, wo);
            let mut next = acc.to_vec();
            for j in 0..(block / 8) {
                group(b, xo, wo, j, &mut next)?;
            }
            Ok(next)
        })?;
    }
    let done = blocks * block;
    let xo = b.ins().iadd_imm_s(xp, imm64(name, done * 4)?);
    let wo = b.ins().iadd_imm_s(wp, imm64(name, done * 2)?);
    for j in 0..(k - done) / 8 {
        group(b, xo, wo, j, &mut accs)?;
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
    let wide1 = Widen::new(b, false, format);
    for at in k / 8 * 8..k {
        let xv = b.ins().load(types::F32, RO, xp, off32(name, at * 4)?);
        let raw = b.ins().load(types::I16, RO, wp, off32(name, at * 2)?);
        let wide = b.ins().uextend(types::I32, raw);
        let bits = b.ins().ishl_imm_u(wide, 16);
        let wv = widen_high(b, bits, wide1, true);
        s = mul_add(b, fma, xv, wv, s);
    }
    Ok(s)
}

/// Whether `module`'s ISA has fused multiply-add.
fn has_fma(module: &dyn Module) -> bool {
    let isa = module.isa();
    match isa.name() {
        "x64" => isa
            .isa_flags()
            .iter()
            .any(|v| v.name == "has_fma" && v.as_bool() == Some(true)),
        "aarch64" => true,
        _ => false,
    }
}

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &MatmulNtHalfParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let MatmulNtHalfParams { k, n, format } = *p;
    if k == 0 {
        return Err(bad_params(name, "k must be at least 1"));
    }
    if crate::cpu::emit::uses_float_micro_kernels(module.isa()) {
        // The runtime's micro-kernel (`bitnet_runtime::native::matmul_nt_half`).
        let params = [
            i64::try_from(k).map_err(|_| bad_params(name, "k beyond i64"))?,
            i64::try_from(n).map_err(|_| bad_params(name, "n beyond i64"))?,
            i64::from(format == HalfFormat::F16),
        ];
        off32(name, mul(name, k, 4)?)?;
        return crate::cpu::emit::define_micro_kernel_call(
            module,
            name,
            bitnet_runtime::native::MATMUL_NT_HALF,
            &params,
        );
    }
    let fma = has_fma(module);
    let row_bytes = imm64(name, mul(name, k, 4)?)?;
    let w_row_bytes = imm64(name, mul(name, k, 2)?)?;
    let out_row_bytes = imm64(name, mul(name, n, 4)?)?;
    off32(name, mul(name, k, 4)?)?;
    define_kernel(module, name, TableLoads::Movable, &[], |b, e| {
        let x = e.buf(b, 0);
        let w = e.buf(b, 1);
        let out = e.buf(b, 2);
        let tokens = e.tokens(b);
        let zero = b.ins().iconst(types::I64, 0);
        // The f16 widening is long enough that the weight stream falls behind without the touch;
        // bf16 keeps up with the hardware prefetcher alone (measured: touching does not help it).
        let touch = format == HalfFormat::F16;
        let last_row = imm64(name, n.saturating_sub(1))?;
        emit_for_unsigned(b, e.row_begin, e.row_end, 1, &[], false, |b, r, _| {
            let wr = b.ins().imul_imm_s(r, w_row_bytes);
            let wr = b.ins().iadd(w, wr);
            if touch {
                let pr = b.ins().iadd_imm_s(r, 1);
                let last = b.ins().iconst(types::I64, last_row);
                let pr = b.ins().umin(pr, last);
                let po = b.ins().imul_imm_s(pr, w_row_bytes);
                let po = b.ins().iadd(w, po);
                for line in (0..2 * k).step_by(64) {
                    b.ins().load(types::I8, TOUCH, po, off32(name, line)?);
                }
            }
            let or = b.ins().ishl_imm_s(r, 2);
            let or = b.ins().iadd(out, or);
            emit_for_unsigned(b, zero, tokens, 1, &[], false, |b, t, _| {
                let xt = b.ins().imul_imm_s(t, row_bytes);
                let xt = b.ins().iadd(x, xt);
                let s = emit_dot(name, b, xt, wr, k, format, fma)?;
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
