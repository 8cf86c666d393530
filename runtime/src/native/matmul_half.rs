//! The 16-bit float matmul micro-kernel (`KernelKind::MatmulNtHalf`'s contract: the lm_head with
//! bf16 or f16 weights, f32 activations and sums): AVX-512 on x86-64 when the CPU has it (with
//! F16C for f16), else AVX2 with FMA (`avx2.rs`: the same sums on 256-bit vectors); on AArch64
//! NEON (`neon.rs`: the same sums on 128-bit vectors); else a portable version with the same
//! results.
//!
//! Rows are stored in `backends::kernel::layout` order: per group of eight weights, 32-bit lane l
//! holds weight l in its low half and weight 4 + l in its high half; the last `k mod 8` weights
//! follow in order. One 64-byte load holds four groups (32 weights): the low halves widen to the
//! f32 weights 8g + l, the high halves to 8g + 4 + l (bf16: a shift or a mask; f16: `vcvtph2ps`,
//! exact), and the activations are put into the same order by two permutes of two 64-byte loads
//! (in registers: the kernel allocates nothing, as every step of the runtime).
//!
//! Loop order: row tiles of about `TILE_BYTES` of weights; in each tile, tokens in groups of
//! `GROUP` (then one at a time), every row of the tile for each group, so the weights stream from
//! memory once per call whatever the number of tokens (a batched decode step reads the head once),
//! and one widened chunk serves `GROUP` tokens.
//!
//! The order of the f32 sums is fixed per output element, whatever the number of tokens in the call
//! or the rows another thread takes: one 16-lane accumulator per output element takes, chunk after
//! chunk, the low products then the high ones (fused multiply-adds); the rest of the row's whole
//! groups, then its last `k mod 8` weights, go into one scalar sum in order (fused); the result is
//! `reduce(acc) + scalar`. So a token's logits are the same alone, in a batch or in a prefill (the
//! runtime's batch invariance), and `forward_last`'s equal `forward`'s last row. They differ from
//! the interpreter's f64 sum within `MatmulNt`'s tolerance, as the generated kernel's do.
//!
//! One accumulator per output leaves the registers to a block of `ROWS` rows × `GROUP` tokens: each
//! widened weight chunk serves `GROUP` tokens and each activation chunk `ROWS` rows, which keeps the
//! loop on the FMA units rather than on the cache (a block of one row streamed 64 bytes of
//! activations per multiply-add).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;

/// Tokens per group (one widened weight chunk serves this many tokens).
#[cfg(target_arch = "x86_64")]
const GROUP: usize = 4;
/// Rows per block of a group (one activation chunk serves this many rows).
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 3;
/// Rows per block of a single token (independent chains while the weights stream).
#[cfg(target_arch = "x86_64")]
const SINGLE_ROWS: usize = 8;
/// Weights per chunk (one 64-byte load).
const CHUNK: usize = 32;
/// Weight bytes per row tile (the tile stays in cache while every token group runs over it).
#[cfg(target_arch = "x86_64")]
const TILE_BYTES: usize = 256 * 1024;

/// The shapes and buffers of one call (rows `rows` of `n`, all `t` tokens).
pub(crate) struct Call {
    pub(crate) x: *const f32,
    pub(crate) w: *const u16,
    pub(crate) out: *mut f32,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) t: usize,
    pub(crate) f16: bool,
    pub(crate) rows: std::ops::Range<usize>,
}

/// Runs `call` (see the module doc).
///
/// # Safety
/// Every pointer is valid for the kernel's buffers at T tokens (`x [T, k]`, `w [n, k]`,
/// `out [T, n]`); `rows` is within `0..n`.
pub(crate) unsafe fn run(call: &Call) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::allowed(super::Isa::Avx512) && avx512::available(call.f16) {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { avx512::run(call) };
            return;
        }
        if super::allowed(super::Isa::Avx2) && avx2::available(call.f16) {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { avx2::run(call) };
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if super::allowed(super::Isa::Neon) {
        // SAFETY: every AArch64 CPU has NEON; the buffers are the caller's.
        unsafe { neon::run(call) };
        return;
    }
    // SAFETY: the buffers are the caller's.
    unsafe { portable(call) }
}

/// The f32 value of a stored weight.
fn widen(bits: u16, f16: bool) -> f32 {
    if f16 {
        half_to_f32(bits)
    } else {
        f32::from_bits(u32::from(bits) << 16)
    }
}

