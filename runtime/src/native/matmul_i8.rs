//! The int8 matmul micro-kernel (`KernelKind::MatmulI8`'s contract, exact: the int8 lm_head,
//! `out[t, r] = f32(Σ_k q[r, k]·xq[t, k]) / xs[t] · ws[r]`): Intel AMX for calls of several tokens
//! where the CPU and the OS allow it (`tiles`), else AVX-512 VNNI, else AVX-VNNI or AVX2 (`avx2`);
//! on AArch64 NEON with or without the dot product (`neon`); else a portable version. Every
//! variant gives the same results bit for bit.
//!
//! The weights are the bytes `q + 128` of `[n, k]` row-major (no padding), so they are the unsigned
//! operand of `vpdpbusd`/`tdpbsud` with the int8 activations; `Σ_k q·x = Σ_k (q + 128)·x − 128·Σ_k
//! x`, exact in wrapping i32 arithmetic because the true value fits (|q·x| ≤ 127·128, K ≤ the
//! generated kernel's `MAX_K`). Then `y = f32(acc) / xs[t] · ws[r]`, in that order, as the generated
//! kernel (`backends::cpu::kernels::matmul_i8`) computes it.
//!
//! AVX-512: row tiles of about `TILE_BYTES`; in each, tokens in groups of up to `GROUP`, rows in
//! blocks of `ROWS`: one 64-byte activation load serves `ROWS` rows, one weight load `GROUP`
//! tokens, every accumulator an independent chain; the last partial 64 bytes are masked loads.
//! AMX (`tiles`): the B tile of 16 rows' 64 bytes is a 16 × 16 dword transpose of the rows (two
//! rounds of unpacks within 128-bit lanes, then lane shuffles).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;

/// The fewest tokens a call runs on AMX.
#[cfg(target_arch = "x86_64")]
const AMX_MIN_TOKENS: usize = 4;
/// Weight bytes per row tile (the tile stays in cache while every token group runs over it).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const TILE_BYTES: usize = 256 * 1024;
/// Tokens per group of the AVX-512 kernel.
#[cfg(target_arch = "x86_64")]
const GROUP: usize = 4;
/// Rows per block of the AVX-512 kernel.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 4;
/// Bytes per step of a row of the AVX-512 and AMX kernels.
#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 64;

/// The shapes and buffers of one call (rows `rows` of `n`, all `t` tokens).
pub(crate) struct Call {
    pub(crate) xq: *const i8,
    pub(crate) xs: *const f32,
    pub(crate) w: *const u8,
    pub(crate) ws: *const f32,
    pub(crate) out: *mut f32,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) t: usize,
    pub(crate) rows: std::ops::Range<usize>,
}

impl Call {
    /// Writes `out[t, row]` from `Σ (q + 128)·x` and the token's `Σ x`.
    ///
    /// # Safety
    /// `t` and `row` are within the call's buffers.
    unsafe fn store(&self, t: usize, row: usize, acc: i32, xsum: i32) {
        // SAFETY: the caller's.
        unsafe { self.store_dot(t, row, acc.wrapping_sub(xsum.wrapping_mul(128))) };
    }

    /// Writes `out[t, row]` from `Σ q·x`.
    ///
    /// # Safety
    /// `t` and `row` are within the call's buffers.
    unsafe fn store_dot(&self, t: usize, row: usize, dot: i32) {
        // SAFETY: the caller's indices are within `xs` (T), `ws` (n) and `out` (T × n).
        unsafe {
            *self.out.add(t * self.n + row) = dot as f32 / *self.xs.add(t) * *self.ws.add(row)
        };
    }

    /// Σ xq[t, ..K].
    ///
    /// # Safety
    /// `t` is below the call's T.
    unsafe fn xsum(&self, t: usize) -> i32 {
        // SAFETY: row t of `xq` has K bytes.
        let x = unsafe { std::slice::from_raw_parts(self.xq.add(t * self.k), self.k) };
        x.iter().map(|&v| i32::from(v)).sum()
    }
}

