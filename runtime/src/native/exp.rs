//! `bitnet_numerics::exp` on vectors of f64: the same operations in the same order, lane by lane
//! (additions, subtractions and multiplications, never fused; the table read by a gather; integer
//! shifts), so every lane has the scalar function's bits. Attention's softmax (`attention.rs`, both
//! SIMD versions) calls it on a row of scores at a time; the tests compare every lane with the
//! scalar function on random and special arguments. AVX2 only: exp is a few percent of attention's
//! time, and an AVX-512 CPU runs these instructions as they are.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use bitnet_numerics::exp::{
        CLAMP_HIGH, CLAMP_LOW, COEFFS, INV_LN2_N, LN2_N_HI, LN2_N_LO, MAX_ARG, MIN_ARG, ROUNDER,
        TABLE, TAIL,
    };
    use std::arch::x86_64::*;

    /// `exp` of each lane (see the module doc). `k` is read from the low 32 bits of
    /// `x·16/ln 2 + 1.5·2⁵²` (that sum's last place is 1, so they hold `k` in two's complement),
    /// the same integer the scalar function converts from `kd`.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn exp4(x: __m256d) -> __m256d {
        let high = _mm256_cmp_pd::<_CMP_GT_OQ>(x, _mm256_set1_pd(CLAMP_HIGH));
        let xc = _mm256_blendv_pd(x, _mm256_set1_pd(CLAMP_HIGH), high);
        let in_range = _mm256_cmp_pd::<_CMP_GE_OQ>(xc, _mm256_set1_pd(CLAMP_LOW));
        let xc = _mm256_blendv_pd(_mm256_set1_pd(CLAMP_LOW), xc, in_range);
        let rounder = _mm256_set1_pd(ROUNDER);
        let shifted = _mm256_add_pd(_mm256_mul_pd(xc, _mm256_set1_pd(INV_LN2_N)), rounder);
        let kd = _mm256_sub_pd(shifted, rounder);
        let r = _mm256_sub_pd(
            _mm256_sub_pd(xc, _mm256_mul_pd(kd, _mm256_set1_pd(LN2_N_HI))),
            _mm256_mul_pd(kd, _mm256_set1_pd(LN2_N_LO)),
        );
        let mut p = _mm256_set1_pd(COEFFS[5]);
        for &c in COEFFS[..5].iter().rev() {
            p = _mm256_add_pd(_mm256_mul_pd(p, r), _mm256_set1_pd(c));
        }
        let q = _mm256_add_pd(r, _mm256_mul_pd(_mm256_mul_pd(r, r), p));
        // The low dword of each lane, in order.
        let k = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
            _mm256_castpd_si256(shifted),
            _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6),
        ));
        let j = _mm_and_si128(k, _mm_set1_epi32(15));
        // SAFETY: 0 ≤ j < 16 indexes the 16-entry tables.
        let (t, tail) = unsafe {
            (
                _mm256_i32gather_pd::<8>(TABLE.as_ptr().cast(), j),
                _mm256_i32gather_pd::<8>(TAIL.as_ptr().cast(), j),
            )
        };
        let y = _mm256_add_pd(t, _mm256_add_pd(tail, _mm256_mul_pd(t, q)));
        let e = _mm_srai_epi32::<4>(k);
        let e1 = _mm_srai_epi32::<1>(e);
        let e2 = _mm_sub_epi32(e, e1);
        let pow2 = |e: __m128i| {
            _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_add_epi64(
                _mm256_cvtepi32_epi64(e),
                _mm256_set1_epi64x(1023),
            )))
        };
        let y = _mm256_mul_pd(_mm256_mul_pd(y, pow2(e1)), pow2(e2));
        let below = _mm256_cmp_pd::<_CMP_LT_OQ>(x, _mm256_set1_pd(MIN_ARG));
        let above = _mm256_cmp_pd::<_CMP_GT_OQ>(x, _mm256_set1_pd(MAX_ARG));
        let nan = _mm256_cmp_pd::<_CMP_UNORD_Q>(x, x);
        let y = _mm256_blendv_pd(y, _mm256_setzero_pd(), below);
        let y = _mm256_blendv_pd(y, _mm256_set1_pd(f64::INFINITY), above);
        _mm256_blendv_pd(y, x, nan)
    }

    /// `w_j = exp(w_j − m)` for every `j` (attention's `Prims::exp_shifted`), four values at a
    /// time; the last up to three by the scalar function (the same bits).
    ///
    /// # Safety
    /// AVX2 is present.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn exp_shifted(w: &mut [f64], m: f64) {
        let mv = _mm256_set1_pd(m);
        let mut chunks = w.chunks_exact_mut(4);
        for chunk in &mut chunks {
            let p = chunk.as_mut_ptr();
            // SAFETY: 4 values at `p`; the feature is present.
            unsafe {
                let x = _mm256_sub_pd(_mm256_loadu_pd(p), mv);
                _mm256_storeu_pd(p, exp4(x));
            }
        }
        for e in chunks.into_remainder() {
            *e = bitnet_numerics::exp(*e - m);
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use bitnet_numerics::exp;
    use std::arch::x86_64::*;

    /// Random arguments over the whole range and the softmax's, and the edges.
    fn arguments() -> Vec<f64> {
        let mut bits = crate::native::test_support::xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = move || (bits() >> 11) as f64 / (1u64 << 53) as f64;
        let mut xs = Vec::new();
        for (lo, hi) in [
            (-800.0, 800.0),
            (-60.0, 0.0),
            (-1e-6, 1e-6),
            (-746.0, -700.0),
        ] {
            xs.extend((0..20_000).map(|_| lo + (hi - lo) * next()));
        }
        use bitnet_numerics::exp::{CLAMP_HIGH, CLAMP_LOW, MAX_ARG, MIN_ARG};
        xs.extend([
            0.0,
            -0.0,
            1.0,
            f64::NAN,
            -f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            MAX_ARG,
            MIN_ARG,
            CLAMP_HIGH,
            CLAMP_LOW,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            1e-320,
        ]);
        xs
    }

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn avx2_lanes_are_the_scalar_function() {
        if !is_x86_feature_detected!("avx2") {
            return;
        }
        for chunk in arguments().chunks(4) {
            let mut lanes = [0.0f64; 4];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let mut out = [0.0f64; 4];
            // SAFETY: the feature is present; 4 values each.
            unsafe {
                _mm256_storeu_pd(
                    out.as_mut_ptr(),
                    super::avx2::exp4(_mm256_loadu_pd(lanes.as_ptr())),
                );
            }
            for (x, y) in lanes.iter().zip(out) {
                assert!(same(y, exp(*x)), "exp({x:e}): {y:e} vs {:e}", exp(*x));
            }
        }
    }
}
