//! The ternary matmul micro-kernel (`KernelKind::TernaryMatmul`'s contract, exact): on x86-64 AMX
//! (several tokens), AVX-512 VNNI, AVX-VNNI or AVX2 (`avx2`), on AArch64 NEON with or without the
//! dot product (`neon`), whichever the CPU has first; else a portable version. Every variant gives
//! the same results bit for bit.
//!
//! Weights are packed as `backends::kernel::layout` says (64-element blocks of 16 bytes: element j
//! of a block in byte j % 16 at bits 6 − 2·(j / 16), code t + 1). Per block the 16 code bytes are
//! broadcast to the four 128-bit lanes of a 512-bit register, lane q shifted right by 6 − 2q (as
//! 16-bit lanes: the bits that cross into a byte are masked off) and masked with 3: lane q then
//! holds the codes of elements 16q..16q + 15, in the order of one 64-byte load of activations, and
//! one `vpdpbusd` (u8 codes × i8 activations) adds the block's 64 products into 16 i32 lanes.
//! `acc = Σ code·x − Σ x` is exact in i32 (the true value fits for K ≤ `MAX_K`, and the wrapping
//! intermediate sums cannot change it); then `y = f32(acc) / xs[t] · ws[0]` (+ `residual[t, n]`),
//! in that order, as the reference.
//!
//! Loop order: row tiles of about `TILE_BYTES` of weights; in each tile, tokens in groups of
//! `GROUP` (then one at a time), every row of the tile for each group in blocks of `ROWS` rows, so
//! one decoded block serves `GROUP` tokens, one activation load `ROWS` rows, the `ROWS` × `GROUP`
//! accumulators are independent chains, and the tile stays in cache across groups. One token
//! (decode) runs four accumulator chains and prefetches the weights two rows ahead. A K that is not
//! a multiple of 64 runs its last block on a zero-padded copy of each token's last activations (the
//! padding codes meet zeros).

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(all(test, target_arch = "x86_64"))]
mod base3;
#[cfg(target_arch = "aarch64")]
mod neon;

/// The fewest tokens a call runs on AMX (`amx`) when the CPU has it: below, AMX's fixed
/// cost per block of 16 rows loses to the AVX-512 kernel.
#[cfg(target_arch = "x86_64")]
const AMX_MIN_TOKENS: usize = 4;
/// Weight bytes per row tile.
const TILE_BYTES: usize = 256 * 1024;
/// Tokens per group.
#[cfg(target_arch = "x86_64")]
const GROUP: usize = 4;
/// Rows per block of a group (one activation load serves this many rows).
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 2;
/// Elements per packed block.
const BLOCK: usize = 64;
/// The largest K whose codes the SIMD kernels take masked in place (code·2^s, one 32-bit lane per
/// scale): at most K/16 products of 128·128 per lane must fit i32.
#[cfg(target_arch = "x86_64")]
const SCALED_MAX_K: usize = (1 << 21) - 1;
/// Rows ahead whose weights one token's loop prefetches.
#[cfg(target_arch = "x86_64")]
const PREFETCH_ROWS: usize = 2;

/// The shapes and buffers of one call (rows `rows` of `n`, all `t` tokens).
pub(crate) struct Call {
    pub(crate) xq: *const i8,
    pub(crate) xs: *const f32,
    pub(crate) w: *const u8,
    pub(crate) ws: f32,
    pub(crate) residual: *const f32,
    pub(crate) out: *mut f32,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) t: usize,
    pub(crate) rows: std::ops::Range<usize>,
}

impl Call {
    fn row_bytes(&self) -> usize {
        self.k.div_ceil(BLOCK) * BLOCK / 4
    }

    /// Writes `out[t, row]` from the exact integer `acc`.
    ///
    /// # Safety
    /// `t` and `row` are within the call's buffers.
    unsafe fn store(&self, t: usize, row: usize, acc: i32) {
        // SAFETY: the caller's indices are within `xs` (T) and `out`/`residual` (T × n).
        unsafe {
            let mut y = acc as f32 / *self.xs.add(t) * self.ws;
            if !self.residual.is_null() {
                y += *self.residual.add(t * self.n + row);
            }
            *self.out.add(t * self.n + row) = y;
        }
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
/// Every pointer is valid for the kernel's buffers at T tokens (the `KernelKind::TernaryMatmul`
/// contract); `rows` is within `0..n`; `residual` is null or a `[T, n]` buffer.
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
        if super::allowed(super::Isa::AvxVnni) && avx2::vnni_available() && call.k <= SCALED_MAX_K {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { avx2::avxvnni::run(call) };
            return;
        }
        if super::allowed(super::Isa::Avx2) && avx2::available() {
            // SAFETY: the CPU has the features; the buffers are the caller's.
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
            // SAFETY: every AArch64 CPU has NEON; the buffers are the caller's.
            unsafe { neon::plain::run(call) };
            return;
        }
    }
    // SAFETY: the buffers are the caller's.
    unsafe { portable(call) }
}

