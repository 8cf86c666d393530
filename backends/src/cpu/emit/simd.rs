//! The vector building blocks of the CPU kernels: i8 dot products, horizontal sums, NaN-ignoring
//! maxima, the f32 → i8 quantizer's stores, constant splats, and copies of static byte counts.

use super::loops::emit_for_unsigned;
use super::{MEM, bad_params, imm64, off32};
use crate::BackendError;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32X4, I8, I8X16, I16, I16X8, I32, I32X4, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

/// `acc + dot(x, c)` per i32 lane, where each lane sums the four products of its bytes, `x` taken as
/// i8 and `c` as u8 (`c_unsigned`) or i8. Written as the exact widening tree that Cranelift folds
/// into one `vpdpbusd` (x86 AVX-VNNI / AVX512-VNNI) or `sdot` (aarch64 DotProd, with signed `c`);
/// elsewhere it lowers to widening multiplies and pairwise adds, with the same exact result.
pub(crate) fn dot_i8(
    b: &mut FunctionBuilder,
    acc: Value,
    x: Value,
    c: Value,
    c_unsigned: bool,
) -> Value {
    let xl = b.ins().swiden_low(x);
    let cl = if c_unsigned {
        b.ins().uwiden_low(c)
    } else {
        b.ins().swiden_low(c)
    };
    let lo = b.ins().imul(xl, cl);
    let xh = b.ins().swiden_high(x);
    let ch = if c_unsigned {
        b.ins().uwiden_high(c)
    } else {
        b.ins().swiden_high(c)
    };
    let hi = b.ins().imul(xh, ch);
    let lo_l = b.ins().swiden_low(lo);
    let lo_h = b.ins().swiden_high(lo);
    let lo32 = b.ins().iadd_pairwise(lo_l, lo_h);
    let hi_l = b.ins().swiden_low(hi);
    let hi_h = b.ins().swiden_high(hi);
    let hi32 = b.ins().iadd_pairwise(hi_l, hi_h);
    let s = b.ins().iadd_pairwise(lo32, hi32);
    b.ins().iadd(s, acc)
}

/// The i16x8 `v` summed pairwise into i32x4 (`pmaddwd` with ones on x86).
pub(crate) fn widen_pairs_i16(b: &mut FunctionBuilder, v: Value) -> Value {
    let l = b.ins().swiden_low(v);
    let h = b.ins().swiden_high(v);
    b.ins().iadd_pairwise(l, h)
}

/// The wrapping sum of the four i32 lanes of `v`.
pub(crate) fn hsum_i32x4(b: &mut FunctionBuilder, v: Value) -> Value {
    let lanes: Vec<Value> = (0u8..4).map(|l| b.ins().extractlane(v, l)).collect();
    let a = b.ins().iadd(lanes[0], lanes[1]);
    let c = b.ins().iadd(lanes[2], lanes[3]);
    b.ins().iadd(a, c)
}

/// `max(m, a)` ignoring a NaN `a` (Rust's `f32::max` when `m` is never NaN), lane-wise for `F32X4`
/// or scalar for `F32`: `a > m ? a : m`.
pub(crate) fn max_ignore_nan(b: &mut FunctionBuilder, m: Value, a: Value) -> Value {
    let gt = b.ins().fcmp(FloatCC::GreaterThan, a, m);
    if b.func.dfg.value_type(m) == F32X4 {
        let mask = b.ins().bitcast(F32X4, MemFlagsData::new(), gt);
        b.ins().bitselect(mask, a, m)
    } else {
        b.ins().select(gt, a, m)
    }
}

/// The quantizer's store of 16 values: `clamp(round_half_even(y·s), -128, 127)` as i8 (NaN → 0) for
/// the four f32x4 `ys`, stored as 16 bytes at `dst + off`. Rounding then saturating conversion to
/// i32 then two saturating narrowings is the clamp-then-convert of the reference (NaN converts to 0,
/// ±inf and out-of-range values saturate).
pub(crate) fn quantize_store_16(
    b: &mut FunctionBuilder,
    ys: [Value; 4],
    s: Value,
    dst: Value,
    off: i32,
) {
    let q: Vec<Value> = ys
        .iter()
        .map(|&y| {
            let v = b.ins().fmul(y, s);
            let r = b.ins().nearest(v);
            b.ins().fcvt_to_sint_sat(I32X4, r)
        })
        .collect();
    let lo = b.ins().snarrow(q[0], q[1]);
    let hi = b.ins().snarrow(q[2], q[3]);
    let bytes = b.ins().snarrow(lo, hi);
    b.ins().store(MEM, bytes, dst, off);
}

/// The scalar form of `quantize_store_16`: one value `y`, scale `s` (both f32), stored at
/// `dst + off`.
pub(crate) fn quantize_store_1(b: &mut FunctionBuilder, y: Value, s: Value, dst: Value, off: i32) {
    let v = b.ins().fmul(y, s);
    let r = b.ins().nearest(v);
    let i = b.ins().fcvt_to_sint_sat(I32, r);
    let lo = b.ins().iconst(I32, -128);
    let hi = b.ins().iconst(I32, 127);
    let i = b.ins().smax(i, lo);
    let i = b.ins().smin(i, hi);
    let q = b.ins().ireduce(I8, i);
    b.ins().store(MEM, q, dst, off);
}

/// A splat of the byte `v` over `I8X16`.
pub(crate) fn splat_i8(b: &mut FunctionBuilder, v: i64) -> Value {
    let c = b.ins().iconst(I8, v);
    b.ins().splat(I8X16, c)
}

/// A zero `I32X4`.
pub(crate) fn zero_i32x4(b: &mut FunctionBuilder) -> Value {
    let c = b.ins().iconst(I32, 0);
    b.ins().splat(I32X4, c)
}

/// A zero `I16X8`.
pub(crate) fn zero_i16x8(b: &mut FunctionBuilder) -> Value {
    let c = b.ins().iconst(I16, 0);
    b.ins().splat(I16X8, c)
}

/// Copies `bytes` bytes (a static count, a multiple of 4) from `src` to `dst`: 64-byte blocks in a
/// loop (four 16-byte vector moves each), then 16-, 8- and 4-byte moves. The ranges must not overlap.
pub(crate) fn emit_copy(
    kernel: &str,
    b: &mut FunctionBuilder,
    src: Value,
    dst: Value,
    bytes: u64,
) -> Result<(), BackendError> {
    let blocks = bytes / 64;
    if blocks > 0 {
        let zero = b.ins().iconst(I64, 0);
        let end = b.ins().iconst(I64, imm64(kernel, blocks * 64)?);
        emit_for_unsigned(b, zero, end, 64, &[], true, |b, o, _| {
            let s = b.ins().iadd(src, o);
            let d = b.ins().iadd(dst, o);
            let parts: Vec<Value> = (0..4)
                .map(|c| b.ins().load(I8X16, MEM, s, c * 16))
                .collect();
            for (c, v) in (0i32..).zip(parts) {
                b.ins().store(MEM, v, d, c * 16);
            }
            Ok(vec![])
        })?;
    }
    let mut at = blocks * 64;
    for (width, ty) in [(16, I8X16), (8, I64), (4, I32)] {
        while bytes - at >= width {
            let o = off32(kernel, at)?;
            let v = b.ins().load(ty, MEM, src, o);
            b.ins().store(MEM, v, dst, o);
            at += width;
        }
    }
    if at != bytes {
        return Err(bad_params(kernel, "a copy is not a multiple of 4 bytes"));
    }
    Ok(())
}
