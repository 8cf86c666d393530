//! The 16-bit float matmul micro-kernel (`KernelKind::MatmulNtHalf`'s contract: the lm_head with
//! bf16 or f16 weights, f32 activations and sums): AVX-512 on x86-64 when the CPU has it (with
//! F16C for f16), else a portable version with the same results.
//!
//! Rows are stored in `backends::kernel::layout` order: per group of eight weights, 32-bit lane l
//! holds weight l in its low half and weight 4 + l in its high half; the last `k mod 8` weights
//! follow in order. One 64-byte load holds four groups (32 weights): the low halves widen to the
//! f32 weights 8g + l, the high halves to 8g + 4 + l (bf16: a shift or a mask; f16: `vcvtph2ps`,
//! exact), and the activations are gathered into the same order by two permutes of two 64-byte
//! loads: once per call into a stack buffer when K ≤ 4096, else for every row.
//!
//! The order of the f32 sums is fixed per output element, whatever the number of tokens in the call
//! or the rows another thread takes: chunk c of 32 weights adds its low products into accumulator
//! 2c mod 4 and its high ones into 2c + 1 mod 4 (fused multiply-adds, 16 lanes each); the rest of
//! the row's whole groups, then its last `k mod 8` weights, go into one scalar sum in order
//! (fused); the result is `reduce(((a0 + a1) + (a2 + a3))) + scalar`. So a token's logits are the
//! same alone, in a batch or in a prefill (the runtime's batch invariance), and `forward_last`'s
//! equal `forward`'s last row. They differ from the interpreter's f64 sum within `MatmulNt`'s
//! tolerance, as the generated kernel's do.

/// Tokens per group (one widened weight chunk serves this many tokens).
const GROUP: usize = 4;
/// Rows ahead whose weights are prefetched.
const PREFETCH_ROWS: usize = 2;
/// Weights per chunk (one 64-byte load).
const CHUNK: usize = 32;
/// Half the most activations per token gathered once into the weights' order (on the stack).
const PERMUTED_MAX: usize = 2048;

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
        if avx512::available(call.f16) {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { avx512::run(call) };
            return;
        }
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
        let chunks = k / CHUNK;
        let mut acc = [[0f32; 16]; 4];
        #[allow(clippy::needless_range_loop)]
        // i is the lane; it also picks the weights and activations
        for c in 0..chunks {
            for i in 0..16 {
                let (g, l) = (c * 4 + i / 4, i % 4);
                let lo = *wr.add(c * CHUNK + 2 * i);
                let hi = *wr.add(c * CHUNK + 2 * i + 1);
                let (a, b) = ((2 * c) % 4, (2 * c + 1) % 4);
                acc[a][i] = (*x.add(8 * g + l)).mul_add(widen(lo, f16), acc[a][i]);
                acc[b][i] = (*x.add(8 * g + 4 + l)).mul_add(widen(hi, f16), acc[b][i]);
            }
        }
        let mut s = 0f32;
        for g in chunks * 4..k / 8 {
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
        let v: [f32; 16] =
            std::array::from_fn(|i| (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i]));
        reduce16(&v) + s
    }
}

