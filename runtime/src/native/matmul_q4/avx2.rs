//! The 4-bit matmul micro-kernel with AVX2 (x86-64-v3): the same exact integers as every variant
//! (see the parent module's doc).
//!
//! A 32-byte half of a chunk's nibbles holds two whole groups: its low nibbles are weights
//! `0..32` (half 0) or `32..64` (half 1) of the chunk, its high nibbles the same plus 64. So each
//! 32-byte vector of weights is one group, multiplied by one multiplier: `vpmaddubsw` of the
//! activations plus 128 (unsigned) and the weights (signed) gives sums of two products, at most
//! 2·255·8 = 4080 in magnitude (no saturation), and `vpmaddwd` by the group's multiplier in every
//! 16-bit lane adds `m·(p0 + p1)` pairs into 32-bit lanes, which the accumulator adds in wrapping
//! i32 arithmetic (the AVX-512 kernel's `acc − corr` argument holds unchanged).
//!
//! The last chunk of a row whose K is not a multiple of 128 reads its activations from a copy on
//! the stack padded with zeros (`native::padded_tail`, once per token of a group: AVX2 has no
//! byte-masked load); the padding weights are 0.
//!
//! Blocks: 4 rows × 1 token or 2 rows × 2 tokens (one decoded weight chunk serves both tokens),
//! each prefetching the rows `AHEAD` blocks on.

use super::{AHEAD, CHUNK, Call, TILE_BYTES, multipliers, nibble_bytes};
use crate::native::padded_tail;
use std::arch::x86_64::*;

/// Tokens per group.
const TOKENS: usize = 2;

/// Whether this CPU runs the AVX2 kernel.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Chunk `c` of a token's activations plus 128, as four 32-byte vectors of unsigned bytes in the
/// order of the weights (`0..32`, `32..64`, `64..96`, `96..128`): from the row when the chunk is
/// whole, else from `tail`, the row's last partial chunk padded with zeros (`padded_tail`: AVX2 has
/// no byte-masked load), whose weights are 0.
///
/// # Safety
/// The K bytes at `x` are readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn acts(x: *const i8, c: usize, k: usize, tail: &[i8; CHUNK]) -> [__m256i; 4] {
    let bias = _mm256_set1_epi8(-128);
    let src = if (c + 1) * CHUNK <= k {
        // SAFETY: the chunk is within the row.
        unsafe { x.add(c * CHUNK) }
    } else {
        tail.as_ptr()
    };
    // SAFETY: 128 bytes at `src` (the row's or the tail's).
    std::array::from_fn(|v| unsafe {
        _mm256_xor_si256(_mm256_loadu_si256(src.add(32 * v).cast()), bias)
    })
}

/// Chunk `c` of a row: its four groups of weights as signed bytes, in the order of `acts`, and
/// their multipliers in every 16-bit lane.
///
/// # Safety
/// Chunk `c` of the row at `w` (nibbles) and `m` (multipliers) is readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn weights(w: *const u8, m: *const u8, c: usize) -> ([__m256i; 4], [__m256i; 4]) {
    let (low, eight) = (_mm256_set1_epi8(15), _mm256_set1_epi8(8));
    // SAFETY: 64 bytes of nibbles and 4 multipliers of chunk c.
    let (v0, v1, mult) = unsafe {
        (
            _mm256_loadu_si256(w.add(64 * c).cast()),
            _mm256_loadu_si256(w.add(64 * c + 32).cast()),
            [0, 1, 2, 3].map(|g| i16::from(*m.add(4 * c + g))),
        )
    };
    let lo = |v: __m256i| _mm256_sub_epi8(_mm256_and_si256(v, low), eight);
    let hi = |v: __m256i| _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16::<4>(v), low), eight);
    // Weights 0..32 and 32..64 are the low nibbles of the two halves, 64..96 and 96..128 the high.
    (
        [lo(v0), lo(v1), hi(v0), hi(v1)],
        [0, 1, 2, 3].map(|g| _mm256_set1_epi16(mult[g])),
    )
}

