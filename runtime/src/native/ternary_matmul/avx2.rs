//! The ternary matmul on 256-bit vectors: AVX2, with AVX-VNNI's `vpdpbusd` where the CPU has it
//! (`avxvnni`) and `vpmaddubsw` + `vpmaddwd` where it does not (`avx2`); both exact, bit for bit
//! the portable kernel's results.
//!
//! Per 64-element block the 16 code bytes are broadcast to both 128-bit lanes; element j of the
//! block sits at bits 6 − 2·(j / 16) of byte j % 16, so the first 32 elements are 128-bit lanes
//! whose codes sit at shifts 6 and 4, the last 32 at shifts 2 and 0, each in the order of a 32-byte
//! activation load.
//!
//! With AVX-VNNI the bytes are only masked (`3 << s` per lane): each operand is the code times 2^s,
//! still a valid u8, and `vpdpbusd` adds the scaled products into a separate accumulator per half,
//! whose 32-bit lanes each hold one scale. Per lane the true sum is at most K/16 products of
//! 128·128 in magnitude, which fits i32 for K ≤ `SCALED_MAX_K` (a larger K runs the AVX2 kernel), so no lane wraps and an arithmetic
//! shift by s per lane gives its exact sum of code·x before the lanes are added. Without VNNI the
//! lanes are shifted down (as 32-bit lanes: the bits that cross into a byte are masked off with 3),
//! and `vpmaddubsw` (u8 codes ≤ 2 × i8 activations) cannot saturate: two products per i16 lane and
//! two halves summed stay within ±1024; `vpmaddwd` by ones widens to i32.
//!
//! Loop order as the AVX-512 kernel's: row tiles of `TILE_BYTES`; tokens in groups of `GROUP`
//! over blocks of `ROWS` rows (8 accumulators of the 16 vector registers); a single token runs
//! `ROWS_ONE` rows at once (independent chains) and prefetches the next `ROWS_ONE` rows.

use super::TILE_BYTES;

/// Tokens per group.
const GROUP: usize = 4;
/// Rows per block of a group.
const ROWS: usize = 2;
/// Rows per block of a group of the scaled (AVX-VNNI) kernel: its two accumulators per row and
/// token leave no registers for a second row.
const ROWS_SCALED: usize = 1;
/// Rows per block of a single token.
const ROWS_ONE: usize = 4;

/// Whether this CPU runs the AVX2 kernel.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Whether this CPU runs the AVX-VNNI kernel.
pub(super) fn vnni_available() -> bool {
    available() && std::arch::is_x86_feature_detected!("avxvnni")
}