/// An IEEE half as f32 (exact).
fn half_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: m · 2^−24, exact in f32.
            let v = m as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// The dot of token row `x` with weight row `wr` in the module doc's order.
///
/// # Safety
/// `x` has k values and `wr` k weights.
unsafe fn dot_portable(x: *const f32, wr: *const u16, k: usize, f16: bool) -> f32 {
    // SAFETY: indices below k.
    unsafe {
        let mut acc = [0f32; 16];
        for c in 0..k / CHUNK {
            for (i, a) in acc.iter_mut().enumerate() {
                let (g, l) = (c * 4 + i / 4, i % 4);
                let lo = *wr.add(c * CHUNK + 2 * i);
                *a = (*x.add(8 * g + l)).mul_add(widen(lo, f16), *a);
                let hi = *wr.add(c * CHUNK + 2 * i + 1);
                *a = (*x.add(8 * g + 4 + l)).mul_add(widen(hi, f16), *a);
            }
        }
        reduce16(&acc) + tail(x, wr, k, f16)
    }
}

/// The scalar part of a row's dot (whole groups after the chunks, then the last `k mod 8`).
///
/// # Safety
/// `x` has k values and `wr` k weights.
unsafe fn tail(x: *const f32, wr: *const u16, k: usize, f16: bool) -> f32 {
    let mut s = 0f32;
    // SAFETY: indices below k.
    unsafe {
        for g in k / CHUNK * 4..k / 8 {
            for l in 0..4 {
                let lo = *wr.add(8 * g + 2 * l);
                let hi = *wr.add(8 * g + 2 * l + 1);
                s = (*x.add(8 * g + l)).mul_add(widen(lo, f16), s);
                s = (*x.add(8 * g + 4 + l)).mul_add(widen(hi, f16), s);
            }
        }
        for j in k / 8 * 8..k {
            s = (*x.add(j)).mul_add(widen(*wr.add(j), f16), s);
        }
    }
    s
}

/// The sum of 16 lanes in the order of `_mm512_reduce_add_ps` (halves added pairwise: 8, 4, 2, 1).
fn reduce16(v: &[f32; 16]) -> f32 {
    let a: [f32; 8] = std::array::from_fn(|i| v[i] + v[i + 8]);
    let b: [f32; 4] = std::array::from_fn(|i| a[i] + a[i + 4]);
    let c: [f32; 2] = std::array::from_fn(|i| b[i] + b[i + 2]);
    c[0] + c[1]
}

/// With `ahead` > 0, asks for the weights of each row `ahead` rows after `wr`'s (rows `row0..`)
/// that the call has, a cache line at a time: the SIMD versions' blocks fetch the next block's
/// rows while they compute.
#[cfg(target_arch = "x86_64")]
fn prefetch_ahead(call: &Call, wr: &[*const u16], row0: usize, ahead: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let bytes = call.k * 2;
    for (r, row) in wr.iter().enumerate() {
        if ahead > 0 && row0 + r + ahead < call.rows.end {
            let ahead = row.wrapping_add(ahead * call.k).cast::<u8>();
            for line in (0..bytes).step_by(64) {
                // SAFETY: a prefetch is a hint: it reads nothing and cannot fault.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast()) };
            }
        }
    }
}

