//! The int8 matmul on 256-bit vectors: AVX2 with AVX-VNNI where the CPU has it (`avxvnni`:
//! `vpdpbusd` of the weight bytes `q + 128` and the activations, then `− 128·Σx` as the AVX-512
//! kernel), else AVX2 alone (`plain`): `vpmaddubsw(|x|, sign(q, x))`, exact because `q` is within
//! ±127 (`quantize_rows` clamps it there) and `|x| ≤ 128`, so a pair of products stays within
//! 2·127·128 < 2¹⁵; `vpmaddwd` by ones widens to i32. Both give the portable kernel's results bit
//! for bit.
//!
//! Loop order as the ternary 256-bit kernel's: row tiles of `TILE_BYTES`, tokens in groups of
//! `GROUP` over blocks of `ROWS` rows, a single token over blocks of `ROWS_ONE` rows; 32 bytes per
//! step, the last partial step from zero-padded copies (a zero activation adds nothing).

/// Tokens per group.
const GROUP: usize = 4;
/// Rows per block of a group.
const ROWS: usize = 2;
/// Rows per block of a single token.
const ROWS_ONE: usize = 4;
/// Bytes per step.
const STEP: usize = 32;

/// Whether this CPU runs the AVX2 kernel.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Whether this CPU runs the AVX-VNNI kernel.
pub(super) fn vnni_available() -> bool {
    available() && std::arch::is_x86_feature_detected!("avxvnni")
}

/// One kernel per instruction set: `$features` enabled, `$dot(acc, w, x)` adding the 32 products
/// of a step (weight bytes `w`, activations `x`) into the 8 i32 lanes of `acc`, and `$offset` the
/// multiple of `Σx` those sums carry (128 when they are sums of `(q + 128)·x`).
macro_rules! kernel {
    ($name:ident, $features:literal, $offset:literal, |$acc:ident, $w:ident, $x:ident| $dot:block) => {
        pub(super) mod $name {
            use super::super::Call;
            use super::{GROUP, ROWS, ROWS_ONE, STEP};
            use crate::native::matmul_i8::TILE_BYTES;
            use crate::native::padded_tail;
            use std::arch::x86_64::*;

            /// The step's products added into `acc` (see the macro).
            #[inline]
            #[target_feature(enable = $features)]
            fn dot($acc: __m256i, $w: __m256i, $x: __m256i) -> __m256i $dot

            /// Step `s` of the row at `p` (the last from `tail`, when K has a partial one).
            ///
            /// # Safety
            /// Step `s` is a whole step of the row, or the partial one with `tail` holding it.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn load(p: *const u8, s: usize, full: usize, tail: &[u8; STEP]) -> __m256i {
                // SAFETY: 32 bytes of the row, or the padded copy.
                unsafe {
                    if s < full {
                        _mm256_loadu_si256(p.add(s * STEP).cast())
                    } else {
                        _mm256_loadu_si256(tail.as_ptr().cast())
                    }
                }
            }

            /// The sum of the 8 lanes of `v`.
            #[inline]
            #[target_feature(enable = $features)]
            fn reduce(v: __m256i) -> i32 {
                let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
                _mm_cvtsi128_si32(s)
            }

            /// Rows `row0..row0 + R` for the `G` tokens from `t0` (their rows `xs`, padded last
            /// steps `tails` and activation sums `sums`).
            ///
            /// # Safety
            /// As `super::super::run`; `t0 + G ≤ T`, `row0 + R ≤ n`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn block<const R: usize, const G: usize>(
                call: &Call,
                t0: usize,
                row0: usize,
                xs: &[*const u8; G],
                tails: &[[u8; STEP]; G],
                sums: &[i32; G],
            ) {
                let k = call.k;
                let (steps, full) = (k.div_ceil(STEP), k / STEP);
                // SAFETY: rows row0..row0 + R of the weights.
                let wr: [*const u8; R] = std::array::from_fn(|r| unsafe { call.w.add((row0 + r) * k) });
                // SAFETY: each row has K bytes.
                let wt: [[u8; STEP]; R] = std::array::from_fn(|r| unsafe { padded_tail(wr[r], k) });
                if G == 1 && row0 + 2 * R <= call.rows.end {
                    // SAFETY: the next R rows, within the call's rows.
                    let ahead = unsafe { call.w.add((row0 + R) * k) };
                    let mut line = 0;
                    while line < R * k {
                        // SAFETY: a prefetch within the next R rows (no access happens).
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.add(line).cast()) };
                        line += 64;
                    }
                }
                let mut acc = [[_mm256_setzero_si256(); G]; R];
                for s in 0..steps {
                    // SAFETY: step s of each row and of each token's row.
                    unsafe {
                        let w: [__m256i; R] = std::array::from_fn(|r| load(wr[r], s, full, &wt[r]));
                        for g in 0..G {
                            let x = load(xs[g], s, full, &tails[g]);
                            for r in 0..R {
                                acc[r][g] = dot(acc[r][g], w[r], x);
                            }
                        }
                    }
                }
                for r in 0..R {
                    for g in 0..G {
                        let d = reduce(acc[r][g]).wrapping_sub(sums[g].wrapping_mul($offset));
                        // SAFETY: token t0 + g and row row0 + r are within the call.
                        unsafe { call.store_dot(t0 + g, row0 + r, d) };
                    }
                }
            }

            /// `G` tokens from `t0` over rows `rows`: blocks of `R` rows, then single rows.
            ///
            /// # Safety
            /// As `super::super::run`; `t0 + G ≤ T`.
            #[target_feature(enable = $features)]
            unsafe fn group<const R: usize, const G: usize>(call: &Call, t0: usize, rows: std::ops::Range<usize>) {
                // SAFETY: tokens t0..t0 + G are below T; their rows have K bytes.
                let xs: [*const u8; G] = std::array::from_fn(|g| unsafe { call.xq.add((t0 + g) * call.k).cast() });
                let tails: [[u8; STEP]; G] = std::array::from_fn(|g| unsafe { padded_tail(xs[g], call.k) });
                let sums: [i32; G] = std::array::from_fn(|g| unsafe { call.xsum(t0 + g) });
                let mut row = rows.start;
                // SAFETY: every block of rows is within `rows`.
                unsafe {
                    while row + R <= rows.end {
                        block::<R, G>(call, t0, row, &xs, &tails, &sums);
                        row += R;
                    }
                    while row < rows.end {
                        block::<1, G>(call, t0, row, &xs, &tails, &sums);
                        row += 1;
                    }
                }
            }

            /// Runs `call` (see the module doc).
            ///
            /// # Safety
            /// As `super::super::run`, on a CPU with the features.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn run(call: &Call) {
                let tile = (TILE_BYTES / call.k.max(1)).max(1);
                let mut start = call.rows.start;
                while start < call.rows.end {
                    let end = (start + tile).min(call.rows.end);
                    let mut t = 0;
                    // SAFETY: the caller's buffers; every token group is within T.
                    unsafe {
                        while t + GROUP <= call.t {
                            group::<ROWS, GROUP>(call, t, start..end);
                            t += GROUP;
                        }
                        while t < call.t {
                            group::<ROWS_ONE, 1>(call, t, start..end);
                            t += 1;
                        }
                    }
                    start = end;
                }
            }
        }
    };
}

kernel!(avxvnni, "avx2,avxvnni", 128, |acc, w, x| {
    _mm256_dpbusd_avx_epi32(acc, w, x)
});

kernel!(plain, "avx2", 0, |acc, w, x| {
    let q = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
    let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(q, x));
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
});
