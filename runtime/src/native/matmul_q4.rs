//! The 4-bit matmul micro-kernel (`KernelKind::MatmulQ4`'s contract, exact: the `q4` lm_head,
//! `out[t, r] = f32(Σ_g m[r, g]·Σ_{i∈g} q[r, i]·xq[t, i]) / xs[t] · ws[r]`): AVX-512 VNNI on
//! x86-64 when the CPU has it, else AVX2 (`avx2.rs`: `vpmaddubsw` then `vpmaddwd` by the group's
//! multiplier); on AArch64 NEON with or without the dot product (`neon.rs`); else a portable
//! version with the same results. It is the only version of the kernel
//! (there is no generated one): every target calls it by symbol.
//!
//! Weights: per row, `q` in −8..=7 in groups of `GROUP` (32), a multiplier `m` in 1..=`MAX_M` per
//! group and one f32 scale `ws` per row (`backends::cpu::kernels::matmul_q4::quantize_row`);
//! the activations are int8 per token with the quantizer's multiplier `xs` (`ActQuant`). Every
//! product and sum is an integer, so the order does not matter and each variant gives the same bits.
//!
//! Layout, for `kp = padded(k)` (K rounded up to `CHUNK` = 128; padding weights are 0):
//! - `w [n, kp / 2]`: per chunk of 128 weights, 64 bytes; byte j holds `q[j] + 8` in its low
//!   nibble and `q[64 + j] + 8` in its high nibble, so a nibble mask of one 64-byte load gives the
//!   weights in the order of one 64-byte load of activations.
//! - `m [n, kp / 32]`: the groups' multipliers, four bytes per chunk.
//! - `ws f32 [n]`, and `corr i32 [n] = 128·Σ_g m_g·Σ_{i∈g} q_i`.
//!
//! The unsigned operand of `vpdpbusd` is the activation plus 128 (`x ^ 0x80`), the signed one the
//! weight: one `vpdpbusd` of a 64-byte chunk half leaves in each 32-bit lane the sum of four
//! products `(x + 128)·q`, at most 4·255·8 = 8160 in magnitude, so it fits the lane's low 16 bits;
//! `vpdpwssd` with the group's multiplier in the low half of the lane (zero in the high half) adds
//! `m·lane` to the accumulator. Then `acc − corr = Σ_g m_g·Σ q·x`, exact in wrapping i32 because the
//! true value fits for K ≤ `MAX_K` (|m·q·x| ≤ 63·8·128).
//!
//! Loop order: row tiles of about `TILE_BYTES`; in each, tokens in groups of up to `TOKENS` (then
//! fewer), rows in blocks (four rows for one token, two for more), so one activation load serves the
//! block's rows and one decoded weight chunk the group's tokens.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "aarch64")]
mod neon;

/// Weights per group (one multiplier each).
pub const GROUP: usize = 32;
/// Weights per chunk (64 bytes of nibbles).
pub const CHUNK: usize = 128;
/// The largest multiplier (6 bits).
pub const MAX_M: u8 = 63;
/// The largest K: `63·8·128·K` must fit in i32.
pub const MAX_K: usize = 32_768;
/// Weight bytes per row tile.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const TILE_BYTES: usize = 256 * 1024;
/// Tokens per group.
#[cfg(target_arch = "x86_64")]
const TOKENS: usize = 4;
/// Blocks of rows ahead whose weights a block prefetches.
#[cfg(target_arch = "x86_64")]
const AHEAD: usize = 2;

/// K rounded up to whole chunks.
pub fn padded(k: usize) -> usize {
    k.div_ceil(CHUNK) * CHUNK
}

/// Bytes of one row's nibbles.
pub fn nibble_bytes(k: usize) -> usize {
    padded(k) / 2
}

/// Multipliers of one row.
pub fn multipliers(k: usize) -> usize {
    padded(k) / GROUP
}

/// The shapes and buffers of one call (rows `rows` of `n`, all `t` tokens).
pub(crate) struct Call {
    pub(crate) xq: *const i8,
    pub(crate) xs: *const f32,
    pub(crate) w: *const u8,
    pub(crate) m: *const u8,
    pub(crate) ws: *const f32,
    pub(crate) corr: *const i32,
    pub(crate) out: *mut f32,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) t: usize,
    pub(crate) rows: std::ops::Range<usize>,
}

