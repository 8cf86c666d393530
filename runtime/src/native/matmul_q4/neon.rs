//! The 4-bit matmul on AArch64 NEON: with the dot product where the CPU has it (`dotprod`: `sdot`,
//! as inline assembly because its intrinsic is not stable in Rust 1.95), else widening multiplies
//! (`plain`: `smull`/`smlal2` into 16-bit lanes, then `saddlp` into 32-bit ones). The same exact
//! integers as every variant (see the parent module's doc).
//!
//! NEON multiplies signed by signed, so the activations enter as they are (no `+ 128`): a group's
//! 32 products `q·x` (|q·x| ≤ 8·128) are summed into four 32-bit lanes (the plain kernel's 16-bit
//! lanes hold sums of four products, at most 4096 in magnitude), multiplied by the group's
//! multiplier and added to the accumulator, which so holds `Σ_g m_g·Σ q·x` (wrapping i32; the true
//! value fits for K ≤ `MAX_K`); `Call::store` subtracts the correction for the unsigned form, so
//! it is added first.
//!
//! A 16-byte load of a chunk's nibbles holds 16 weights of one group in its low nibbles and 16 of
//! the group two on in its high ones; the last chunk of a row whose K is not a multiple of 128
//! reads its activations from a zero-padded copy (`native::padded_tail`, once per token of a
//! group; the padding weights are 0). Loop order as the
//! AVX2 kernel's: 4 rows × 1 token, or 2 rows × 2 tokens.

/// Tokens per group.
const TOKENS: usize = 2;

/// Whether this CPU has the dot product instructions.
pub(super) fn dotprod_available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// One kernel per instruction set: `$features` enabled, `$dot(q0, x0, q1, x1)` the sums of the 32
/// products of a group (signed weights `q`, activations `x`, two vectors each) in 4 i32 lanes.
macro_rules! kernel {
    ($name:ident, $features:literal, |$q0:ident, $x0:ident, $q1:ident, $x1:ident| $dot:block) => {
        pub(super) mod $name {
            use super::super::{CHUNK, Call, TILE_BYTES, multipliers, nibble_bytes};
            use super::TOKENS;
            use crate::native::padded_tail;
            use std::arch::aarch64::*;

            /// A group's products summed into 4 lanes (see the macro).
            #[inline]
            #[target_feature(enable = $features)]
            fn dot($q0: int8x16_t, $x0: int8x16_t, $q1: int8x16_t, $x1: int8x16_t) -> int32x4_t $dot

            /// Chunk `c` of a token's activations, eight vectors of 16 in index order: from the
            /// row when the chunk is whole, else from `tail` (the last partial chunk, zero-padded).
            ///
            /// # Safety
            /// The K bytes at `x` are readable.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn acts(x: *const i8, c: usize, k: usize, tail: &[i8; CHUNK]) -> [int8x16_t; 8] {
                let src = if (c + 1) * CHUNK <= k {
                    // SAFETY: the chunk is within the row.
                    unsafe { x.add(c * CHUNK) }
                } else {
                    tail.as_ptr()
                };
                // SAFETY: 128 bytes at `src` (the row's or the tail's).
                std::array::from_fn(|v| unsafe { vld1q_s8(src.add(16 * v)) })
            }

            /// Rows `row0..row0 + R` for the `G` tokens from `t0` (their padded last chunks
            /// `tails`).
            ///
            /// # Safety
            /// As `super::super::run`; `t0 + G ≤ T`, `row0 + R ≤ n`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn block<const R: usize, const G: usize>(call: &Call, t0: usize, row0: usize, tails: &[[i8; CHUNK]; G]) {
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
                let (low, eight) = (vdupq_n_u8(15), vdupq_n_s8(8));
                let mut acc = [[vdupq_n_s32(0); G]; R];
                for c in 0..k.div_ceil(CHUNK) {
                    // SAFETY: chunk c of each row and of each token's activations.
                    unsafe {
                        let x: [[int8x16_t; 8]; G] = std::array::from_fn(|g| acts(xs[g], c, k, &tails[g]));
                        for r in 0..R {
                            let v: [uint8x16_t; 4] = std::array::from_fn(|s| vld1q_u8(wr[r].add(64 * c + 16 * s)));
                            let lo = |v: uint8x16_t| vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, low)), eight);
                            let hi = |v: uint8x16_t| vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8::<4>(v)), eight);
                            // Weights 0..64 are the low nibbles, 64..128 the high: group j's two
                            // vectors.
                            let q = [lo(v[0]), lo(v[1]), lo(v[2]), lo(v[3]), hi(v[0]), hi(v[1]), hi(v[2]), hi(v[3])];
                            let m: [i32; 4] = std::array::from_fn(|j| i32::from(*mr[r].add(4 * c + j)));
                            for g in 0..G {
                                for j in 0..4 {
                                    let s = dot(q[2 * j], x[g][2 * j], q[2 * j + 1], x[g][2 * j + 1]);
                                    acc[r][g] = vmlaq_n_s32(acc[r][g], s, m[j]);
                                }
                            }
                        }
                    }
                }
                for (r, row_acc) in acc.iter().enumerate() {
                    for (g, &a) in row_acc.iter().enumerate() {
                        // SAFETY: token t0 + g and row row0 + r are within the call; `store`
                        // subtracts the correction of the unsigned form, which these signed sums
                        // do not carry.
                        unsafe {
                            let dot = vaddvq_s32(a).wrapping_add(*call.corr.add(row0 + r));
                            call.store(t0 + g, row0 + r, dot);
                        }
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
                let tails: [[i8; CHUNK]; G] = std::array::from_fn(|g| unsafe { padded_tail(call.xq.add((t0 + g) * call.k), call.k) });
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
            /// As `super::super::run`, on a CPU with the features.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn run(call: &Call) {
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
        }
    };
}

kernel!(dotprod, "neon,dotprod", |q0, x0, q1, x1| {
    let mut acc = vdupq_n_s32(0);
    // SAFETY: `sdot` reads and writes vector registers only; the CPU has it (the feature).
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {q0:v}.16b, {x0:v}.16b",
            "sdot {acc:v}.4s, {q1:v}.16b, {x1:v}.16b",
            acc = inout(vreg) acc,
            q0 = in(vreg) q0,
            x0 = in(vreg) x0,
            q1 = in(vreg) q1,
            x1 = in(vreg) x1,
            options(pure, nomem, nostack),
        );
    }
    acc
});

kernel!(plain, "neon", |q0, x0, q1, x1| {
    let p = vmlal_high_s8(vmull_s8(vget_low_s8(q0), vget_low_s8(x0)), q0, x0);
    let p = vmlal_high_s8(vmlal_s8(p, vget_low_s8(q1), vget_low_s8(x1)), q1, x1);
    vpaddlq_s16(p)
});