/// Rows `row0..row0 + R` for the `G` tokens from `t0` (their padded last chunks `tails`).
///
/// # Safety
/// As `super::run`; `t0 + G ≤ T`, `row0 + R ≤ n`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block<const R: usize, const G: usize>(
    call: &Call,
    t0: usize,
    row0: usize,
    tails: &[[i8; CHUNK]; G],
) {
    let (k, nb, mb) = (call.k, nibble_bytes(call.k), multipliers(call.k));
    // SAFETY: rows row0..row0 + R and tokens t0..t0 + G are within the call.
    let (wr, mr): ([*const u8; R], [*const u8; R]) = unsafe {
        (
            std::array::from_fn(|r| call.w.add((row0 + r) * nb)),
            std::array::from_fn(|r| call.m.add((row0 + r) * mb)),
        )
    };
    // SAFETY: as above.
    let xs: [*const i8; G] = std::array::from_fn(|g| unsafe { call.xq.add((t0 + g) * k) });
    let mut acc = [[_mm256_setzero_si256(); G]; R];
    // The rows `AHEAD·R` on (within the call) are asked for as these stream.
    let ahead = (row0 + (AHEAD + 1) * R <= call.rows.end).then_some(AHEAD * R);
    for c in 0..k.div_ceil(CHUNK) {
        if let Some(rows) = ahead {
            for r in 0..R {
                // A hint: it reads nothing and cannot fault.
                _mm_prefetch::<_MM_HINT_T0>(wr[r].wrapping_add(rows * nb + 64 * c).cast());
                if c == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(mr[r].wrapping_add(rows * mb).cast());
                }
            }
        }
        // SAFETY: chunk c of each row and of each token's activations.
        unsafe {
            let x: [[__m256i; 4]; G] = std::array::from_fn(|g| acts(xs[g], c, k, &tails[g]));
            for r in 0..R {
                let (q, m) = weights(wr[r], mr[r], c);
                for g in 0..G {
                    for v in 0..4 {
                        let pairs = _mm256_maddubs_epi16(x[g][v], q[v]);
                        acc[r][g] = _mm256_add_epi32(acc[r][g], _mm256_madd_epi16(pairs, m[v]));
                    }
                }
            }
        }
    }
    for (r, row_acc) in acc.iter().enumerate() {
        for (g, &a) in row_acc.iter().enumerate() {
            let mut lanes = [0i32; 8];
            // SAFETY: 8 i32 in `lanes`.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), a) };
            let dot = lanes.iter().fold(0i32, |s, &l| s.wrapping_add(l));
            // SAFETY: token t0 + g and row row0 + r are within the call.
            unsafe { call.store(t0 + g, row0 + r, dot) };
        }
    }
}

/// `G` tokens from `t0` over rows `rows`: blocks of `R` rows, then single rows.
///
/// # Safety
/// As `super::run`; `t0 + G ≤ T`.
#[target_feature(enable = "avx2")]
unsafe fn group<const R: usize, const G: usize>(
    call: &Call,
    t0: usize,
    rows: std::ops::Range<usize>,
) {
    // SAFETY: tokens t0..t0 + G are below T; their rows have K bytes.
    let tails: [[i8; CHUNK]; G] =
        std::array::from_fn(|g| unsafe { padded_tail(call.xq.add((t0 + g) * call.k), call.k) });
    let mut row = rows.start;
    // SAFETY: every block of rows is within `rows`.
    unsafe {
        while row + R <= rows.end {
            block::<R, G>(call, t0, row, &tails);
            row += R;
        }
        while row < rows.end {
            block::<1, G>(call, t0, row, &tails);
            row += 1;
        }
    }
}

/// Runs `call`: row tiles, then tokens in groups of up to `TOKENS` over each.
///
/// # Safety
/// As `super::run`, on a CPU with the features (`available`).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn run(call: &Call) {
    let tile = (TILE_BYTES / nibble_bytes(call.k).max(1)).max(1);
    let mut start = call.rows.start;
    while start < call.rows.end {
        let end = (start + tile).min(call.rows.end);
        let mut t = 0;
        // SAFETY: the caller's buffers; every group is within T.
        unsafe {
            while t < call.t {
                if call.t - t == 1 {
                    group::<4, 1>(call, t, start..end);
                } else {
                    group::<2, TOKENS>(call, t, start..end);
                }
                t += (call.t - t).min(TOKENS);
            }
        }
        start = end;
    }
}