impl Call {
    /// Writes `out[t, row]` from `Σ_g m·Σ (x + 128)·q`.
    ///
    /// # Safety
    /// `t` and `row` are within the call's buffers.
    unsafe fn store(&self, t: usize, row: usize, acc: i32) {
        // SAFETY: the caller's indices are within `xs` (T), `ws`/`corr` (n) and `out` (T × n).
        unsafe {
            let acc = acc.wrapping_sub(*self.corr.add(row));
            *self.out.add(t * self.n + row) = acc as f32 / *self.xs.add(t) * *self.ws.add(row);
        }
    }
}

/// Runs `call` (see the module doc).
///
/// # Safety
/// Every pointer is valid for the kernel's buffers at T tokens; `rows` is within `0..n`;
/// `0 < k ≤ MAX_K`.
pub(crate) unsafe fn run(call: &Call) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::allowed(super::Isa::Avx512) && avx512::available() {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { avx512::run(call) };
            return;
        }
        if super::allowed(super::Isa::Avx2) && avx2::available() {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { avx2::run(call) };
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
            // SAFETY: every AArch64 CPU has NEON; the buffers are the caller's.
            unsafe { neon::plain::run(call) };
            return;
        }
    }
    // SAFETY: the buffers are the caller's.
    unsafe { portable(call) }
}

