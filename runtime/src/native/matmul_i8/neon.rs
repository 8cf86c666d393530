//! The int8 matmul on AArch64 NEON: with the dot product where the CPU has it (`dotprod`: `sdot`,
//! as inline assembly because its intrinsic is not stable in Rust 1.95), else widening multiplies
//! (`plain`: `smull`/`smlal2` pairs then `sadalp` into i32). Both multiply the signed weights `q`
//! (the stored byte XOR 0x80) by the activations; the plain pairs are exact because `q` is within
//! ±127 (`quantize_rows` clamps it there), so two products stay within 2·127·128 < 2¹⁵. Both give
//! the portable kernel's results bit for bit.
//!
//! Loop order as the 256-bit x86 kernel's (`avx2`), 16 bytes per step.

/// Tokens per group.
const GROUP: usize = 4;
/// Rows per block of a group.
const ROWS: usize = 2;
/// Rows per block of a single token.
const ROWS_ONE: usize = 4;
/// Bytes per step.
const STEP: usize = 16;

/// Whether this CPU has the dot product instructions.
pub(super) fn dotprod_available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// One kernel per instruction set: `$features` enabled, `$dot(acc, q, x)` adding the 16 products
/// of a step (signed weights `q`, activations `x`) into the 4 i32 lanes of `acc`.
macro_rules! kernel {
    ($name:ident, $features:literal, |$acc:ident, $q:ident, $x:ident| $dot:block) => {
        pub(super) mod $name {
            use super::super::Call;
            use super::{GROUP, ROWS, ROWS_ONE, STEP};
            use crate::native::matmul_i8::TILE_BYTES;
            use crate::native::padded_tail;
            use std::arch::aarch64::*;

            /// The step's products added into `acc` (see the macro).
            #[inline]
            #[target_feature(enable = $features)]
            fn dot($acc: int32x4_t, $q: int8x16_t, $x: int8x16_t) -> int32x4_t $dot

            /// Step `s` of the row at `p` (the last from `tail`, when K has a partial one).
            ///
            /// # Safety
            /// Step `s` is a whole step of the row, or the partial one with `tail` holding it.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn load(p: *const u8, s: usize, full: usize, tail: &[u8; STEP]) -> uint8x16_t {
                // SAFETY: 16 bytes of the row, or the padded copy.
                unsafe {
                    if s < full {
                        vld1q_u8(p.add(s * STEP))
                    } else {
                        vld1q_u8(tail.as_ptr())
                    }
                }
            }

            /// Rows `row0..row0 + R` for the `G` tokens from `t0` (their rows `xs` and padded last
            /// steps `tails`).
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
            ) {
                let k = call.k;
                let (steps, full) = (k.div_ceil(STEP), k / STEP);
                // SAFETY: rows row0..row0 + R of the weights.
                let wr: [*const u8; R] = std::array::from_fn(|r| unsafe { call.w.add((row0 + r) * k) });
                // SAFETY: each row has K bytes.
                let wt: [[u8; STEP]; R] = std::array::from_fn(|r| unsafe { padded_tail(wr[r], k) });
                let mut acc = [[vdupq_n_s32(0); G]; R];
                let sign = vdupq_n_u8(0x80);
                for s in 0..steps {
                    // SAFETY: step s of each row and of each token's row.
                    unsafe {
                        let q: [int8x16_t; R] = std::array::from_fn(|r| {
                            vreinterpretq_s8_u8(veorq_u8(load(wr[r], s, full, &wt[r]), sign))
                        });
                        for g in 0..G {
                            let x = vreinterpretq_s8_u8(load(xs[g], s, full, &tails[g]));
                            for r in 0..R {
                                acc[r][g] = dot(acc[r][g], q[r], x);
                            }
                        }
                    }
                }
                for r in 0..R {
                    for g in 0..G {
                        // SAFETY: token t0 + g and row row0 + r are within the call.
                        unsafe { call.store_dot(t0 + g, row0 + r, vaddvq_s32(acc[r][g])) };
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
                let mut row = rows.start;
                // SAFETY: every block of rows is within `rows`.
                unsafe {
                    while row + R <= rows.end {
                        block::<R, G>(call, t0, row, &xs, &tails);
                        row += R;
                    }
                    while row < rows.end {
                        block::<1, G>(call, t0, row, &xs, &tails);
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

kernel!(dotprod, "neon,dotprod", |acc, q, x| {
    let mut acc = acc;
    // SAFETY: `sdot` reads and writes vector registers only; the CPU has it (the feature).
    unsafe {
        std::arch::asm!(
            "sdot {acc:v}.4s, {q:v}.16b, {x:v}.16b",
            acc = inout(vreg) acc,
            q = in(vreg) q,
            x = in(vreg) x,
            options(pure, nomem, nostack),
        );
    }
    acc
});

kernel!(plain, "neon", |acc, q, x| {
    let pairs = vmlal_high_s8(vmull_s8(vget_low_s8(q), vget_low_s8(x)), q, x);
    vpadalq_s16(acc, pairs)
});
