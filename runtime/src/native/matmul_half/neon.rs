//! The 16-bit float matmul micro-kernel on AArch64 NEON: the AVX-512 version's order of sums on
//! 128-bit vectors, so the same bits (see the parent module's doc).
//!
//! The 16-lane accumulator of an output element is four 4-lane ones: vector q takes group q of each
//! 64-byte chunk (16 bytes: four 32-bit lanes, weight l in the low half and 4 + l in the high),
//! whose activations are the plain 4-value runs at 8q and 8q + 4, so no permute is needed. The
//! halves widen exactly: bf16 by a shift or a mask; f16 by `fcvtl` (inline assembly, as the f16
//! vector type is not stable in Rust 1.95; the kernel leaves FPCR alone, and Linux starts a
//! process without flush-to-zero). Each lane takes the low product then the high one, fused
//! (`vfmaq_f32`), as AVX-512's; the four vectors are reduced as `_mm512_reduce_add_ps` reduces 16
//! lanes (`super::reduce16`), then the row's scalar tail is added, as in every variant.
//!
//! 32 registers hold a block of 2 rows × 2 tokens (16 accumulators) or, for one token, of 4 rows.

use super::{CHUNK, Call};
use std::arch::aarch64::*;

/// Tokens per group (one widened weight chunk serves this many tokens).
const GROUP: usize = 2;
/// Rows per block of a group.
const ROWS: usize = 2;
/// Rows per block of a single token.
const SINGLE_ROWS: usize = 4;
/// Weight bytes per row tile (the tile stays in cache while every token group runs over it).
const TILE_BYTES: usize = 256 * 1024;

/// Four f16 values as f32 (exact for every finite value, subnormals included).
#[inline]
#[target_feature(enable = "neon")]
fn widen_f16(h: uint16x4_t) -> float32x4_t {
    let out: float32x4_t;
    // SAFETY: `fcvtl` reads and writes vector registers only; every AArch64 CPU has it.
    unsafe {
        std::arch::asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            o = out(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack),
        );
    }
    out
}

/// The low and high weights of 16 bytes (one group of 8 weights) as f32.
///
/// # Safety
/// `p` holds 8 weights.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn weights<const F16: bool>(p: *const u16) -> (float32x4_t, float32x4_t) {
    // SAFETY: 16 bytes at `p`.
    let v = unsafe { vld1q_u32(p.cast()) };
    if F16 {
        (widen_f16(vmovn_u32(v)), widen_f16(vshrn_n_u32::<16>(v)))
    } else {
        (
            vreinterpretq_f32_u32(vshlq_n_u32::<16>(v)),
            vreinterpretq_f32_u32(vandq_u32(v, vdupq_n_u32(0xffff_0000))),
        )
    }
}

/// Rows `row0..row0 + R` for the `G` tokens from `t0`.
///
/// # Safety
/// As `super::run`; `t0 + G ≤ T`, `row0 + R ≤ n`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn block<const R: usize, const G: usize, const F16: bool>(
    call: &Call,
    t0: usize,
    row0: usize,
) {
    let k = call.k;
    let chunks = k / CHUNK;
    // SAFETY: rows row0..row0 + R of the weights, tokens t0..t0 + G of the activations.
    let wr: [*const u16; R] = std::array::from_fn(|r| unsafe { call.w.add((row0 + r) * k) });
    let xs: [*const f32; G] = std::array::from_fn(|g| unsafe { call.x.add((t0 + g) * k) });
    // acc[q][r][g]: lanes 4q..4q + 3 of the AVX-512 accumulator.
    let mut acc = [[[vdupq_n_f32(0.0); G]; R]; 4];
    for c in 0..chunks {
        for (q, acc) in acc.iter_mut().enumerate() {
            let at = c * CHUNK + 8 * q;
            // SAFETY: weights and activations at..at + 8 of each row (within the chunk).
            unsafe {
                let x: [(float32x4_t, float32x4_t); G] = std::array::from_fn(|g| {
                    (vld1q_f32(xs[g].add(at)), vld1q_f32(xs[g].add(at + 4)))
                });
                for r in 0..R {
                    let (wl, wh) = weights::<F16>(wr[r].add(at));
                    for g in 0..G {
                        let a = &mut acc[r][g];
                        *a = vfmaq_f32(*a, x[g].0, wl);
                        *a = vfmaq_f32(*a, x[g].1, wh);
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
                for (q, v) in acc.iter().enumerate() {
                    vst1q_f32(lanes.as_mut_ptr().add(4 * q), v[r][g]);
                }
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
#[target_feature(enable = "neon")]
unsafe fn rows_of<const R: usize, const G: usize, const F16: bool>(
    call: &Call,
    t0: usize,
    rows: std::ops::Range<usize>,
) {
    let mut row = rows.start;
    // SAFETY: every block is within `rows`.
    unsafe {
        while row + R <= rows.end {
            block::<R, G, F16>(call, t0, row);
            row += R;
        }
        while row < rows.end {
            block::<1, G, F16>(call, t0, row);
            row += 1;
        }
    }
}

/// Runs `call`: row tiles, then groups of `GROUP` tokens over each tile, then one token at a
/// time; the same arithmetic for each.
///
/// # Safety
/// As `super::run` (every AArch64 CPU has NEON).
#[target_feature(enable = "neon")]
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
                    rows_of::<ROWS, GROUP, true>(call, t, start..end);
                } else {
                    rows_of::<ROWS, GROUP, false>(call, t, start..end);
                }
                t += GROUP;
            }
            while t < call.t {
                if call.f16 {
                    rows_of::<SINGLE_ROWS, 1, true>(call, t, start..end);
                } else {
                    rows_of::<SINGLE_ROWS, 1, false>(call, t, start..end);
                }
                t += 1;
            }
        }
        start = end;
    }
}
