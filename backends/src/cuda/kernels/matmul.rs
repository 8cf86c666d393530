//! CUDA kernel for `MatmulNt` (the lm_head; buffers as `KernelKind` documents), and the float
//! matmul builder it shares with `MatmulNtHalf` (`matmul_half.rs`): `out[t, n] = Σ_k x[t, k]·w[n, k]`
//! with float weights (f32, bf16 or f16, each widened exactly to f32), one warp per output feature
//! `n`, looping over the tokens.
//!
//! Lanes take the row's elements (for `MatmulNtHalf`, groups of eight in `layout::layout` order,
//! each group one 16-byte load when K is a multiple of 8) and accumulate `x·w` in f32; the
//! warp sums its lanes by shuffles and lane 0 writes. The sum's order differs from the interpreter's
//! f64 index-order sum: within `MatmulNt`'s documented tolerance (about 1e-6 relative, more for
//! long rows with cancellation). `out` must not alias `x`.

use super::super::emit::{Kb, R};
use super::{ROWS_PER_WARP_BLOCK, imm};
use crate::kernel::layout::pair_element;
use crate::kernel::{HalfFormat, MatmulNtParams};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::values::{FloatValue, IntValue};

/// How the weights are stored.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Weights {
    /// f32 in plain row order (`MatmulNt`).
    F32,
    /// bf16 in plain row order (`MatmulNt` with `bf16`).
    Bf16Plain,
    /// 16-bit floats in `layout::layout` order (`MatmulNtHalf`).
    Pairs(HalfFormat),
}

/// Defines the kernel `p` named `name`.
pub fn build<'ctx>(cx: &'ctx Context, m: &Module<'ctx>, name: &str, p: &MatmulNtParams) -> R<()> {
    let weights = if p.bf16 {
        Weights::Bf16Plain
    } else {
        Weights::F32
    };
    build_float_matmul(cx, m, name, p.k, p.n, weights)
}

/// Defines the float matmul named `name` of `k` inputs and `n` outputs on weights stored as
/// `fmt`.
pub(super) fn build_float_matmul<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    k: u64,
    n: u64,
    fmt: Weights,
) -> R<()> {
    let kb = Kb::kernel(cx, m, name, 3)?;
    let f32t = cx.f32_type();
    let i16t = cx.i16_type();
    let (x, w, out) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?);
    let tid = kb.tid()?;
    let lane = kb.urem(tid, kb.i64c(kb.warp() as i64))?;
    let warp = kb.udiv(tid, kb.i64c(kb.warp() as i64))?;
    let row = kb.add(
        kb.mul(kb.block_id()?, kb.i64c(ROWS_PER_WARP_BLOCK as i64))?,
        warp,
    )?;
    let kk = kb.i64c(imm(k)?);
    let nn = kb.i64c(imm(n)?);
    let wrow = kb.mul(row, kk)?;
    // The f32 value of 16-bit weight bits `h` in `format`.
    let widen = |h: IntValue<'ctx>, format: HalfFormat| -> R<FloatValue<'ctx>> {
        Ok(match format {
            HalfFormat::F16 => {
                let hv =
                    kb.b.build_bit_cast(h, cx.f16_type(), "h")?
                        .into_float_value();
                kb.b.build_float_ext(hv, f32t, "w")?
            }
            HalfFormat::Bf16 => {
                let v = kb.b.build_int_z_extend(h, cx.i32_type(), "z")?;
                let v = kb.b.build_left_shift(v, kb.i32c(16), "s")?;
                kb.b.build_bit_cast(v, f32t, "w")?.into_float_value()
            }
        })
    };
    // Weight at storage index `s` of this row.
    let weight = |s: IntValue<'ctx>| -> R<FloatValue<'ctx>> {
        let at = kb.add(wrow, s)?;
        match fmt {
            Weights::F32 => kb.load_f32(w, at),
            Weights::Bf16Plain => widen(kb.load(i16t, w, at)?.into_int_value(), HalfFormat::Bf16),
            Weights::Pairs(f) => widen(kb.load(i16t, w, at)?.into_int_value(), f),
        }
    };
    kb.if_then(kb.lt(row, nn)?, || {
        kb.for_range(kb.i64c(0), kb.t()?, kb.i64c(1), |t| {
            let xrow = kb.mul(t, kk)?;
            let acc = kb.var(f32t, kb.f32c(0.0))?;
            let groups = match fmt {
                Weights::Pairs(_) => k / 8,
                _ => 0,
            };
            if let Weights::Pairs(f) = fmt
                && groups > 0
            {
                // Group g: storage 8g..8g+8 holds elements 8g + [0, 4, 1, 5, 2, 6, 3, 7].
                kb.for_range(
                    lane,
                    kb.i64c(imm(groups)?),
                    kb.i64c(kb.warp() as i64),
                    |g| {
                        let s0 = kb.mul(g, kb.i64c(8))?;
                        let mut a = kb.get(&acc)?.into_float_value();
                        let v8 = i16t.vec_type(8);
                        let ws = if k.is_multiple_of(8) {
                            let p = kb.at(i16t, w, kb.add(wrow, s0)?)?;
                            let ld = kb.load_aligned(v8, p, 16)?;
                            let v = ld.into_vector_value();
                            (0..8)
                                .map(|l| {
                                    let h =
                                        kb.b.build_extract_element(v, kb.i32c(l), "h")?
                                            .into_int_value();
                                    widen(h, f)
                                })
                                .collect::<R<Vec<_>>>()?
                        } else {
                            (0..8)
                                .map(|l| weight(kb.add(s0, kb.i64c(l))?))
                                .collect::<R<Vec<_>>>()?
                        };
                        for (l, wv) in ws.into_iter().enumerate() {
                            let e = pair_element(l as u64, 8);
                            let xv =
                                kb.load_f32(x, kb.add(xrow, kb.add(s0, kb.i64c(e as i64))?)?)?;
                            a = kb.fadd(a, kb.fmul(xv, wv)?)?;
                        }
                        kb.set(&acc, a)
                    },
                )?;
            }
            // The elements in plain order: all of them, or the tail after the groups.
            let start = kb.add(kb.i64c(imm(groups * 8)?), lane)?;
            kb.for_range(start, kk, kb.i64c(kb.warp() as i64), |e| {
                let p = kb.fmul(kb.load_f32(x, kb.add(xrow, e)?)?, weight(e)?)?;
                let a = kb.get(&acc)?.into_float_value();
                kb.set(&acc, kb.fadd(a, p)?)
            })?;
            let total = kb.warp_reduce(kb.get(&acc)?, |a, b| {
                Ok(kb.fadd(a.into_float_value(), b.into_float_value())?.into())
            })?;
            kb.if_then(kb.eq(lane, kb.i64c(0))?, || {
                kb.store(out, kb.add(kb.mul(t, nn)?, row)?, total)
            })
        })
    })?;
    kb.finish()
}
