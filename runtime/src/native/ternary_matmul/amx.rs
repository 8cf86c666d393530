//! The ternary matmul on Intel AMX (`super::super::tiles`), for calls of several tokens: same
//! contract and same results as the parent's kernels (exact integer sums, then the same operations
//! as `Call::store`), chosen by the parent's `run` when the CPU and the OS allow AMX.
//!
//! The B tile of 16 rows' block holds their codes t + 1. The packed layout
//! (`backends::kernel::layout`: element j of a 64-element block in byte j % 16 at bits 6 − 2·(j /
//! 16)) puts elements 16q + 4d .. 16q + 4d + 3 in dword d of the block at shift 6 − 2q, so B row
//! 4q + d is, for the 16 rows, dword d of each row's block, shifted and masked: four loads of 16
//! bytes per register, a dword transpose by two `vpermt2d` and a blend, then four shift-and-mask
//! per dword (`unpack`). `acc = C − Σ x` as the AVX-512 kernel.

use super::Call;
use crate::native::tiles::{Activations, TileBytes, TileSource};
use std::arch::x86_64::*;

/// Writes block `b` of the `valid` (≤ 16) rows from `w` (row stride `row_bytes`) into `out` as a
/// B tile (see the module doc); rows from `valid` on are zero codes.
///
/// # Safety
/// Block `b` of each of the `valid` rows is within the weights.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn unpack(w: *const u8, row_bytes: usize, valid: usize, b: usize, out: &mut TileBytes) {
    // z[i], 128-bit lane l: the block of row 4i + l.
    let mut z = [_mm512_setzero_si512(); 4];
    for n in 0..valid {
        // SAFETY: block b of row n.
        let block = unsafe { _mm_loadu_si128(w.add(n * row_bytes + b * 16).cast()) };
        z[n / 4] = _mm512_mask_broadcast_i32x4(z[n / 4], 0xF << (4 * (n % 4)), block);
    }
    let three = _mm512_set1_epi8(3);
    // Position n of (z0 | z1), n < 8, and of (z2 | z3), n ≥ 8: dword 0 of row n's block (dword d
    // is d further).
    let first_dwords = _mm512_set_epi32(28, 24, 20, 16, 12, 8, 4, 0, 28, 24, 20, 16, 12, 8, 4, 0);
    for d in 0..4 {
        let idx = _mm512_add_epi32(first_dwords, _mm512_set1_epi32(d));
        let low = _mm512_permutex2var_epi32(z[0], idx, z[1]);
        let high = _mm512_permutex2var_epi32(z[2], idx, z[3]);
        let dwords = _mm512_mask_blend_epi32(0xFF00, low, high);
        // B row 4q + d: the codes at shift 6 − 2q (16-bit shifts; the mask drops what crosses).
        let rows = [
            _mm512_srli_epi16::<6>(dwords),
            _mm512_srli_epi16::<4>(dwords),
            _mm512_srli_epi16::<2>(dwords),
            dwords,
        ];
        for (q, v) in rows.into_iter().enumerate() {
            let at = (4 * q + d as usize) * 64;
            // SAFETY: 64 bytes at `at` < 1024 of an aligned buffer.
            unsafe {
                _mm512_store_si512(
                    out.0.as_mut_ptr().add(at).cast(),
                    _mm512_and_si512(v, three),
                )
            };
        }
    }
}

/// Writes `out[t, first..first + valid]` from the exact sums `acc[..valid]` less `sum`: the
/// operations of `Call::store` in the same order, 16 lanes at once (the same roundings lane by lane).
///
/// # Safety
/// Token `t` and rows `first..first + valid` (`valid` ≤ 16) are within the call; `acc` has 16
/// elements.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn store_row(call: &Call, t: usize, first: usize, valid: usize, acc: &[i32], sum: i32) {
    let mask: __mmask16 = if valid >= 16 {
        0xFFFF
    } else {
        (1u16 << valid) - 1
    };
    // SAFETY: the caller's bounds; masked lanes are not accessed.
    unsafe {
        let dots = _mm512_sub_epi32(
            _mm512_loadu_si512(acc.as_ptr().cast()),
            _mm512_set1_epi32(sum),
        );
        let scale = _mm512_set1_ps(*call.xs.add(t));
        let mut y = _mm512_mul_ps(
            _mm512_div_ps(_mm512_cvtepi32_ps(dots), scale),
            _mm512_set1_ps(call.ws),
        );
        let at = t * call.n + first;
        if !call.residual.is_null() {
            y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, call.residual.add(at)));
        }
        _mm512_mask_storeu_ps(call.out.add(at), mask, y);
    }
}

impl TileSource for Call {
    fn activations(&self) -> Activations {
        Activations {
            xq: self.xq,
            k: self.k,
            t: self.t,
        }
    }

    fn rows(&self) -> std::ops::Range<usize> {
        self.rows.clone()
    }

    fn weights(&self) -> *const u8 {
        self.w
    }

    fn row_bytes(&self) -> usize {
        Call::row_bytes(self)
    }

    fn block_bytes(&self) -> usize {
        16
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn tile(&self, first: usize, valid: usize, b: usize, out: &mut TileBytes) {
        let row_bytes = Call::row_bytes(self);
        // SAFETY: the caller's rows are within the weights.
        unsafe { unpack(self.w.add(first * row_bytes), row_bytes, valid, b, out) };
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn store(&self, t: usize, first: usize, valid: usize, acc: &[i32], xsum: i32) {
        // SAFETY: the caller's.
        unsafe { store_row(self, t, first, valid, acc, xsum) };
    }
}