/// One kernel per instruction set: `$features` enabled, `$scaled` whether the codes are masked in
/// place (true) or shifted down (false), and `$dot(acc, c0, x0, c1, x1)` adding the 64 products of
/// a block (code halves `c0`, `c1`; activation halves `x0`, `x1`) into the pair of accumulators
/// `acc` (the first and second half's, or, unscaled, all into the first).
macro_rules! kernel {
    ($name:ident, $features:literal, $scaled:literal, |$acc:ident, $c0:ident, $x0:ident, $c1:ident, $x1:ident| $dot:expr) => {
        pub(super) mod $name {
            use super::super::{BLOCK, Call};
            use super::{GROUP, ROWS, ROWS_ONE, ROWS_SCALED, TILE_BYTES};
            use crate::native::padded_tail;
            use std::arch::x86_64::*;

            /// The block's products added into `acc` (see the macro).
            #[inline]
            #[target_feature(enable = $features)]
            fn dot(
                $acc: (__m256i, __m256i),
                $c0: __m256i,
                $x0: __m256i,
                $c1: __m256i,
                $x1: __m256i,
            ) -> (__m256i, __m256i) {
                $dot
            }

            /// The 64 codes of block `b` of the row at `wr` as two vectors in activation order.
            ///
            /// # Safety
            /// Block `b` is within the row.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn codes(wr: *const u8, b: usize) -> (__m256i, __m256i) {
                // SAFETY: 16 bytes of block `b`.
                let c =
                    _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(wr.add(b * 16).cast()) });
                if $scaled {
                    // Bytes 0xC0 (lane 0) and 0x30 (lane 1); 0x0C and 0x03.
                    let lo = _mm256_set_epi64x(
                        0x3030_3030_3030_3030,
                        0x3030_3030_3030_3030,
                        0xC0C0_C0C0_C0C0_C0C0_u64 as i64,
                        0xC0C0_C0C0_C0C0_C0C0_u64 as i64,
                    );
                    let hi = _mm256_set_epi64x(
                        0x0303_0303_0303_0303,
                        0x0303_0303_0303_0303,
                        0x0C0C_0C0C_0C0C_0C0C,
                        0x0C0C_0C0C_0C0C_0C0C,
                    );
                    (_mm256_and_si256(c, lo), _mm256_and_si256(c, hi))
                } else {
                    let three = _mm256_set1_epi8(3);
                    let lo = _mm256_srlv_epi32(c, _mm256_set_epi32(4, 4, 4, 4, 6, 6, 6, 6));
                    let hi = _mm256_srlv_epi32(c, _mm256_set_epi32(0, 0, 0, 0, 2, 2, 2, 2));
                    (_mm256_and_si256(lo, three), _mm256_and_si256(hi, three))
                }
            }

            /// The two halves of block `b` of token row `x` (the last from `tail`, when K has one).
            ///
            /// # Safety
            /// Block `b` is a whole block of the row, or the tail block with `tail` holding it.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn acts(
                x: *const i8,
                b: usize,
                full: usize,
                tail: &[i8; BLOCK],
            ) -> (__m256i, __m256i) {
                let p = if b < full {
                    // SAFETY: a whole block of the row.
                    unsafe { x.add(b * BLOCK) }
                } else {
                    tail.as_ptr()
                };
                // SAFETY: 64 bytes at `p`.
                unsafe {
                    (
                        _mm256_loadu_si256(p.cast()),
                        _mm256_loadu_si256(p.add(32).cast()),
                    )
                }
            }

            /// Σ code·x of a pair of accumulators: scaled, each lane shifted down by its scale first.
            #[inline]
            #[target_feature(enable = $features)]
            fn reduce(acc: (__m256i, __m256i)) -> i32 {
                let v = if $scaled {
                    let lo = _mm256_srav_epi32(acc.0, _mm256_set_epi32(4, 4, 4, 4, 6, 6, 6, 6));
                    let hi = _mm256_srav_epi32(acc.1, _mm256_set_epi32(0, 0, 0, 0, 2, 2, 2, 2));
                    _mm256_add_epi32(lo, hi)
                } else {
                    acc.0
                };
                let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
                _mm_cvtsi128_si32(s)
            }

            /// Rows `row0..row0 + R` for the `G` tokens from `t0` (their rows `xs`, padded last
            /// blocks `tails` and activation sums `sums`).
            ///
            /// # Safety
            /// As `super::super::run`; `t0 + G ≤ T`, `row0 + R ≤ n`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn block<const R: usize, const G: usize>(
                call: &Call,
                t0: usize,
                row0: usize,
                xs: &[*const i8; G],
                tails: &[[i8; BLOCK]; G],
                sums: &[i32; G],
            ) {
                let blocks = call.k.div_ceil(BLOCK);
                let full = call.k / BLOCK;
                let row_bytes = call.row_bytes();
                // SAFETY: rows row0..row0 + R of the packed weights.
                let wr: [*const u8; R] =
                    std::array::from_fn(|r| unsafe { call.w.add((row0 + r) * row_bytes) });
                if G == 1 && row0 + 2 * R <= call.rows.end {
                    // SAFETY: the next R rows, within the call's rows.
                    let ahead = unsafe { call.w.add((row0 + R) * row_bytes) };
                    let mut line = 0;
                    while line < R * row_bytes {
                        // SAFETY: a prefetch within the next R rows (no access happens).
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.add(line).cast()) };
                        line += 64;
                    }
                }
                let zero = _mm256_setzero_si256();
                let mut acc = [[(zero, zero); G]; R];
                for b in 0..blocks {
                    // SAFETY: block b of each row; each token's block b.
                    unsafe {
                        let c: [(__m256i, __m256i); R] = std::array::from_fn(|r| codes(wr[r], b));
                        for g in 0..G {
                            let (x0, x1) = acts(xs[g], b, full, &tails[g]);
                            for r in 0..R {
                                acc[r][g] = dot(acc[r][g], c[r].0, x0, c[r].1, x1);
                            }
                        }
                    }
                }
                for r in 0..R {
                    for g in 0..G {
                        let d = reduce(acc[r][g]);
                        // SAFETY: token t0 + g and row row0 + r are within the call.
                        unsafe { call.store(t0 + g, row0 + r, d.wrapping_sub(sums[g])) };
                    }
                }
            }

            /// `G` tokens from `t0` over rows `rows`: blocks of `R` rows, then single rows.
            ///
            /// # Safety
            /// As `super::super::run`; `t0 + G ≤ T`.
            #[target_feature(enable = $features)]
            unsafe fn group<const R: usize, const G: usize>(
                call: &Call,
                t0: usize,
                rows: std::ops::Range<usize>,
            ) {
                // SAFETY: tokens t0..t0 + G are below T; their rows have K bytes.
                let xs: [*const i8; G] =
                    std::array::from_fn(|g| unsafe { call.xq.add((t0 + g) * call.k) });
                let tails: [[i8; BLOCK]; G] =
                    std::array::from_fn(|g| unsafe { padded_tail(xs[g], call.k) });
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
                let tile = (TILE_BYTES / call.row_bytes().max(1)).max(1);
                let mut start = call.rows.start;
                while start < call.rows.end {
                    let end = (start + tile).min(call.rows.end);
                    let mut t = 0;
                    // SAFETY: the caller's buffers; every token group is within T.
                    unsafe {
                        while t + GROUP <= call.t {
                            group::<{ if $scaled { ROWS_SCALED } else { ROWS } }, GROUP>(
                                call,
                                t,
                                start..end,
                            );
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

kernel!(avxvnni, "avx2,avxvnni", true, |acc, c0, x0, c1, x1| {
    (
        _mm256_dpbusd_avx_epi32(acc.0, c0, x0),
        _mm256_dpbusd_avx_epi32(acc.1, c1, x1),
    )
});

kernel!(plain, "avx2", false, |acc, c0, x0, c1, x1| {
    let pairs = _mm256_add_epi16(_mm256_maddubs_epi16(c0, x0), _mm256_maddubs_epi16(c1, x1));
    (
        _mm256_add_epi32(acc.0, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))),
        acc.1,
    )
});