/// The sum of 16 lanes in the order of `_mm512_reduce_add_ps` (halves added pairwise: 8, 4, 2, 1).
fn reduce16(v: &[f32; 16]) -> f32 {
    let a: [f32; 8] = std::array::from_fn(|i| v[i] + v[i + 8]);
    let b: [f32; 4] = std::array::from_fn(|i| a[i] + a[i + 4]);
    let c: [f32; 2] = std::array::from_fn(|i| b[i] + b[i + 2]);
    c[0] + c[1]
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
    use super::{CHUNK, Call, GROUP, PERMUTED_MAX, PREFETCH_ROWS};
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

    /// `G` tokens from `t0` over rows `rows`.
    ///
    /// # Safety
    /// As `super::run`; `t0 + G ≤ T`.
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    unsafe fn group<const G: usize>(call: &Call, t0: usize, rows: std::ops::Range<usize>) {
        let k = call.k;
        let chunks = k / CHUNK;
        // Lane i of the low weights is weight 8(i / 4) + i % 4 of the chunk; of the high, + 4.
        let lo_idx = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
        let hi_idx = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
        // SAFETY: tokens t0..t0 + G are below T.
        let xs: [*const f32; G] = std::array::from_fn(|g| unsafe { call.x.add((t0 + g) * k) });
        // Each token's chunks gathered once into the weights' order (low lanes, then high), when
        // they fit the stack buffer; else gathered per row (the same values, the same sums).
        let mut gathered = [[0f32; PERMUTED_MAX * 2]; G];
        let pre = chunks * CHUNK <= PERMUTED_MAX * 2;
        if pre {
            for g in 0..G {
                for c in 0..chunks {
                    // SAFETY: chunk c of token g's row; 32 floats of its buffer.
                    unsafe {
                        let x0 = _mm512_loadu_ps(xs[g].add(c * CHUNK));
                        let x1 = _mm512_loadu_ps(xs[g].add(c * CHUNK + 16));
                        let dst = gathered[g].as_mut_ptr().add(c * CHUNK);
                        _mm512_storeu_ps(dst, _mm512_permutex2var_ps(x0, lo_idx, x1));
                        _mm512_storeu_ps(dst.add(16), _mm512_permutex2var_ps(x0, hi_idx, x1));
                    }
                }
            }
        }
        let last_row = call.rows.end;
        for row in rows {
            // SAFETY: row `row` of the weights.
            let wr = unsafe { call.w.add(row * k) };
            if row + PREFETCH_ROWS < last_row {
                let bytes = k * 2;
                // SAFETY: a prefetch within the row `PREFETCH_ROWS` on (no access happens).
                let ahead = unsafe { wr.add(PREFETCH_ROWS * k).cast::<u8>() };
                let mut line = 0;
                while line < bytes {
                    // SAFETY: as above.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.add(line).cast()) };
                    line += 64;
                }
            }
            // Four accumulators per token, each indexed statically so that they stay in registers:
            // even chunks into 0 and 1, odd ones into 2 and 3.
            let mut acc0 = [_mm512_setzero_ps(); G];
            let mut acc1 = [_mm512_setzero_ps(); G];
            let mut acc2 = [_mm512_setzero_ps(); G];
            let mut acc3 = [_mm512_setzero_ps(); G];
            macro_rules! chunk {
                ($c:expr, $lo:ident, $hi:ident) => {{
                    let c = $c;
                    // SAFETY: chunk c of the row and of each token's row (or its gathered copy).
                    unsafe {
                        let (wl, wh) = weights(wr.add(c * CHUNK), call.f16);
                        for g in 0..G {
                            let (xl, xh) = if pre {
                                let src = gathered[g].as_ptr().add(c * CHUNK);
                                (_mm512_loadu_ps(src), _mm512_loadu_ps(src.add(16)))
                            } else {
                                let x0 = _mm512_loadu_ps(xs[g].add(c * CHUNK));
                                let x1 = _mm512_loadu_ps(xs[g].add(c * CHUNK + 16));
                                (
                                    _mm512_permutex2var_ps(x0, lo_idx, x1),
                                    _mm512_permutex2var_ps(x0, hi_idx, x1),
                                )
                            };
                            $lo[g] = _mm512_fmadd_ps(xl, wl, $lo[g]);
                            $hi[g] = _mm512_fmadd_ps(xh, wh, $hi[g]);
                        }
                    }
                }};
            }
            let mut c = 0;
            while c + 2 <= chunks {
                chunk!(c, acc0, acc1);
                chunk!(c + 1, acc2, acc3);
                c += 2;
            }
            if c < chunks {
                chunk!(c, acc0, acc1);
            }
            for g in 0..G {
                let (a0, a1, a2, a3) = (acc0[g], acc1[g], acc2[g], acc3[g]);
                let v = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
                let mut lanes = [0f32; 16];
                // SAFETY: 16 lanes into 16 floats.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
                // SAFETY: the rest of the row and of token t0 + g's row (scalar, as the portable
                // kernel orders it), then the output element.
                unsafe {
                    let s = tail(xs[g], wr, k, call.f16);
                    *call.out.add((t0 + g) * call.n + row) = super::reduce16(&lanes) + s;
                }
            }
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
                    s = (*x.add(8 * g + l)).mul_add(super::widen(lo, f16), s);
                    s = (*x.add(8 * g + 4 + l)).mul_add(super::widen(hi, f16), s);
                }
            }
            for j in k / 8 * 8..k {
                s = (*x.add(j)).mul_add(super::widen(*wr.add(j), f16), s);
            }
        }
        s
    }

    /// Runs `call`: groups of `GROUP` tokens, then one at a time (the same arithmetic).
    ///
    /// # Safety
    /// As `super::run`, on a CPU with the features (`available`).
    #[target_feature(enable = "avx512f,avx512bw,f16c")]
    pub(super) unsafe fn run(call: &Call) {
        let mut t = 0;
        // SAFETY: the caller's buffers; every group is within T.
        unsafe {
            while t + GROUP <= call.t {
                group::<GROUP>(call, t, call.rows.clone());
                t += GROUP;
            }
            while t < call.t {
                group::<1>(call, t, call.rows.clone());
                t += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn check(k: usize, n: usize, t: usize, f16: bool, seed: u64) {
        let mut s = seed | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
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
        let go = |simd: bool, t: usize, rows: std::ops::Range<usize>| {
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
            unsafe { if simd { run(&call) } else { portable(&call) } };
            out
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let all = go(true, t, 0..n);
        assert_eq!(
            bits(&all),
            bits(&go(false, t, 0..n)),
            "k {k} n {n} t {t} f16 {f16}"
        );
        // The last token alone gives its row of the full call, bit for bit.
        let last = go(true, 1, 0..n);
        assert_eq!(bits(&last), bits(&all[..n]), "token 0 alone");
        // Rows split between two calls give the same values.
        let mut split = go(true, t, 0..n / 2);
        let rest = go(true, t, n / 2..n);
        for i in 0..t * n {
            if i % n >= n / 2 {
                split[i] = rest[i];
            }
        }
        assert_eq!(bits(&split), bits(&all));
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
