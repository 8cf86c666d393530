//! The 16-bit float matmul micro-kernel with AVX2 and FMA (and F16C for f16 weights): the AVX-512
//! version's order of sums on 256-bit vectors, so the same bits (see the parent module's doc).
//!
//! The 16-lane accumulator of an output element is two 8-lane ones: lanes 0–7 take the first 32
//! bytes of each 64-byte chunk (weights 0–3 and 8–11 low, 4–7 and 12–15 high), lanes 8–15 the other
//! 32. The activations come into that order by one 128-bit lane permute per vector
//! (`vperm2f128`). The two halves are reduced as `_mm512_reduce_add_ps` reduces 16 lanes
//! (`super::reduce16`), then the row's scalar tail is added, as in every variant.
//!
//! Sixteen registers hold a block of 2 rows × 2 tokens (8 accumulators, a weight pair, two
//! tokens' activation pairs) or, for one token, of 4 rows, which fetch the next 4 rows' weights
//! into the cache on the way.

use super::{CHUNK, Call};
use std::arch::x86_64::*;

/// Tokens per group (one widened weight chunk serves this many tokens).
const GROUP: usize = 2;
/// Rows per block of a group.
const ROWS: usize = 2;
/// Rows per block of a single token.
const SINGLE_ROWS: usize = 4;
/// Weight bytes per row tile (the tile stays in cache while every token group runs over it).
const TILE_BYTES: usize = 256 * 1024;

/// Whether this CPU runs the AVX2 kernel (for f16 weights: also F16C).
pub(super) fn available(f16: bool) -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && (!f16 || std::arch::is_x86_feature_detected!("f16c"))
}

/// The low and high weights of 32 bytes (16 weights) as f32.
///
/// # Safety
/// `p` holds 16 weights.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weights(p: *const u16, f16: bool) -> (__m256, __m256) {
    // SAFETY: 32 bytes at `p`.
    let v = unsafe { _mm256_loadu_si256(p.cast()) };
    if f16 {
        // The low and the high halves of the 32-bit lanes, packed into 8 halves each (the values
        // are below 2^16, so the saturating pack keeps them).
        let pack = |h: __m256i| {
            _mm256_cvtph_ps(_mm_packus_epi32(
                _mm256_castsi256_si128(h),
                _mm256_extracti128_si256::<1>(h),
            ))
        };
        let lo = pack(_mm256_and_si256(v, _mm256_set1_epi32(0xffff)));
        let hi = pack(_mm256_srli_epi32::<16>(v));
        (lo, hi)
    } else {
        let lo = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
        let hi = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(-65536)));
        (lo, hi)
    }
}

/// Rows `row0..row0 + R` for the `G` tokens from `t0`. With `ahead` > 0, the weights of the `R`
/// rows `ahead` rows on (those of the call) are fetched into the cache on the way.
///
/// # Safety
/// As `super::run`; `t0 + G ≤ T`, `row0 + R ≤ n`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block<const R: usize, const G: usize, const F16: bool>(
    call: &Call,
    t0: usize,
    row0: usize,
    ahead: usize,
) {
    let k = call.k;
    let chunks = k / CHUNK;
    // SAFETY: rows row0..row0 + R of the weights, tokens t0..t0 + G of the activations.
    let wr: [*const u16; R] = std::array::from_fn(|r| unsafe { call.w.add((row0 + r) * k) });
    let xs: [*const f32; G] = std::array::from_fn(|g| unsafe { call.x.add((t0 + g) * k) });
    super::prefetch_ahead(call, &wr, row0, ahead);
    // acc[r][g][half]: lanes 0–7 and 8–15 of the AVX-512 accumulator.
    let mut acc = [[[_mm256_setzero_ps(); 2]; G]; R];
    for c in 0..chunks {
        for half in [0, 1] {
            let at = c * CHUNK + 16 * half;
            // SAFETY: weights and activations at..at + 16 of each row (within the chunk).
            unsafe {
                let x: [(__m256, __m256); G] = std::array::from_fn(|g| {
                    let (x0, x1) = (
                        _mm256_loadu_ps(xs[g].add(at)),
                        _mm256_loadu_ps(xs[g].add(at + 8)),
                    );
                    (
                        _mm256_permute2f128_ps::<0x20>(x0, x1),
                        _mm256_permute2f128_ps::<0x31>(x0, x1),
                    )
                });
                for r in 0..R {
                    let (wl, wh) = weights(wr[r].add(at), F16);
                    for g in 0..G {
                        let a = &mut acc[r][g][half];
                        *a = _mm256_fmadd_ps(x[g].0, wl, *a);
                        *a = _mm256_fmadd_ps(x[g].1, wh, *a);
                    }
                }
            }
        }
    }
    for r in 0..R {
        for g in 0..G {
            let mut lanes = [0f32; 16];
            // SAFETY: 16 f32 in `lanes`; the rest of row row0 + r and of token t0 + g's row
            // (scalar, as the portable kernel orders it), then the output element.
            unsafe {
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][g][0]);
                _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[r][g][1]);
                let s = super::tail(xs[g], wr[r], k, call.f16);
                *call.out.add((t0 + g) * call.n + row0 + r) = super::reduce16(&lanes) + s;
            }
        }
    }
}

/// Rows `rows` for the tokens `t0..t0 + G` in blocks of `R` rows, then single rows.
///
/// # Safety
/// As `block`, for every row of `rows`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_of<const R: usize, const G: usize, const F16: bool>(
    call: &Call,
    t0: usize,
    rows: std::ops::Range<usize>,
    prefetch: bool,
) {
    let mut row = rows.start;
    // SAFETY: every block is within `rows`.
    unsafe {
        while row + R <= rows.end {
            block::<R, G, F16>(call, t0, row, if prefetch { R } else { 0 });
            row += R;
        }
        while row < rows.end {
            block::<1, G, F16>(call, t0, row, usize::from(prefetch));
            row += 1;
        }
    }
}

/// Runs `call`: row tiles, then groups of `GROUP` tokens over each tile, then one token at a
/// time (streaming, with prefetch); the same arithmetic for each.
///
/// # Safety
/// As `super::run`, on a CPU with the features (`available`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn run(call: &Call) {
    let tile = (TILE_BYTES / (call.k * 2).max(1)).max(1);
    let mut start = call.rows.start;
    while start < call.rows.end {
        let end = (start + tile).min(call.rows.end);
        let mut t = 0;
        // SAFETY: the caller's buffers; every group is within T.
        unsafe {
            while t + GROUP <= call.t {
                if call.f16 {
                    rows_of::<ROWS, GROUP, true>(call, t, start..end, false);
                } else {
                    rows_of::<ROWS, GROUP, false>(call, t, start..end, false);
                }
                t += GROUP;
            }
            while t < call.t {
                if call.f16 {
                    rows_of::<SINGLE_ROWS, 1, true>(call, t, start..end, true);
                } else {
                    rows_of::<SINGLE_ROWS, 1, false>(call, t, start..end, true);
                }
                t += 1;
            }
        }
        start = end;
    }
}