/// The reference loops, one product at a time.
///
/// # Safety
/// As `run`.
unsafe fn portable(call: &Call) {
    let (nb, mb) = (nibble_bytes(call.k), multipliers(call.k));
    for t in 0..call.t {
        for row in call.rows.clone() {
            let mut acc = 0i32;
            for i in 0..call.k {
                let (c, j) = (i / CHUNK, i % CHUNK);
                // SAFETY: within the row's nibbles and multipliers and token t's activations.
                let (byte, m, x) = unsafe {
                    (
                        *call.w.add(row * nb + c * 64 + j % 64),
                        *call.m.add(row * mb + i / GROUP),
                        *call.xq.add(t * call.k + i),
                    )
                };
                let nibble = if j < 64 { byte & 15 } else { byte >> 4 };
                let q = i32::from(nibble) - 8;
                acc = acc.wrapping_add(i32::from(m) * q * (i32::from(x) + 128));
            }
            // SAFETY: token t and the row are within the call.
            unsafe { call.store(t, row, acc) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{AHEAD, CHUNK, Call, TILE_BYTES, TOKENS, multipliers, nibble_bytes};
    use std::arch::x86_64::*;

    /// Whether this CPU runs the AVX-512 kernel.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }

    /// Chunk `c` of a token's activations as the unsigned operand: the two 64-byte halves plus 128
    /// (bytes past K are zeros, whose weights are 0).
    ///
    /// # Safety
    /// The K bytes at `x` are readable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn acts(x: *const i8, c: usize, k: usize) -> [__m512i; 2] {
        let bias = _mm512_set1_epi8(-128);
        let half = |h: usize| {
            let at = c * CHUNK + 64 * h;
            let left = k.saturating_sub(at);
            // SAFETY: the lanes loaded are within the row.
            let v = unsafe {
                if left >= 64 {
                    _mm512_loadu_si512(x.add(at).cast())
                } else {
                    _mm512_maskz_loadu_epi8((1u64 << left) - 1, x.add(at.min(k)).cast())
                }
            };
            _mm512_xor_si512(v, bias)
        };
        [half(0), half(1)]
    }

    /// Chunk `c` of a row: its weights as two vectors of signed bytes, and the multipliers of its
    /// four groups as 16-bit values in the low half of the 32-bit lanes of each half's groups.
    ///
    /// # Safety
    /// Chunk `c` of the row at `w` (nibbles) and `m` (multipliers) is readable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn weights(w: *const u8, m: *const u8, c: usize) -> ([__m512i; 2], [__m512i; 2]) {
        let (low, eight) = (_mm512_set1_epi8(15), _mm512_set1_epi8(8));
        // SAFETY: 64 bytes of nibbles and 4 multipliers of chunk c.
        let (v, mult) = unsafe {
            (
                _mm512_loadu_si512(w.add(64 * c).cast()),
                (m.add(4 * c) as *const i32).read_unaligned(),
            )
        };
        let lo = _mm512_sub_epi8(_mm512_and_si512(v, low), eight);
        let hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16::<4>(v), low), eight);
        // Multiplier byte b of the chunk into the low byte of every 32-bit lane of the 128-bit
        // lanes that hold its group (two per group), zeros elsewhere.
        let all = _mm512_set1_epi32(mult);
        let pick = |a: i8, b: i8| {
            let z = -128i8; // vpshufb: a set top bit gives 0
            _mm512_set_epi8(
                z, z, z, b, z, z, z, b, z, z, z, b, z, z, z, b, z, z, z, b, z, z, z, b, z, z, z, b,
                z, z, z, b, z, z, z, a, z, z, z, a, z, z, z, a, z, z, z, a, z, z, z, a, z, z, z, a,
                z, z, z, a, z, z, z, a,
            )
        };
        let ms = [
            _mm512_shuffle_epi8(all, pick(0, 1)),
            _mm512_shuffle_epi8(all, pick(2, 3)),
        ];
        ([lo, hi], ms)
    }

    /// Rows `row0..row0 + R` for the `G` tokens from `t0`.
    ///
    /// # Safety
    /// As `super::run`; `t0 + G ≤ T`, `row0 + R ≤ n`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn block<const R: usize, const G: usize>(call: &Call, t0: usize, row0: usize) {
        let (k, nb, mb) = (call.k, nibble_bytes(call.k), multipliers(call.k));
        // SAFETY: rows row0..row0 + R and tokens t0..t0 + G are within the call.
        let (wr, mr): ([*const u8; R], [*const u8; R]) = unsafe {
            (
                std::array::from_fn(|r| call.w.add((row0 + r) * nb)),
                std::array::from_fn(|r| call.m.add((row0 + r) * mb)),
            )
        };
        let xs: [*const i8; G] = std::array::from_fn(|g| unsafe { call.xq.add((t0 + g) * k) });
        let mut acc = [[_mm512_setzero_si512(); G]; R];
        // The rows `AHEAD·R` on (within the call) are asked for line by line as these stream: the
        // hardware prefetcher alone leaves the loads waiting on memory.
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
                let w: [([__m512i; 2], [__m512i; 2]); R] =
                    std::array::from_fn(|r| weights(wr[r], mr[r], c));
                for g in 0..G {
                    let x = acts(xs[g], c, k);
                    for r in 0..R {
                        let (q, m) = &w[r];
                        for h in 0..2 {
                            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), x[h], q[h]);
                            acc[r][g] = _mm512_dpwssd_epi32(acc[r][g], dot, m[h]);
                        }
                    }
                }
            }
        }
        let dots: [[i32; G]; R] =
            std::array::from_fn(|r| std::array::from_fn(|g| _mm512_reduce_add_epi32(acc[r][g])));
        for (r, row_dots) in dots.iter().enumerate() {
            for (g, &dot) in row_dots.iter().enumerate() {
                // SAFETY: token t0 + g and row row0 + r are within the call.
                unsafe { call.store(t0 + g, row0 + r, dot) };
            }
        }
    }

    /// `G` tokens from `t0` over rows `rows`: blocks of `R` rows, then single rows.
    ///
    /// # Safety
    /// As `super::run`; `t0 + G ≤ T`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn group<const R: usize, const G: usize>(
        call: &Call,
        t0: usize,
        rows: std::ops::Range<usize>,
    ) {
        let mut row = rows.start;
        // SAFETY: every block of rows is within `rows`.
        unsafe {
            while row + R <= rows.end {
                block::<R, G>(call, t0, row);
                row += R;
            }
            while row < rows.end {
                block::<1, G>(call, t0, row);
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
        let tile = (TILE_BYTES / nibble_bytes(call.k).max(1)).max(1);
        let mut start = call.rows.start;
        while start < call.rows.end {
            let end = (start + tile).min(call.rows.end);
            let mut t = 0;
            // SAFETY: the caller's buffers; every group is within T.
            unsafe {
                while t < call.t {
                    match call.t - t {
                        1 => group::<4, 1>(call, t, start..end),
                        2 => group::<2, 2>(call, t, start..end),
                        3 => group::<2, 3>(call, t, start..end),
                        _ => group::<2, TOKENS>(call, t, start..end),
                    }
                    t += (call.t - t).min(TOKENS);
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

    /// Random rows in the layout, with their multipliers and correction; activations and scales.
    fn check(k: usize, n: usize, t: usize, extreme: bool, seed: u64) {
        let mut next = crate::native::test_support::xorshift(seed | 1);
        let (nb, mb) = (nibble_bytes(k), multipliers(k));
        let mut q = vec![0i32; n * padded(k)];
        let mut w = vec![0u8; n * nb];
        let mut m = vec![0u8; n * mb];
        let mut corr = vec![0i32; n];
        for row in 0..n {
            for g in 0..mb {
                m[row * mb + g] = if extreme {
                    MAX_M
                } else {
                    1 + (next() % 63) as u8
                };
            }
            for i in 0..padded(k) {
                let v = if i >= k {
                    0
                } else if extreme {
                    if row % 2 == 0 { -8 } else { 7 }
                } else {
                    (next() % 16) as i32 - 8
                };
                q[row * padded(k) + i] = v;
                let (c, j) = (i / CHUNK, i % CHUNK);
                let byte = &mut w[row * nb + c * 64 + j % 64];
                let nibble = (v + 8) as u8;
                *byte |= if j < 64 { nibble } else { nibble << 4 };
                corr[row] = corr[row].wrapping_add(128 * i32::from(m[row * mb + i / GROUP]) * v);
            }
        }
        let xq: Vec<i8> = (0..t * k)
            .map(|_| if extreme { -128 } else { next() as u8 as i8 })
            .collect();
        let xs: Vec<f32> = (0..t).map(|i| 127.0 / (1.0 + i as f32)).collect();
        let ws: Vec<f32> = (0..n).map(|r| 0.001 * (1 + r) as f32).collect();
        // The expected values from the integers (i64: no wrapping).
        let mut want = vec![0f32; t * n];
        for tt in 0..t {
            for row in 0..n {
                let mut s = 0i64;
                for i in 0..k {
                    let mm = i64::from(m[row * mb + i / GROUP]);
                    s += mm * i64::from(q[row * padded(k) + i]) * i64::from(xq[tt * k + i]);
                }
                let s = i32::try_from(s).expect("fits i32");
                want[tt * n + row] = s as f32 / xs[tt] * ws[row];
            }
        }
        let go = |variant: Variant, rows: std::ops::Range<usize>| {
            let mut out = vec![0f32; t * n];
            let call = Call {
                xq: xq.as_ptr(),
                xs: xs.as_ptr(),
                w: w.as_ptr(),
                m: m.as_ptr(),
                ws: ws.as_ptr(),
                corr: corr.as_ptr(),
                out: out.as_mut_ptr(),
                k,
                n,
                t,
                rows,
            };
            // SAFETY: the buffers have the call's shapes.
            unsafe { variant.run(&call) };
            out
        };
        let bits = crate::native::test_support::bits;
        for variant in variants() {
            let what = format!("{variant:?} k {k} n {n} t {t}");
            assert_eq!(bits(&go(variant, 0..n)), bits(&want), "{what}");
            let mut split = go(variant, 0..n / 3);
            let rest = go(variant, n / 3..n);
            for i in 0..t * n {
                if i % n >= n / 3 {
                    split[i] = rest[i];
                }
            }
            assert_eq!(bits(&split), bits(&want), "split, {what}");
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
        #[cfg(target_arch = "aarch64")]
        Dotprod,
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
                    Variant::Neon => neon::plain::run(call),
                    #[cfg(target_arch = "aarch64")]
                    Variant::Dotprod => neon::dotprod::run(call),
                    Variant::Best => run(call),
                }
            }
        }
    }

    /// The versions this CPU runs.
    fn variants() -> Vec<Variant> {
        #[allow(unused_mut)]
        let mut v = vec![Variant::Portable, Variant::Best];
        #[cfg(target_arch = "x86_64")]
        {
            if avx2::available() {
                v.push(Variant::Avx2);
            }
            if avx512::available() {
                v.push(Variant::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            v.push(Variant::Neon);
            if neon::dotprod_available() {
                v.push(Variant::Dotprod);
            }
        }
        v
    }

    #[test]
    fn both_variants_give_the_exact_integer_results() {
        for (k, n, t) in [
            (128, 4, 1),
            (2560, 9, 1),
            (1, 3, 1),
            (33, 5, 2),
            (200, 7, 3),
            (64, 6, 4),
            (130, 11, 5),
            (1000, 13, 9),
            (257, 1, 17),
        ] {
            check(k, n, t, false, (k * 31 + n * 7 + t) as u64);
        }
    }

    #[test]
    fn the_largest_products_at_the_largest_k_do_not_wrap() {
        check(MAX_K, 2, 1, true, 3);
    }
}