/// The same results without SIMD.
///
/// # Safety
/// As `run`.
unsafe fn portable(call: &Call) {
    for row in call.rows.clone() {
        for t in 0..call.t {
            // SAFETY: row `row` of `w`, token t of `x` and `out`.
            unsafe {
                let y = dot_portable(
                    call.x.add(t * call.k),
                    call.w.add(row * call.k),
                    call.k,
                    call.f16,
                );
                *call.out.add(t * call.n + row) = y;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{CHUNK, Call, GROUP, ROWS, SINGLE_ROWS, TILE_BYTES};
    use std::arch::x86_64::*;

    /// Whether this CPU runs the AVX-512 kernel (for f16 weights: also F16C).
    pub(super) fn available(f16: bool) -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && (!f16 || std::arch::is_x86_feature_detected!("f16c"))
    }

    /// The low and high weights of a 64-byte chunk as f32.
    ///
    /// # Safety
    /// `p` holds 32 weights.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    unsafe fn weights(p: *const u16, f16: bool) -> (__m512, __m512) {
        // SAFETY: 64 bytes at `p`.
        let v = unsafe { _mm512_loadu_si512(p.cast()) };
        if f16 {
            let lo = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
            let hi = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(v)));
            (lo, hi)
        } else {
            let lo = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
            let hi = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(-65536)));
            (lo, hi)
        }
    }

    /// Rows `row0..row0 + R` for the `G` tokens from `t0`. With `ahead` > 0, the weights of the `R` rows
    /// `ahead` rows on (those of the call) are fetched into the cache on the way.
    ///
    /// # Safety
    /// As `super::run`; `t0 + G ≤ T`, `row0 + R ≤ n`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
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
        // Lane i of the low weights is weight 8(i / 4) + i % 4 of the chunk; of the high, + 4.
        let lo_idx = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
        let hi_idx = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
        super::prefetch_ahead(call, &wr, row0, ahead);
        let mut acc = [[_mm512_setzero_ps(); G]; R];
        for c in 0..chunks {
            // SAFETY: chunk c of each row and of each token's row.
            unsafe {
                let w: [(__m512, __m512); R] =
                    std::array::from_fn(|r| weights(wr[r].add(c * CHUNK), F16));
                for g in 0..G {
                    let src = xs[g].add(c * CHUNK);
                    let (x0, x1) = (_mm512_loadu_ps(src), _mm512_loadu_ps(src.add(16)));
                    let xl = _mm512_permutex2var_ps(x0, lo_idx, x1);
                    let xh = _mm512_permutex2var_ps(x0, hi_idx, x1);
                    for r in 0..R {
                        acc[r][g] = _mm512_fmadd_ps(xl, w[r].0, acc[r][g]);
                        acc[r][g] = _mm512_fmadd_ps(xh, w[r].1, acc[r][g]);
                    }
                }
            }
        }
        // Reduced in a loop without calls, so that the accumulators stay in registers.
        let sums: [[f32; G]; R] =
            std::array::from_fn(|r| std::array::from_fn(|g| _mm512_reduce_add_ps(acc[r][g])));
        for (r, row_sums) in sums.iter().enumerate() {
            for (g, sum) in row_sums.iter().enumerate() {
                // SAFETY: the rest of row row0 + r and of token t0 + g's row (scalar, as the
                // portable kernel orders it), then the output element.
                unsafe {
                    let s = super::tail(xs[g], wr[r], k, call.f16);
                    *call.out.add((t0 + g) * call.n + row0 + r) = sum + s;
                }
            }
        }
    }

    /// One token over rows `rows`: blocks of `SINGLE_ROWS` rows over whole rows, each fetching
    /// the weights of the next block (the weights stream from memory; nothing else matters).
    ///
    /// # Safety
    /// As `block`, for every row of `rows`.
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    unsafe fn single<const F16: bool>(call: &Call, t: usize, rows: std::ops::Range<usize>) {
        let mut row = rows.start;
        // SAFETY: every block is within `rows`.
        unsafe {
            while row + SINGLE_ROWS <= rows.end {
                block::<SINGLE_ROWS, 1, F16>(call, t, row, SINGLE_ROWS);
                row += SINGLE_ROWS;
            }
            while row < rows.end {
                block::<1, 1, F16>(call, t, row, 1);
                row += 1;
            }
        }
    }

    /// `GROUP` tokens from `t0` over rows `rows` (a tile, in cache after the first group): blocks of
    /// `ROWS` rows, then single rows (the hardware prefetcher streams the first group's weights;
    /// software prefetching measured slower here).
    ///
    /// # Safety
    /// As `block`, for every row of `rows`.
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    unsafe fn group<const F16: bool>(call: &Call, t0: usize, rows: std::ops::Range<usize>) {
        let mut row = rows.start;
        // SAFETY: every block is within `rows`.
        unsafe {
            while row + ROWS <= rows.end {
                block::<ROWS, GROUP, F16>(call, t0, row, 0);
                row += ROWS;
            }
            while row < rows.end {
                block::<1, GROUP, F16>(call, t0, row, 0);
                row += 1;
            }
        }
    }

    /// Runs `call` (see the module doc: row tiles, then groups of `GROUP` tokens, then one at a
    /// time; the same arithmetic for each).
    ///
    /// # Safety
    /// As `super::run`, on a CPU with the features (`available`).
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
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
                        group::<true>(call, t, start..end);
                    } else {
                        group::<false>(call, t, start..end);
                    }
                    t += GROUP;
                }
                while t < call.t {
                    if call.f16 {
                        single::<true>(call, t, start..end);
                    } else {
                        single::<false>(call, t, start..end);
                    }
                    t += 1;
                }
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn check(k: usize, n: usize, t: usize, f16: bool, seed: u64) {
        let mut next = crate::native::test_support::xorshift(seed | 1);
        // Finite weights of either format (f16: exponent below 31).
        let w: Vec<u16> = (0..n * k)
            .map(|_| {
                let r = next() as u16;
                if f16 { r & 0xbbff } else { r & 0xbfff }
            })
            .collect();
        let x: Vec<f32> = (0..t * k)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let go = |variant: Variant, t: usize, rows: std::ops::Range<usize>| {
            let mut out = vec![0f32; t * n];
            let call = Call {
                x: x.as_ptr(),
                w: w.as_ptr(),
                out: out.as_mut_ptr(),
                k,
                n,
                t,
                f16,
                rows,
            };
            // SAFETY: the buffers have the call's shapes.
            unsafe { variant.run(&call) };
            out
        };
        let bits = crate::native::test_support::bits;
        let all = go(Variant::Portable, t, 0..n);
        for variant in variants(f16) {
            let what = format!("{variant:?} k {k} n {n} t {t} f16 {f16}");
            assert_eq!(bits(&go(variant, t, 0..n)), bits(&all), "{what}");
            // The first token alone gives its row of the full call, bit for bit.
            let first = go(variant, 1, 0..n);
            assert_eq!(bits(&first), bits(&all[..n]), "token 0 alone, {what}");
            // Rows split between two calls give the same values.
            let mut split = go(variant, t, 0..n / 2);
            let rest = go(variant, t, n / 2..n);
            for i in 0..t * n {
                if i % n >= n / 2 {
                    split[i] = rest[i];
                }
            }
            assert_eq!(bits(&split), bits(&all), "split, {what}");
        }
    }

    /// Each version of the kernel.
    #[derive(Clone, Copy, Debug)]
    enum Variant {
        Portable,
        #[cfg(target_arch = "x86_64")]
        Avx2,
        #[cfg(target_arch = "x86_64")]
        Avx512,
        #[cfg(target_arch = "aarch64")]
        Neon,
        /// What `run` picks.
        Best,
    }

    impl Variant {
        /// # Safety
        /// As `run`; the variant is one `variants` lists.
        unsafe fn run(self, call: &Call) {
            // SAFETY: the caller's.
            unsafe {
                match self {
                    Variant::Portable => portable(call),
                    #[cfg(target_arch = "x86_64")]
                    Variant::Avx2 => avx2::run(call),
                    #[cfg(target_arch = "x86_64")]
                    Variant::Avx512 => avx512::run(call),
                    #[cfg(target_arch = "aarch64")]
                    Variant::Neon => neon::run(call),
                    Variant::Best => run(call),
                }
            }
        }
    }

    /// The versions this CPU runs for `f16` or bf16 weights.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn variants(f16: bool) -> Vec<Variant> {
        #[allow(unused_mut)]
        let mut v = vec![Variant::Best];
        #[cfg(target_arch = "x86_64")]
        {
            if avx2::available(f16) {
                v.push(Variant::Avx2);
            }
            if avx512::available(f16) {
                v.push(Variant::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(Variant::Neon);
        v
    }

    #[test]
    fn the_simd_kernel_equals_the_portable_one_at_awkward_shapes() {
        for (k, n, t) in [
            (32, 3, 1),
            (64, 5, 5),
            (100, 7, 9),
            (7, 2, 3),
            (2560, 9, 4),
            (45, 300, 6),
            (4100, 3, 5),
            (2560, 120, 9),
        ] {
            check(k, n, t, false, (k * 31 + n) as u64);
            check(k, n, t, true, (k * 17 + t) as u64);
        }
    }

    #[test]
    fn halves_widen_exactly() {
        for h in [0u16, 1, 0x3ff, 0x400, 0x3c00, 0xbc00, 0x7bff, 0x8001] {
            let want = half_to_f32(h);
            assert_eq!(widen(h, true).to_bits(), want.to_bits());
        }
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(1), 2f32.powi(-24));
        assert_eq!(half_to_f32(0x7bff), 65504.0);
    }
}
