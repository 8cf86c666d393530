//! Kernel `Embedding` (see `KernelKind::Embedding` for its buffers, rows and numerics): each row t
//! copies table row `ids[t]` to output row t. The ids are validated by the runtime.
//!
//! - f32 table: 16-byte vector moves (64 bytes per loop iteration). A copy moves bits, so the result
//!   is the interpreter's exactly.
//! - 16-bit tables (`half`), rows in `matmul_half::layout` order (the lm_head's layout, so a tied
//!   head and embedding share one copy): per group of eight weights, i32 lane l of the group's 16
//!   bytes holds weight l in its low half and weight 4 + l in its high half; two 16-byte stores
//!   per group. The last `hidden mod 8` weights (stored in order after the groups) widen one at a
//!   time. With `in_order` (a table mapped from the model file as it stores it), each group's
//!   16 bytes hold weights 0–7 in order: zero-extended into two vectors of four i32 lanes, each
//!   weight then in the low half of its lane. Both widenings are exact:
//!   - bf16 is the high half of an f32: the low halves shifted left by 16 are weights 0–3, the
//!     high halves masked with `0xFFFF_0000` weights 4–7;
//!   - f16 (finite: the lowering stores only exactly-f16 tables, `layout::layout_exact`): the
//!     exponent and mantissa `h & 0x7FFF` shifted left by 13 are an f32 2¹¹² times too small
//!     (a subnormal f16 lands on an f32 subnormal), so one multiplication by 2¹¹² gives the value
//!     exactly (`layout::f16_widen`), then the sign bit `(h & 0x8000) << 16` is set.

use crate::BackendError;
use crate::cpu::emit::loops::emit_for_unsigned;
use crate::cpu::emit::simd::emit_copy;
use crate::cpu::emit::{LANES_LE, MEM, TableLoads, define_kernel, imm64, mul, off32};
use crate::kernel::{EmbeddingParams, HalfFormat};
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

/// Keeps the high half of a lane (a bf16 there is an f32).
const BF16_MASK: i64 = 0xFFFF_0000u32 as i32 as i64;

/// 2¹¹² as f32 bits: scales an f16's fields, moved into an f32's, to the f16's value.
const F16_SCALE_BITS: u32 = 0x7780_0000;

/// The constants the widening of one 16-bit format needs, splatted to `ty` lanes once per call.
#[derive(Clone, Copy)]
enum Widen {
    /// bf16: the `0xFFFF_0000` mask.
    Bf16 { mask: Value },
    /// f16: the `0x7FFF` and `0x8000` masks and 2¹¹².
    F16 {
        fields: Value,
        sign: Value,
        scale: Value,
    },
}

impl Widen {
    /// The constants of `format` as `ty` (`I32X4` or `I32`) lanes.
    fn new(b: &mut FunctionBuilder, format: HalfFormat, ty: Type) -> Widen {
        let splat = |b: &mut FunctionBuilder, ty: Type, v: Value| {
            if ty.is_vector() {
                b.ins().splat(ty, v)
            } else {
                v
            }
        };
        match format {
            HalfFormat::Bf16 => {
                let m = b.ins().iconst(types::I32, BF16_MASK);
                Widen::Bf16 {
                    mask: splat(b, ty, m),
                }
            }
            HalfFormat::F16 => {
                let fields = b.ins().iconst(types::I32, 0x7fff);
                let sign = b.ins().iconst(types::I32, 0x8000);
                let scale = b.ins().f32const(f32::from_bits(F16_SCALE_BITS));
                let fty = if ty.is_vector() {
                    types::F32X4
                } else {
                    types::F32
                };
                Widen::F16 {
                    fields: splat(b, ty, fields),
                    sign: splat(b, ty, sign),
                    scale: splat(b, fty, scale),
                }
            }
        }
    }

    /// The f32 bits of the 16-bit values in the low halves of `x`'s lanes (`low`) or in the high
    /// halves.
    fn widen(self, b: &mut FunctionBuilder, x: Value, low: bool) -> Value {
        let ty = b.func.dfg.value_type(x);
        match self {
            Widen::Bf16 { mask } => {
                if low {
                    b.ins().ishl_imm_u(x, 16)
                } else {
                    b.ins().band(x, mask)
                }
            }
            Widen::F16 {
                fields,
                sign,
                scale,
            } => {
                let h = if low {
                    let up = b.ins().ishl_imm_u(x, 16);
                    b.ins().ushr_imm_u(up, 16)
                } else {
                    b.ins().ushr_imm_u(x, 16)
                };
                let em = b.ins().band(h, fields);
                let em = b.ins().ishl_imm_u(em, 13);
                let fty = if ty.is_vector() {
                    types::F32X4
                } else {
                    types::F32
                };
                let small = b.ins().bitcast(fty, LANES_LE, em);
                let value = b.ins().fmul(small, scale);
                let value = b.ins().bitcast(ty, LANES_LE, value);
                let s = b.ins().band(h, sign);
                let s = b.ins().ishl_imm_u(s, 16);
                b.ins().bor(value, s)
            }
        }
    }
}

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &EmbeddingParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let EmbeddingParams {
        hidden,
        half,
        in_order,
        ..
    } = *p;
    let row_bytes = mul(name, hidden, 4)?;
    let row_imm = imm64(name, row_bytes)?;
    let src_imm = imm64(name, mul(name, hidden, if half.is_some() { 2 } else { 4 })?)?;
    define_kernel(module, name, TableLoads::Movable, &[], |b, e| {
        let table = e.buf(b, 0);
        let ids = e.buf(b, 1);
        let out = e.buf(b, 2);
        let widen = half.map(|h| (Widen::new(b, h, types::I32X4), Widen::new(b, h, types::I32)));
        emit_for_unsigned(b, e.row_begin, e.row_end, 1, &[], false, |b, t, _| {
            let id_at = b.ins().ishl_imm_s(t, 3);
            let id_at = b.ins().iadd(ids, id_at);
            let id = b.ins().load(types::I64, MEM, id_at, 0);
            let src = b.ins().imul_imm_s(id, src_imm);
            let src = b.ins().iadd(table, src);
            let dst = b.ins().imul_imm_s(t, row_imm);
            let dst = b.ins().iadd(out, dst);
            let Some((vector, scalar)) = widen else {
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
                    let (lo, hi) = if in_order {
                        // Weights 0–7 in order: zero-extended to i32 lanes, each then in the
                        // low half of its lane.
                        let raw = b.ins().load(types::I16X8, MEM, s, 0);
                        let first = b.ins().uwiden_low(raw);
                        let last = b.ins().uwiden_high(raw);
                        (vector.widen(b, first, true), vector.widen(b, last, true))
                    } else {
                        let raw = b.ins().load(types::I32X4, MEM, s, 0);
                        (vector.widen(b, raw, true), vector.widen(b, raw, false))
                    };
                    b.ins().store(MEM, lo, d, 0);
                    b.ins().store(MEM, hi, d, 16);
                    Ok(vec![])
                })?;
            }
            for at in groups * 8..hidden {
                let raw = b.ins().load(types::I16, MEM, src, off32(name, at * 2)?);
                let wide = b.ins().uextend(types::I32, raw);
                let bits = scalar.widen(b, wide, true);
                b.ins().store(MEM, bits, dst, off32(name, at * 4)?);
            }
            Ok(vec![])
        })?;
        Ok(())
    })
}
