//! The ternary matmul on AArch64 NEON: with the dot product (`sdot`, written as inline assembly
//! because its intrinsic is not stable in Rust 1.95) where the CPU has it (`dotprod`), else
//! widening multiplies (`plain`); both exact, bit for bit the portable kernel's results.
//!
//! Quarter q of a 64-element block (elements 16q..16q + 15) is the block's 16 code bytes shifted
//! right by 6 − 2q and masked with 3, in the order of a 16-byte activation load. `sdot` adds four
//! products (code ≤ 2 × i8) per i32 lane. Without it, `smull`/`smlal` sum a block's products per
//! i16 lane (8 products of at most 256 in magnitude: no overflow) and `sadalp` widens them into the
//! i32 accumulator. Loop order as the 256-bit x86 kernel's (`avx2`).

use super::TILE_BYTES;

/// Tokens per group.
const GROUP: usize = 4;
/// Rows per block of a group.
const ROWS: usize = 2;
/// Rows per block of a single token.
const ROWS_ONE: usize = 4;

/// Whether this CPU has the dot product instructions.
pub(super) fn dotprod_available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// One kernel per instruction set: `$features` enabled, `$dot(acc, c, x)` adding the 64 products
/// of a block (code quarters `c`, activation quarters `x`) into the 4 i32 lanes of `acc`.
macro_rules! kernel {
    ($name:ident, $features:literal, |$acc:ident, $c:ident, $x:ident| $dot:block) => {
        pub(super) mod $name {
            use super::super::{BLOCK, Call};
            use super::{GROUP, ROWS, ROWS_ONE, TILE_BYTES};
            use crate::native::padded_tail;
            use std::arch::aarch64::*;

            /// The block's products added into `acc` (see the macro).
            #[inline]
            #[target_feature(enable = $features)]
            fn dot($acc: int32x4_t, $c: &[int8x16_t; 4], $x: &[int8x16_t; 4]) -> int32x4_t $dot

            /// The 64 codes of block `b` of the row at `wr`, as four quarters in activation order.
            ///
            /// # Safety
            /// Block `b` is within the row.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn codes(wr: *const u8, b: usize) -> [int8x16_t; 4] {
                // SAFETY: 16 bytes of block `b`.
                let c = unsafe { vld1q_u8(wr.add(b * 16)) };
                let three = vdupq_n_u8(3);
                [
                    vreinterpretq_s8_u8(vshrq_n_u8::<6>(c)),
                    vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<4>(c), three)),
                    vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8::<2>(c), three)),
                    vreinterpretq_s8_u8(vandq_u8(c, three)),
                ]
            }

            /// The four quarters of block `b` of token row `x` (the last from `tail`).
            ///
            /// # Safety
            /// Block `b` is a whole block of the row, or the tail block with `tail` holding it.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn acts(x: *const i8, b: usize, full: usize, tail: &[i8; BLOCK]) -> [int8x16_t; 4] {
                let p = if b < full {
                    // SAFETY: a whole block of the row.
                    unsafe { x.add(b * BLOCK) }
                } else {
                    tail.as_ptr()
                };
                // SAFETY: 64 bytes at `p`.
                std::array::from_fn(|q| unsafe { vld1q_s8(p.add(16 * q)) })
            }

            /// Rows `row0..row0 + R` for the `G` tokens from `t0`.
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
                let mut acc = [[vdupq_n_s32(0); G]; R];
                for b in 0..blocks {
                    // SAFETY: block b of each row; each token's block b.
                    unsafe {
                        let c: [[int8x16_t; 4]; R] = std::array::from_fn(|r| codes(wr[r], b));
                        for g in 0..G {
                            let x = acts(xs[g], b, full, &tails[g]);
                            for r in 0..R {
                                acc[r][g] = dot(acc[r][g], &c[r], &x);
                            }
                        }
                    }
                }
                for r in 0..R {
                    for g in 0..G {
                        let d = vaddvq_s32(acc[r][g]);
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
            unsafe fn group<const R: usize, const G: usize>(call: &Call, t0: usize, rows: std::ops::Range<usize>) {
                // SAFETY: tokens t0..t0 + G are below T; their rows have K bytes.
                let xs: [*const i8; G] = std::array::from_fn(|g| unsafe { call.xq.add((t0 + g) * call.k) });
                let tails: [[i8; BLOCK]; G] = std::array::from_fn(|g| unsafe { padded_tail(xs[g], call.k) });
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

kernel!(dotprod, "neon,dotprod", |acc, c, x| {
    let mut acc = acc;
    for q in 0..4 {
        // SAFETY: `sdot` reads and writes vector registers only; the CPU has it (the feature).
        unsafe {
            std::arch::asm!(
                "sdot {acc:v}.4s, {c:v}.16b, {x:v}.16b",
                acc = inout(vreg) acc,
                c = in(vreg) c[q],
                x = in(vreg) x[q],
                options(pure, nomem, nostack),
            );
        }
    }
    acc
});

kernel!(plain, "neon", |acc, c, x| {
    let mut p = vmull_s8(vget_low_s8(c[0]), vget_low_s8(x[0]));
    p = vmlal_high_s8(p, c[0], x[0]);
    for q in 1..4 {
        p = vmlal_s8(p, vget_low_s8(c[q]), vget_low_s8(x[q]));
        p = vmlal_high_s8(p, c[q], x[q]);
    }
    vpadalq_s16(acc, p)
});
