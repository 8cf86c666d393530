//! CUDA kernel for `SiluMul` (buffers as `KernelKind` documents): one block per token row, each
//! element `out = f32(g·σ(g))·u` with the CPU kernel's f64 steps (`σ(g) = 1/(1 + exp(-g))` for
//! `g ≥ 0`, else `e/(1 + e)` with `e = exp(g)`; NaN takes the second side and stays NaN).
//!
//! Numerics: PTX has no f64 `exp` and the backend links no libdevice, so `exp` is computed here
//! (`exp_f64`) from f64 arithmetic alone, the same code on NVPTX and on the host build: Cody–Waite
//! reduction `x = k·ln 2 + r`, `|r| ≤ ln 2 / 2`, a degree-13 Taylor polynomial in `r` (truncation
//! below 2⁻⁶⁰ relative) and a scale by `2^k` in two exact steps. It is within a few f64 ulps of the
//! runtime's `exp`, not correctly rounded, so the f64 silu differs from the interpreter's by about
//! 1e-15 relative and its f32 rounding can land one f32 ulp away; after the f32 product with `u`,
//! `out` is within 3 ulps of the interpreter's (both NaN, or equal infinities, agree), which the kernel
//! harness checks. Each element is loaded before it is stored, so `out` may be `g` or `u` itself.

use super::super::emit::{Kb, R};
use super::imm;
use crate::kernel::SiluMulParams;
use inkwell::FloatPredicate;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::values::FloatValue;

/// Adding and subtracting `1.5·2⁵²` rounds an f64 below 2⁵¹ in magnitude to an integer (ties to
/// even), in plain IEEE arithmetic.
const ROUNDER: f64 = 6_755_399_441_055_744.0;
/// `ln 2` split so that `k·LN2_HI` is exact for `|k| < 2¹¹` (fdlibm's constants).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
/// The rest of `ln 2`.
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// Beyond this magnitude `exp` is 0 or inf in f64 (clamping keeps `k` small).
const CLAMP: f64 = 800.0;
/// Terms of the Taylor polynomial of `e^r`: `1/i!` for `i = 0..=13`.
const TAYLOR_TERMS: usize = 14;

/// Defines the kernel.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &SiluMulParams,
    threads: u64,
) -> R<()> {
    let n = p.n;
    let kb = Kb::kernel(cx, m, name, 3)?;
    let (g, u, out) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?);
    let nn = kb.i64c(imm(n)?);
    let base = kb.mul(kb.block_id()?, nn)?;
    kb.for_range(kb.tid()?, nn, kb.i64c(imm(threads)?), |c| {
        let at = kb.add(base, c)?;
        let x = kb.to_f64(kb.load_f32(g, at)?)?;
        let uv = kb.load_f32(u, at)?;
        let nonneg =
            kb.b.build_float_compare(FloatPredicate::OGE, x, kb.f64c(0.0), "nonneg")?;
        let neg_x = kb.b.build_float_neg(x, "neg_x")?;
        let arg =
            kb.b.build_select(nonneg, neg_x, x, "arg")?
                .into_float_value();
        let e = exp_f64(&kb, arg)?;
        let one = kb.f64c(1.0);
        let denom = kb.fadd(one, e)?;
        let sigma =
            kb.b.build_select(nonneg, kb.fdiv(one, denom)?, kb.fdiv(e, denom)?, "sigma")?
                .into_float_value();
        let s = kb.to_f32(kb.fmul(x, sigma)?)?;
        kb.store(out, at, kb.fmul(s, uv)?)
    })?;
    kb.finish()
}

/// `e^x` in f64 from f64 arithmetic (see the module doc): NaN stays NaN, `±inf` give `inf` and 0.
fn exp_f64<'ctx>(kb: &Kb<'_, 'ctx>, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
    let b = &kb.b;
    let i64t = kb.cx.i64_type();
    let f64t = kb.cx.f64_type();
    // Clamp to ±CLAMP; a NaN fails the second test and becomes -CLAMP (restored at the end).
    let high = b.build_float_compare(FloatPredicate::OGT, x, kb.f64c(CLAMP), "high")?;
    let xc = b
        .build_select(high, kb.f64c(CLAMP), x, "xc")?
        .into_float_value();
    let in_range = b.build_float_compare(FloatPredicate::OGE, xc, kb.f64c(-CLAMP), "lo")?;
    let xc = b
        .build_select(in_range, xc, kb.f64c(-CLAMP), "xc")?
        .into_float_value();
    // k = round(x / ln 2); r = x − k·ln 2 in two exact-ish steps.
    let t = kb.fadd(
        kb.fmul(xc, kb.f64c(std::f64::consts::LOG2_E))?,
        kb.f64c(ROUNDER),
    )?;
    let kf = kb.fsub(t, kb.f64c(ROUNDER))?;
    let r = kb.fsub(xc, kb.fmul(kf, kb.f64c(LN2_HI))?)?;
    let r = kb.fsub(r, kb.fmul(kf, kb.f64c(LN2_LO))?)?;
    // Horner from the highest term: p = Σ r^i / i!.
    let mut coef = [1.0f64; TAYLOR_TERMS];
    for i in 1..TAYLOR_TERMS {
        coef[i] = coef[i - 1] / i as f64;
    }
    let mut p = kb.f64c(coef[TAYLOR_TERMS - 1]);
    for &c in coef.iter().rev().skip(1) {
        p = kb.fadd(kb.fmul(p, r)?, kb.f64c(c))?;
    }
    // 2^k as 2^k1 · 2^k2 with k1 = k >> 1: both factors are normal f64 for |k| ≤ 1155.
    let k = b.build_float_to_signed_int(kf, i64t, "k")?;
    let k1 = b.build_right_shift(k, kb.i64c(1), true, "k1")?;
    let k2 = b.build_int_sub(k, k1, "k2")?;
    let pow2 = |ki| -> R<FloatValue<'ctx>> {
        let biased = b.build_int_add(ki, kb.i64c(1023), "biased")?;
        let bits = b.build_left_shift(biased, kb.i64c(52), "bits")?;
        Ok(b.build_bit_cast(bits, f64t, "pow2")?.into_float_value())
    };
    let y = kb.fmul(kb.fmul(p, pow2(k1)?)?, pow2(k2)?)?;
    let nan = b.build_float_compare(FloatPredicate::UNO, x, x, "nan")?;
    Ok(b.build_select(nan, x, y, "exp")?.into_float_value())
}