/// Runs `call` (see the module doc).
///
/// # Safety
/// Every pointer is valid for the kernel's buffers at T tokens (`xq [T, k]`, `xs [T]`, `w [n, k]`,
/// `ws [n]`, `out [T, n]`); `rows` is within `0..n`; no weight byte is 0 (`q` within ±127).
pub(crate) unsafe fn run(call: &Call) {
    #[cfg(target_arch = "x86_64")]
    {
        if call.t >= AMX_MIN_TOKENS && super::allowed(super::Isa::Amx) && super::tiles::available()
        {
            // SAFETY: the process may use AMX; the buffers are the caller's.
            unsafe { super::tiles::run(call) };
            return;
        }
        if super::allowed(super::Isa::Avx512) && avx512::available() {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { avx512::run(call) };
            return;
        }
        if super::allowed(super::Isa::AvxVnni) && avx2::vnni_available() {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { avx2::avxvnni::run(call) };
            return;
        }
        if super::allowed(super::Isa::Avx2) && avx2::available() {
            // SAFETY: the CPU has the features; the weights are within ±127 (the contract); the
            // buffers are the caller's.
            unsafe { avx2::plain::run(call) };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if super::allowed(super::Isa::Dotprod) && neon::dotprod_available() {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { neon::dotprod::run(call) };
            return;
        }
        if super::allowed(super::Isa::Neon) {
            // SAFETY: every AArch64 CPU has NEON; the weights are within ±127 (the contract); the
            // buffers are the caller's.
            unsafe { neon::plain::run(call) };
            return;
        }
    }
    // SAFETY: the buffers are the caller's.
    unsafe { portable(call) }
}

/// The same results without SIMD.
///
/// # Safety
/// As `run`.
unsafe fn portable(call: &Call) {
    for row in call.rows.clone() {
        // SAFETY: row `row` of the weights has K bytes.
        let w = unsafe { std::slice::from_raw_parts(call.w.add(row * call.k), call.k) };
        for t in 0..call.t {
            // SAFETY: row t of `xq` has K bytes.
            let x = unsafe { std::slice::from_raw_parts(call.xq.add(t * call.k), call.k) };
            let acc = w.iter().zip(x).fold(0i32, |a, (&w, &x)| {
                a.wrapping_add(i32::from(w).wrapping_mul(i32::from(x)))
            });
            // SAFETY: t < T and row < n.
            unsafe { call.store(t, row, acc, call.xsum(t)) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK, Call, GROUP, ROWS, TILE_BYTES};
    use std::arch::x86_64::*;

    /// Whether this CPU runs the AVX-512 VNNI kernel.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }

    /// 64 bytes at `p + 64·b`, the last partial block masked (zeros past K).
    ///
    /// # Safety
    /// The K bytes of the row at `p` are readable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn load(p: *const u8, b: usize, k: usize) -> __m512i {
        let left = k - b * BLOCK;
        // SAFETY: the lanes loaded are within the row.
        unsafe {
            if left >= BLOCK {
                _mm512_loadu_si512(p.add(b * BLOCK).cast())
            } else {
                _mm512_maskz_loadu_epi8((1u64 << left) - 1, p.add(b * BLOCK).cast())
            }
        }
    }

    /// Rows `row0..row0 + R` for the `G` tokens from `t0`.
    ///
    /// # Safety
    /// As `super::run`; `t0 + G ≤ T`, `row0 + R ≤ n`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn block<const R: usize, const G: usize>(
        call: &Call,
        t0: usize,
        row0: usize,
        sums: &[i32; GROUP],
    ) {
        let k = call.k;
        // SAFETY: rows row0..row0 + R and tokens t0..t0 + G are within the call.
        let wr: [*const u8; R] = std::array::from_fn(|r| unsafe { call.w.add((row0 + r) * k) });
        let xs: [*const u8; G] =
            std::array::from_fn(|g| unsafe { call.xq.add((t0 + g) * k).cast::<u8>() });
        let mut acc = [[_mm512_setzero_si512(); G]; R];
        for b in 0..k.div_ceil(BLOCK) {
            // SAFETY: block b of each row and of each token's row.
            unsafe {
                let w: [__m512i; R] = std::array::from_fn(|r| load(wr[r], b, k));
                for g in 0..G {
                    let x = load(xs[g], b, k);
                    for r in 0..R {
                        acc[r][g] = _mm512_dpbusd_epi32(acc[r][g], w[r], x);
                    }
                }
            }
        }
        // Reduced in a loop without calls, so that the accumulators stay in registers.
        let dots: [[i32; G]; R] =
            std::array::from_fn(|r| std::array::from_fn(|g| _mm512_reduce_add_epi32(acc[r][g])));
        for (r, row_dots) in dots.iter().enumerate() {
            for (g, &dot) in row_dots.iter().enumerate() {
                // SAFETY: token t0 + g and row row0 + r are within the call.
                unsafe { call.store(t0 + g, row0 + r, dot, sums[g]) };
            }
        }
    }

    /// `G` tokens from `t0` over rows `rows`: blocks of `ROWS` rows, then single rows.
    ///
    /// # Safety
    /// As `super::run`; `t0 + G ≤ T`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn group<const G: usize>(call: &Call, t0: usize, rows: std::ops::Range<usize>) {
        // SAFETY: the tokens are below T.
        let sums: [i32; GROUP] = std::array::from_fn(|g| {
            if g < G {
                unsafe { call.xsum(t0 + g) }
            } else {
                0
            }
        });
        let mut row = rows.start;
        // SAFETY: every block of rows is within `rows`.
        unsafe {
            while row + ROWS <= rows.end {
                block::<ROWS, G>(call, t0, row, &sums);
                row += ROWS;
            }
            while row < rows.end {
                block::<1, G>(call, t0, row, &sums);
                row += 1;
            }
        }
    }

    /// Runs `call` (see the module doc).
    ///
    /// # Safety
    /// As `super::run`, on a CPU with the features (`available`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn run(call: &Call) {
        let tile = (TILE_BYTES / call.k.max(1)).max(1);
        let mut start = call.rows.start;
        while start < call.rows.end {
            let end = (start + tile).min(call.rows.end);
            let mut t = 0;
            // SAFETY: the caller's buffers; every group is within T.
            unsafe {
                while t < call.t {
                    match call.t - t {
                        1 => group::<1>(call, t, start..end),
                        2 => group::<2>(call, t, start..end),
                        3 => group::<3>(call, t, start..end),
                        _ => group::<GROUP>(call, t, start..end),
                    }
                    t += (call.t - t).min(GROUP);
                }
            }
            start = end;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{BLOCK, Call};
    use crate::native::tiles::{Activations, TileBytes, TileSource};
    use std::arch::x86_64::*;

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
            self.k
        }

        fn block_bytes(&self) -> usize {
            BLOCK
        }

        /// B row `g`, bytes 4n..4n + 3: bytes 4g..4g + 3 of block `b` of row `first + n`; the
        /// 16 rows' 64-byte blocks, as 16 × 16 dwords, transposed.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn tile(&self, first: usize, valid: usize, b: usize, out: &mut TileBytes) {
            let left = (self.k - b * BLOCK).min(BLOCK);
            let mask = if left >= BLOCK {
                u64::MAX
            } else {
                (1u64 << left) - 1
            };
            // SAFETY: the lanes loaded are within rows first..first + valid.
            let r: [__m512i; 16] = std::array::from_fn(|n| unsafe {
                if n < valid {
                    _mm512_maskz_loadu_epi8(
                        mask,
                        self.w.add((first + n) * self.k + b * BLOCK).cast(),
                    )
                } else {
                    _mm512_setzero_si512()
                }
            });
            // a[2i], a[2i + 1]: rows 2i and 2i + 1 interleaved by dwords (low, high halves of
            // each 128-bit lane).
            let a: [__m512i; 16] = std::array::from_fn(|j| {
                let (x, y) = (r[j & !1], r[j | 1]);
                if j % 2 == 0 {
                    _mm512_unpacklo_epi32(x, y)
                } else {
                    _mm512_unpackhi_epi32(x, y)
                }
            });
            // c[4i + c]: lane L holds column 4L + c of rows 4i..4i + 3.
            let c: [__m512i; 16] = std::array::from_fn(|j| {
                let (i, col) = (j / 4, j % 4);
                let (x, y) = (a[4 * i + col / 2], a[4 * i + 2 + col / 2]);
                if col % 2 == 0 {
                    _mm512_unpacklo_epi64(x, y)
                } else {
                    _mm512_unpackhi_epi64(x, y)
                }
            });
            for col in 0..4 {
                let x = [c[col], c[4 + col], c[8 + col], c[12 + col]];
                let q0 = _mm512_shuffle_i32x4::<0x44>(x[0], x[1]);
                let q1 = _mm512_shuffle_i32x4::<0xEE>(x[0], x[1]);
                let q2 = _mm512_shuffle_i32x4::<0x44>(x[2], x[3]);
                let q3 = _mm512_shuffle_i32x4::<0xEE>(x[2], x[3]);
                let rows = [
                    _mm512_shuffle_i32x4::<0x88>(q0, q2),
                    _mm512_shuffle_i32x4::<0xDD>(q0, q2),
                    _mm512_shuffle_i32x4::<0x88>(q1, q3),
                    _mm512_shuffle_i32x4::<0xDD>(q1, q3),
                ];
                for (lane, v) in rows.into_iter().enumerate() {
                    let g = 4 * lane + col;
                    // SAFETY: 64 bytes at 64·g < 1024 of an aligned buffer.
                    unsafe { _mm512_store_si512(out.0.as_mut_ptr().add(g * 64).cast(), v) };
                }
            }
        }

        /// The operations of `Call::store`, 16 lanes at once (the same roundings lane by lane).
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn store(&self, t: usize, first: usize, valid: usize, acc: &[i32], xsum: i32) {
            let mask: __mmask16 = if valid >= 16 {
                0xFFFF
            } else {
                (1u16 << valid) - 1
            };
            // SAFETY: the caller's bounds; masked lanes are not accessed.
            unsafe {
                let sums = _mm512_loadu_si512(acc.as_ptr().cast());
                let dots = _mm512_sub_epi32(sums, _mm512_set1_epi32(xsum.wrapping_mul(128)));
                let y = _mm512_div_ps(_mm512_cvtepi32_ps(dots), _mm512_set1_ps(*self.xs.add(t)));
                let y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(mask, self.ws.add(first)));
                _mm512_mask_storeu_ps(self.out.add(t * self.n + first), mask, y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Random weights, activations and scales; `variant` against the portable kernel, bit for bit.
    fn check(k: usize, n: usize, t: usize, seed: u64, variant: impl Fn(&Call)) {
        let mut next = crate::native::test_support::xorshift(seed | 1);
        // Bytes q + 128 with q in −127..=127.
        let w: Vec<u8> = (0..n * k).map(|_| (next() % 255) as u8 + 1).collect();
        let xq: Vec<i8> = (0..t * k).map(|_| (next() % 255) as i8).collect();
        let xs: Vec<f32> = (0..t).map(|i| 1.0 + i as f32 * 0.37).collect();
        let ws: Vec<f32> = (0..n).map(|i| 0.01 + i as f32 * 0.003).collect();
        let run_with = |simd: bool| {
            let mut out = vec![0f32; t * n];
            let call = Call {
                xq: xq.as_ptr(),
                xs: xs.as_ptr(),
                w: w.as_ptr(),
                ws: ws.as_ptr(),
                out: out.as_mut_ptr(),
                k,
                n,
                t,
                rows: 1.min(n)..n,
            };
            if simd {
                variant(&call);
            } else {
                // SAFETY: the buffers above have the call's shapes.
                unsafe { portable(&call) };
            }
            out
        };
        let (a, b) = (run_with(true), run_with(false));
        assert_eq!(
            crate::native::test_support::bits(&a),
            crate::native::test_support::bits(&b),
            "k {k} n {n} t {t}"
        );
        // Row 0 is outside the call: untouched.
        assert!((0..t).all(|i| a[i * n] == 0.0));
    }

    /// K not a multiple of 64 or under one block, rows off the blocks of 4 and 16 and past a row
    /// tile, T = 1…17 and past two token tiles.
    fn shapes() -> Vec<(usize, usize, usize)> {
        let mut shapes = vec![
            (64, 3, 1),
            (100, 7, 5),
            (1, 2, 3),
            (2560, 300, 4),
            (130, 65, 16),
        ];
        shapes.extend((1..=17).map(|t| (2560, 37, t)));
        shapes.extend([
            (200, 300, 6),
            (2560, 100, 40),
            (320, 129, 33),
            (47, 9, 1),
            (2570, 11, 2),
        ]);
        shapes
    }

    #[test]
    fn the_dispatched_kernel_equals_the_portable_one_at_awkward_shapes() {
        for (k, n, t) in shapes() {
            // SAFETY: `run` takes the caller's buffers.
            check(k, n, t, (k * 31 + n * 7 + t) as u64, |call| unsafe {
                run(call)
            });
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_kernels_equal_the_portable_one_at_awkward_shapes() {
        if avx2::available() {
            for (k, n, t) in shapes() {
                // SAFETY: the CPU has AVX2; the buffers are `check`'s.
                check(k, n, t, (k * 11 + n * 3 + t) as u64, |call| unsafe {
                    avx2::plain::run(call)
                });
            }
        } else {
            eprintln!("skipped: this CPU has no AVX2");
        }
        if avx2::vnni_available() {
            for (k, n, t) in shapes() {
                // SAFETY: the CPU has AVX-VNNI; the buffers are `check`'s.
                check(k, n, t, (k * 7 + n * 5 + t) as u64, |call| unsafe {
                    avx2::avxvnni::run(call)
                });
            }
        } else {
            eprintln!("skipped: this CPU has no AVX-VNNI");
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn the_neon_kernels_equal_the_portable_one_at_awkward_shapes() {
        for (k, n, t) in shapes() {
            // SAFETY: every AArch64 CPU has NEON; the buffers are `check`'s.
            check(k, n, t, (k * 11 + n * 3 + t) as u64, |call| unsafe {
                neon::plain::run(call)
            });
        }
        if neon::dotprod_available() {
            for (k, n, t) in shapes() {
                // SAFETY: the CPU has the dot product; the buffers are `check`'s.
                check(k, n, t, (k * 7 + n * 5 + t) as u64, |call| unsafe {
                    neon::dotprod::run(call)
                });
            }
        } else {
            eprintln!("skipped: this CPU has no dot product instructions");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_kernel_equals_the_portable_one_at_awkward_shapes() {
        if !avx512::available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        for (k, n, t) in shapes() {
            // SAFETY: the CPU has the features; the buffers are `check`'s.
            check(k, n, t, (k * 17 + n * 3 + t) as u64, |call| unsafe {
                avx512::run(call)
            });
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_amx_kernel_equals_the_portable_one_at_awkward_shapes() {
        if !crate::native::tiles::available() {
            eprintln!("skipped: this CPU or OS does not give AMX to this process");
            return;
        }
        for (k, n, t) in shapes() {
            // SAFETY: the process may use AMX; the buffers are `check`'s.
            check(k, n, t, (k * 13 + n * 5 + t) as u64, |call| unsafe {
                crate::native::tiles::run(call)
            });
        }
    }
}