/// The code of element `j` of a packed row (0, 1 or 2).
///
/// # Safety
/// `j` is below the padded K of the row at `row`.
unsafe fn code(row: *const u8, j: usize) -> i32 {
    let (block, e) = (j / BLOCK, j % BLOCK);
    // SAFETY: byte e % 16 of block `block` is within the row.
    let byte = unsafe { *row.add(block * 16 + e % 16) };
    i32::from((byte >> (6 - 2 * (e / 16))) & 3)
}

/// The same results without SIMD.
///
/// # Safety
/// As `run`.
unsafe fn portable(call: &Call) {
    let row_bytes = call.row_bytes();
    for row in call.rows.clone() {
        // SAFETY: row `row` of the packed weights has `row_bytes` bytes.
        let wr = unsafe { call.w.add(row * row_bytes) };
        for t in 0..call.t {
            let mut acc = 0i32;
            for j in 0..call.k {
                // SAFETY: j < K and row t of `xq` has K bytes.
                let (c, x) = unsafe { (code(wr, j), i32::from(*call.xq.add(t * call.k + j))) };
                acc = acc.wrapping_add(c.wrapping_mul(x));
            }
            // SAFETY: t < T and row < n.
            unsafe { call.store(t, row, acc.wrapping_sub(call.xsum(t))) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK, Call, GROUP, PREFETCH_ROWS, ROWS, TILE_BYTES};
    use crate::native::padded_tail;
    use std::arch::x86_64::*;

    /// Whether this CPU runs the AVX-512 VNNI kernel.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }

    /// Per 16-bit lane of a 512-bit register, the right shift of its 128-bit lane q: 6 − 2q.
    #[target_feature(enable = "avx512f,avx512bw")]
    fn shifts() -> __m512i {
        // Arguments from the top 64-bit element down: lane 3 (0), lane 2 (2), lane 1 (4), lane 0 (6).
        let s = |v: i64| v * 0x0001_0001_0001_0001;
        _mm512_set_epi64(s(0), s(0), s(2), s(2), s(4), s(4), s(6), s(6))
    }

    /// The 64 codes of block `b` of the row at `wr`, in activation order (see the module doc).
    ///
    /// # Safety
    /// Block `b` is within the row.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn codes(wr: *const u8, b: usize, sh: __m512i, three: __m512i) -> __m512i {
        // SAFETY: 16 bytes of block `b`.
        let c = unsafe { _mm_loadu_si128(wr.add(b * 16).cast()) };
        _mm512_and_si512(_mm512_srlv_epi16(_mm512_broadcast_i32x4(c), sh), three)
    }

    /// The 64 codes of block `b` masked in place (`S`: lane q holds code·2^(6 − 2q), see
    /// `unscale`) or shifted down (see `codes`).
    ///
    /// # Safety
    /// Block `b` is within the row.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn codes_as<const S: bool>(
        wr: *const u8,
        b: usize,
        sh: __m512i,
        three: __m512i,
    ) -> __m512i {
        if S {
            // SAFETY: 16 bytes of block `b`.
            let c = unsafe { _mm_loadu_si128(wr.add(b * 16).cast()) };
            _mm512_and_si512(_mm512_broadcast_i32x4(c), masks())
        } else {
            // SAFETY: as the caller's.
            unsafe { codes(wr, b, sh, three) }
        }
    }

    /// Per byte of a 512-bit register, the bits of its 128-bit lane q's code: 3 << (6 − 2q).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn masks() -> __m512i {
        let m = |v: u64| (v * 0x0101_0101_0101_0101) as i64;
        _mm512_set_epi64(
            m(0x03),
            m(0x03),
            m(0x0C),
            m(0x0C),
            m(0x30),
            m(0x30),
            m(0xC0),
            m(0xC0),
        )
    }

    /// The sums of scaled codes (`S`) shifted down per 128-bit lane by its scale: exact, because no
    /// 32-bit lane wraps for K ≤ `SCALED_MAX_K` (at most K/16 products of 128·128 per lane) and each
    /// lane's sum is a multiple of its scale. Unscaled sums unchanged.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn unscale<const S: bool>(v: __m512i) -> __m512i {
        if S {
            _mm512_srav_epi32(
                v,
                _mm512_set_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6),
            )
        } else {
            v
        }
    }

    /// 64 activations of block `b` of token row `x` (the last block from `tail`, when K has one).
    ///
    /// # Safety
    /// Block `b` is a whole block of the row, or the tail block with `tail` holding it.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn acts(x: *const i8, b: usize, full: usize, tail: &[i8; BLOCK]) -> __m512i {
        // SAFETY: a whole block of K bytes, or the padded copy of the last one.
        unsafe {
            if b < full {
                _mm512_loadu_si512(x.add(b * BLOCK).cast())
            } else {
                _mm512_loadu_si512(tail.as_ptr().cast())
            }
        }
    }

    /// `G` tokens from `t0` over rows `rows`: blocks of `ROWS` rows, then single rows.
    ///
    /// # Safety
    /// As `super::run`; `t0 + G ≤ T`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn group<const G: usize, const S: bool>(
        call: &Call,
        t0: usize,
        rows: std::ops::Range<usize>,
    ) {
        // SAFETY: tokens t0..t0 + G are below T; their rows have K bytes.
        let xs: [*const i8; G] = std::array::from_fn(|g| unsafe { call.xq.add((t0 + g) * call.k) });
        let tails: [[i8; BLOCK]; G] =
            std::array::from_fn(|g| unsafe { padded_tail(xs[g], call.k) });
        let sums: [i32; G] = std::array::from_fn(|g| unsafe { call.xsum(t0 + g) });
        let mut row = rows.start;
        // SAFETY: every block of rows is within `rows`.
        unsafe {
            while row + ROWS <= rows.end {
                block::<ROWS, G, S>(call, t0, row, &xs, &tails, &sums);
                row += ROWS;
            }
            while row < rows.end {
                block::<1, G, S>(call, t0, row, &xs, &tails, &sums);
                row += 1;
            }
        }
    }

    /// Rows `row0..row0 + R` for the `G` tokens from `t0` (their rows `xs`, padded last blocks
    /// `tails` and activation sums `sums`): one decoded block per row serves `G` tokens, one
    /// activation load `R` rows, and the R × G accumulators are independent chains.
    ///
    /// # Safety
    /// As `super::run`; `t0 + G ≤ T`, `row0 + R ≤ n`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn block<const R: usize, const G: usize, const S: bool>(
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
        let (sh, three) = (shifts(), _mm512_set1_epi8(3));
        // SAFETY: rows row0..row0 + R of the packed weights.
        let wr: [*const u8; R] =
            std::array::from_fn(|r| unsafe { call.w.add((row0 + r) * row_bytes) });
        let mut acc = [[_mm512_setzero_si512(); G]; R];
        for b in 0..blocks {
            // SAFETY: block b of each row; each token's block b.
            unsafe {
                let c: [__m512i; R] = std::array::from_fn(|r| codes_as::<S>(wr[r], b, sh, three));
                for g in 0..G {
                    let x = acts(xs[g], b, full, &tails[g]);
                    for r in 0..R {
                        acc[r][g] = _mm512_dpbusd_epi32(acc[r][g], c[r], x);
                    }
                }
            }
        }
        // Reduced in a loop without calls, so that the accumulators stay in registers.
        let dots: [[i32; G]; R] = std::array::from_fn(|r| {
            std::array::from_fn(|g| _mm512_reduce_add_epi32(unscale::<S>(acc[r][g])))
        });
        for (r, row_dots) in dots.iter().enumerate() {
            for (g, dot) in row_dots.iter().enumerate() {
                // SAFETY: token t0 + g and row row0 + r are within the call.
                unsafe { call.store(t0 + g, row0 + r, dot.wrapping_sub(sums[g])) };
            }
        }
    }

    /// One token (`t`) over rows `rows`, with four accumulator chains (blocks modulo 4), each row
    /// prefetching the row `PREFETCH_ROWS` on.
    ///
    /// # Safety
    /// As `super::run`; `t < T`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn single<const S: bool>(call: &Call, t: usize, rows: std::ops::Range<usize>) {
        let blocks = call.k.div_ceil(BLOCK);
        let full = call.k / BLOCK;
        let row_bytes = call.row_bytes();
        let (sh, three) = (shifts(), _mm512_set1_epi8(3));
        // SAFETY: token t's row has K bytes.
        let x = unsafe { call.xq.add(t * call.k) };
        let tail = unsafe { padded_tail(x, call.k) };
        let sum = unsafe { call.xsum(t) };
        let last_row = call.rows.end;
        for row in rows {
            // SAFETY: row `row` of the packed weights.
            let wr = unsafe { call.w.add(row * row_bytes) };
            if row + PREFETCH_ROWS < last_row {
                // SAFETY: a prefetch of the call's own rows (no access happens).
                let ahead = unsafe { wr.add(PREFETCH_ROWS * row_bytes) };
                let mut line = 0;
                while line < row_bytes {
                    // SAFETY: within the row `PREFETCH_ROWS` on.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.add(line).cast()) };
                    line += 64;
                }
            }
            let mut a = [_mm512_setzero_si512(); 4];
            let mut b = 0;
            // SAFETY: blocks b..b + 4 of the row and of the token's activations.
            unsafe {
                while b + 4 <= blocks {
                    for (i, acc) in a.iter_mut().enumerate() {
                        *acc = _mm512_dpbusd_epi32(
                            *acc,
                            codes_as::<S>(wr, b + i, sh, three),
                            acts(x, b + i, full, &tail),
                        );
                    }
                    b += 4;
                }
                while b < blocks {
                    a[0] = _mm512_dpbusd_epi32(
                        a[0],
                        codes_as::<S>(wr, b, sh, three),
                        acts(x, b, full, &tail),
                    );
                    b += 1;
                }
            }
            let both = _mm512_add_epi32(_mm512_add_epi32(a[0], a[1]), _mm512_add_epi32(a[2], a[3]));
            let dot = _mm512_reduce_add_epi32(unscale::<S>(both));
            // SAFETY: token t and row `row` are within the call.
            unsafe { call.store(t, row, dot.wrapping_sub(sum)) };
        }
    }

    /// Runs `call` (see the module doc).
    ///
    /// # Safety
    /// As `super::run`, on a CPU with the features (`available`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn run(call: &Call) {
        // SAFETY: the caller's.
        unsafe { run_as(call, call.k <= super::SCALED_MAX_K) }
    }

    /// `run` with the codes masked in place (`scaled`, for K ≤ `SCALED_MAX_K`) or shifted down.
    ///
    /// # Safety
    /// As `run`; `scaled` only for K ≤ `SCALED_MAX_K`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn run_as(call: &Call, scaled: bool) {
        let tile = (TILE_BYTES / call.row_bytes().max(1)).max(1);
        let mut start = call.rows.start;
        while start < call.rows.end {
            let end = (start + tile).min(call.rows.end);
            let mut t = 0;
            // SAFETY: the caller's buffers; every token group is within T.
            unsafe {
                while t + GROUP <= call.t {
                    if scaled {
                        group::<GROUP, true>(call, t, start..end);
                    } else {
                        group::<GROUP, false>(call, t, start..end);
                    }
                    t += GROUP;
                }
                while t < call.t {
                    if scaled {
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

    /// A random packed row set, activations and scales; runs both versions and compares bit for bit.
    fn check(k: usize, n: usize, t: usize, residual: bool, seed: u64) {
        // SAFETY: `run` takes the caller's buffers.
        check_variant(k, n, t, residual, seed, &|call| unsafe { run(call) });
    }

    /// As `check`, with `variant` in place of `run`.
    fn check_variant(
        k: usize,
        n: usize,
        t: usize,
        residual: bool,
        seed: u64,
        variant: &impl Fn(&Call),
    ) {
        let mut next = crate::native::test_support::xorshift(seed);
        let row_bytes = k.div_ceil(BLOCK) * BLOCK / 4;
        let mut w: Vec<u8> = (0..n * row_bytes).map(|_| 0).collect();
        for row in 0..n {
            for j in 0..k.div_ceil(BLOCK) * BLOCK {
                // Codes 0..=2 within K, 1 (zero weight) in the padding.
                let c = if j < k { (next() % 3) as u8 } else { 1 };
                let (block, e) = (j / BLOCK, j % BLOCK);
                w[row * row_bytes + block * 16 + e % 16] |= c << (6 - 2 * (e / 16));
            }
        }
        let xq: Vec<i8> = (0..t * k).map(|_| (next() % 255) as i8).collect();
        let xs: Vec<f32> = (0..t).map(|i| 1.0 + i as f32 * 0.37).collect();
        let res: Vec<f32> = (0..t * n).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect();
        let run_with = |simd: bool| {
            let mut out = vec![0f32; t * n];
            let call = Call {
                xq: xq.as_ptr(),
                xs: xs.as_ptr(),
                w: w.as_ptr(),
                ws: 0.731,
                residual: if residual {
                    res.as_ptr()
                } else {
                    std::ptr::null()
                },
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
            "k {k} n {n} t {t} residual {residual}"
        );
        // Row 0 is outside the call: untouched.
        assert!((0..t).all(|i| a[i * n] == 0.0));
    }

    #[test]
    fn the_simd_kernel_equals_the_portable_one_at_awkward_shapes() {
        for (k, n, t) in [
            (64, 3, 1),
            (128, 5, 4),
            (100, 7, 5),
            (1, 2, 3),
            (2560, 9, 9),
            (6912, 3, 2),
            (200, 300, 6),
        ] {
            check(k, n, t, false, (k * 31 + n * 7 + t) as u64);
            check(k, n, t, true, (k * 17 + n * 3 + t) as u64 + 1);
        }
    }

    /// The shapes every SIMD variant is checked at: K not a multiple of 64 or under one block, rows
    /// off the blocks and past a row tile, T = 1…17 and past the token groups.
    fn shapes() -> Vec<(usize, usize, usize)> {
        let mut shapes = vec![
            (64, 3, 1),
            (100, 7, 5),
            (1, 2, 3),
            (6912, 300, 4),
            (130, 65, 16),
        ];
        shapes.extend((1..=17).map(|t| (2560, 37, t)));
        shapes.extend([(200, 300, 6), (2560, 100, 40), (320, 129, 33), (6912, 3, 2)]);
        shapes
    }

    /// `variant` against the portable kernel at every shape of `shapes`, with and without residual.
    fn check_all(variant: impl Fn(&Call)) {
        for (k, n, t) in shapes() {
            for residual in [false, true] {
                let seed = (k * 13 + n * 5 + t) as u64 + u64::from(residual);
                check_variant(k, n, t, residual, seed, &variant);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_kernel_with_codes_shifted_down_equals_the_portable_one() {
        if avx512::available() {
            // SAFETY: the CPU has the features; the buffers are `check_variant`'s.
            check_all(|call| unsafe { avx512::run_as(call, false) });
        } else {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_kernels_equal_the_portable_one_at_awkward_shapes() {
        if avx2::available() {
            // SAFETY: the CPU has AVX2; the buffers are `check_variant`'s.
            check_all(|call| unsafe { avx2::plain::run(call) });
        } else {
            eprintln!("skipped: this CPU has no AVX2");
        }
        if avx2::vnni_available() {
            // SAFETY: the CPU has AVX-VNNI; the buffers are `check_variant`'s.
            check_all(|call| unsafe { avx2::avxvnni::run(call) });
        } else {
            eprintln!("skipped: this CPU has no AVX-VNNI");
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn the_neon_kernels_equal_the_portable_one_at_awkward_shapes() {
        // SAFETY: every AArch64 CPU has NEON; the buffers are `check_variant`'s.
        check_all(|call| unsafe { neon::plain::run(call) });
        if neon::dotprod_available() {
            // SAFETY: the CPU has the dot product; the buffers are `check_variant`'s.
            check_all(|call| unsafe { neon::dotprod::run(call) });
        } else {
            eprintln!("skipped: this CPU has no dot product instructions");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_amx_kernel_equals_the_portable_one_at_awkward_shapes() {
        if !crate::native::tiles::available() {
            eprintln!("skipped: this CPU or OS does not give AMX to this process");
            return;
        }
        // SAFETY: the process may use AMX (checked); the buffers are `check_variant`'s.
        check_all(|call| unsafe { crate::native::tiles::run(call) });
    }
}
