//! The attention micro-kernel (`KernelKind::Attention`'s CPU contract: bit-identical to the
//! interpreter's `nn.attention`): AVX-512 on x86-64 when the CPU has it, else AVX2 with FMA
//! (`avx2.rs`, the same order of operations on 256-bit vectors), else a portable version with the
//! same results. The caches are read through two strides (`Call`): the JIT's are
//! head-major (`[kv_heads, C, d]`, each head's rows contiguous, which the hardware prefetcher
//! follows); the tests also run the IR's row-major layout (`[C, kv_heads·d]`).
//!
//! Row r is query head `h = r mod heads` of token `t = r / heads`, reading KV head
//! `g = h / (heads / kv_heads)` of cache rows `0..L`, `L = pos + t + 1`. Every value is the
//! reference's, operation by operation:
//! 1. `s_j = (Σ_i q_i·k_ji)·scale`, the dot an f64 sum in index order from −0.0. A product of two
//!    f32 is exact in f64, so a fused multiply-add rounds exactly where the reference's add does:
//!    the SIMD kernel puts 16 keys in the lanes of two f64 vectors (the 16 keys' `k_ji` for one `i`:
//!    8 columns of 16 rows are loaded and transposed in registers, a partial block gathers) and
//!    lets each lane run its own chain in index order.
//! 2. `m = max_j s_j` folded from −∞ with `f64::max`; `e_j = exp(s_j − m)` (`bitnet_numerics::exp`,
//!    the interpreter's; the SIMD kernels run it on 4 lanes, `super::exp`); `sum = Σ_j e_j` in
//!    order from −0.0 (the batch's heads' sums side by side); `w_j = e_j / sum`.
//! 3. `out_c = Σ_j w_j·v_jc`, an f64 sum in order of j from −0.0 (a multiply, then an add: the
//!    product is not exact, so it is never fused), rounded to f32 once. The columns are
//!    independent, so the SIMD kernel runs eight per vector, 32 at once for every head of the
//!    batch while j advances: each value row is loaded and widened to f64 once for all the heads.
//!
//! The query heads of one KV head (consecutive rows of one token) are taken together, up to
//! `BATCH_HEADS`: one read of the keys serves them all.
//!
//! Scratch: the kernel allocates nothing. The scores of a batch live in `SCRATCH_SCORES` f64 on
//! the stack (128 KiB; `cap = SCRATCH_SCORES / heads in the batch` per head, and a batch takes
//! fewer heads when that keeps a context up to `SCRATCH_SCORES` in one piece), overwritten in place
//! by `e_j` and then `w_j`. When `L` exceeds `cap`, the kernel recomputes instead (same values:
//! every step is deterministic): pass 1 computes the scores a tile of `cap` keys at a time for the
//! max, pass 2 again for the sum, pass 3 again for the weights, adding each tile into the outputs.
//! The q rows (as f64) and the output sums (`MAX_HEAD_DIM` each per head) are on the stack too: the
//! frame is about 150 KiB, which the executor's workers (2 MiB stacks) and a main thread have.
//!
//! Memory: the weighted sums take `MIX_KEYS` value rows at a time for every head of the batch, so
//! a batch reads its KV head's keys and values from memory once; each block of keys or values
//! asks for the next one ahead of use (`_mm_prefetch`).
//!
//! `out` may alias `q`: a batch copies its q rows before it writes its out rows (the same places).
//! The caches are only read.

use bitnet_numerics::exp;
use std::mem::MaybeUninit;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
mod avx2;
/// The 8 × 8 f32 transpose in AVX registers (the training step's transposes take it too).
#[cfg(target_arch = "x86_64")]
pub use avx2::transpose8;

/// f64 scores kept on the stack per batch (128 KiB).
pub const SCRATCH_SCORES: usize = 16384;
/// The largest head size the micro-kernel takes (its q copy and output sums are on the stack);
/// the generated kernel takes the others.
pub const MAX_HEAD_DIM: usize = 256;
/// Query heads that share one pass over their KV head's keys.
const BATCH_HEADS: usize = 4;
/// Value rows per step of the weighted sums (every head of a batch takes them while they are in
/// the L1 cache).
const MIX_KEYS: usize = 32;

/// The shapes and buffers of one call (rows `rows` of `T·heads`).
pub(crate) struct Call {
    pub(crate) q: *const f32,
    pub(crate) kc: *const f32,
    pub(crate) vc: *const f32,
    pub(crate) out: *mut f32,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    /// Head size, at most `MAX_HEAD_DIM`.
    pub(crate) d: usize,
    /// f32 between two cache rows of one KV head: `d` in the JIT's head-major caches
    /// (`[kv_heads, C, d]`), `kv_heads·d` in the IR's row-major layout.
    pub(crate) row_stride: usize,
    /// f32 between two KV heads' row 0: `C·d` head-major, `d` row-major.
    pub(crate) head_stride: usize,
    pub(crate) scale: f64,
    /// Position of token 0.
    pub(crate) pos: usize,
    pub(crate) rows: Range<usize>,
}

/// Whether the micro-kernel takes these shapes (else the caller keeps the generated kernel).
pub fn supports(heads: u64, kv_heads: u64, head_dim: u64) -> bool {
    kv_heads > 0
        && heads.is_multiple_of(kv_heads)
        && head_dim > 0
        && head_dim <= MAX_HEAD_DIM as u64
        // The gather's offsets (16 rows of at most kv_heads·d f32) are i32.
        && kv_heads
            .checked_mul(head_dim)
            .and_then(|w| w.checked_mul(4 * 16))
            .is_some_and(|b| b <= i32::MAX as u64)
}

/// The query heads of one KV head and one token that run together.
#[derive(Clone, Copy)]
struct Batch {
    /// The token.
    t: usize,
    /// The KV head.
    g: usize,
    /// The first query head.
    h0: usize,
    /// Query heads in the batch (1..=BATCH_HEADS).
    n: usize,
}

/// The primitives whose order of operations makes the results: scores of a run of keys, and the
/// weighted sum of a run of value rows.
trait Prims {
    /// Scores of keys `keys` for the `n` query heads of `qs` (f64, `d` each) into
    /// `scores[hh·cap + j − keys.start]`.
    ///
    /// # Safety
    /// `k` is key row 0 of the batch's KV head (rows `kvw` f32 apart) and rows `keys` exist;
    /// `scores` holds `n·cap` values, `cap ≥ keys.len()`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores(
        qs: &[f64],
        n: usize,
        d: usize,
        k: *const f32,
        kvw: usize,
        keys: Range<usize>,
        scale: f64,
        scores: *mut f64,
        cap: usize,
    );

    /// For each head `hh` of the batch (`w.len()` of them, `d = acc.len() / w.len()` columns each):
    /// `acc[hh·d + c] += w[hh][j]·v[j][c]` for the value rows `keys` in order (`w[hh][0]` is row
    /// `keys.start`).
    ///
    /// # Safety
    /// `v` is value row 0 of the batch's KV head; rows `keys` exist with `d` values of the head;
    /// each `w[hh]` has `keys.len()` values.
    unsafe fn accumulate(
        w: &[&[f64]],
        v: *const f32,
        kvw: usize,
        keys: Range<usize>,
        acc: &mut [f64],
    );

    /// Asks for the first `d` values of rows `rows` (`kvw` apart from `base`) to be brought into
    /// the cache; a hint that reads nothing (the portable version does nothing).
    fn prefetch(_base: *const f32, _kvw: usize, _d: usize, _rows: Range<usize>) {}

    /// `w_j = exp(w_j − m)` for every `j`, each `bitnet_numerics::exp`'s bits (the SIMD versions
    /// run its operations on vectors, `super::exp`).
    fn exp_shifted(w: &mut [f64], m: f64) {
        for e in w.iter_mut() {
            *e = exp(*e - m);
        }
    }
}

/// Runs `call` (see the module doc).
///
/// # Safety
/// The buffers are an `Attention` launch's at T tokens with `pos + T ≤ C`; `rows` is within
/// `0..T·heads`; `supports(heads, kv_heads, d)`.
pub(crate) unsafe fn run(call: &Call) {
    #[cfg(target_arch = "x86_64")]
    {
        if super::allowed(super::Isa::Avx512) && avx512::available() {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { drive::<avx512::Simd>(call) };
            return;
        }
        if super::allowed(super::Isa::Avx2) && avx2::available() {
            // SAFETY: the CPU has the features; the buffers are the caller's.
            unsafe { drive::<avx2::Simd>(call) };
            return;
        }
    }
    // SAFETY: the buffers are the caller's.
    unsafe { drive::<Portable>(call) }
}

/// Runs `call` with the primitives `P`.
///
/// # Safety
/// As `run`.
unsafe fn drive<P: Prims>(call: &Call) {
    if call.d == 0 || call.d > MAX_HEAD_DIM || call.kv_heads == 0 || call.heads < call.kv_heads {
        return;
    }
    let group = call.heads / call.kv_heads;
    let mut scratch = [const { MaybeUninit::<f64>::uninit() }; SCRATCH_SCORES];
    let mut r = call.rows.start;
    while r < call.rows.end {
        let (t, h0) = (r / call.heads, r % call.heads);
        let g = h0 / group;
        // The rest of this KV head's query heads within the call's rows.
        let same_group = (g + 1) * group - h0;
        // Fewer heads per batch when that keeps all scores on the stack (no recomputing).
        let keys = call.pos + t + 1;
        let fit = if keys <= SCRATCH_SCORES {
            SCRATCH_SCORES / keys
        } else {
            BATCH_HEADS
        };
        let n = same_group.min(call.rows.end - r).min(BATCH_HEADS).min(fit);
        // SAFETY: as `run`; the scratch has SCRATCH_SCORES values.
        unsafe { batch::<P>(call, Batch { t, g, h0, n }, scratch.as_mut_ptr().cast()) };
        r += n;
    }
}

/// One batch (see the module doc).
///
/// # Safety
/// As `run`; `scratch` holds `SCRATCH_SCORES` f64.
unsafe fn batch<P: Prims>(call: &Call, b: Batch, scratch: *mut f64) {
    let d = call.d;
    let kvw = call.row_stride;
    let keys = call.pos + b.t + 1;
    let mut qs = [0f64; BATCH_HEADS * MAX_HEAD_DIM];
    let mut acc = [-0.0f64; BATCH_HEADS * MAX_HEAD_DIM];
    for hh in 0..b.n {
        let row = b.t * call.heads + b.h0 + hh;
        for (i, q) in qs[hh * d..(hh + 1) * d].iter_mut().enumerate() {
            // SAFETY: q row `row` has d values.
            *q = f64::from(unsafe { *call.q.add(row * d + i) });
        }
    }
    let qs = &qs[..b.n * d];
    // SAFETY: head g's rows 0..keys exist (pos + T ≤ C).
    let (k, v) = unsafe {
        (
            call.kc.add(b.g * call.head_stride),
            call.vc.add(b.g * call.head_stride),
        )
    };
    let cap = SCRATCH_SCORES / b.n;
    let tiles = || (0..keys).step_by(cap).map(move |j| j..(j + cap).min(keys));
    // SAFETY: tile `tile` holds at most `cap` keys, so its scores fit head hh's part of the
    // scratch, `scratch[hh·cap..][..tile.len()]`; its rows exist (pos + T ≤ C).
    let scores = |tile: Range<usize>| unsafe {
        P::scores(qs, b.n, d, k, kvw, tile, call.scale, scratch, cap);
    };
    // SAFETY: head hh < n's part of the scratch, `len ≤ cap` values (a tile's).
    let part = |hh: usize, len: usize| unsafe {
        std::slice::from_raw_parts_mut(scratch.add(hh * cap), len)
    };
    // The weights of `tile` (in each head's part of the scratch) into the sums, `MIX_KEYS` value
    // rows at a time for every head of the batch: the rows come from memory once per batch.
    let mix = |tile: Range<usize>, acc: &mut [f64]| {
        let mut j = tile.start;
        while j < tile.end {
            let end = (j + MIX_KEYS).min(tile.end);
            P::prefetch(v, kvw, d, end..(end + MIX_KEYS).min(tile.end));
            let mut ws: [&[f64]; BATCH_HEADS] = [&[]; BATCH_HEADS];
            for (hh, w) in ws.iter_mut().enumerate().take(b.n) {
                *w = &part(hh, tile.len())[j - tile.start..end - tile.start];
            }
            // SAFETY: rows j..end of head g exist.
            unsafe { P::accumulate(&ws[..b.n], v, kvw, j..end, &mut acc[..b.n * d]) };
            j = end;
        }
    };
    // The heads' sums side by side (independent chains, each in the reference's order of j).
    // SAFETY: `len ≤ cap` values of each head's part of the scratch.
    let add_sums = |sum: &mut [f64; BATCH_HEADS], len: usize| unsafe {
        for j in 0..len {
            for (hh, s) in sum.iter_mut().enumerate().take(b.n) {
                *s += *scratch.add(hh * cap + j);
            }
        }
    };
    let mut max = [f64::NEG_INFINITY; BATCH_HEADS];
    let mut sum = [-0.0f64; BATCH_HEADS];
    if keys <= cap {
        scores(0..keys);
        for (hh, m) in max.iter_mut().enumerate().take(b.n) {
            let w = part(hh, keys);
            *m = w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            P::exp_shifted(w, *m);
        }
        add_sums(&mut sum, keys);
        for (hh, &s) in sum.iter().enumerate().take(b.n) {
            for e in part(hh, keys).iter_mut() {
                *e /= s;
            }
        }
        mix(0..keys, &mut acc);
    } else {
        for tile in tiles() {
            scores(tile.clone());
            for (hh, m) in max.iter_mut().enumerate().take(b.n) {
                *m = part(hh, tile.len()).iter().copied().fold(*m, f64::max);
            }
        }
        for tile in tiles() {
            scores(tile.clone());
            for (hh, &m) in max.iter().enumerate().take(b.n) {
                P::exp_shifted(part(hh, tile.len()), m);
            }
            add_sums(&mut sum, tile.len());
        }
        for tile in tiles() {
            scores(tile.clone());
            for hh in 0..b.n {
                let w = part(hh, tile.len());
                P::exp_shifted(w, max[hh]);
                for e in w.iter_mut() {
                    *e /= sum[hh];
                }
            }
            mix(tile, &mut acc);
        }
    }
    for hh in 0..b.n {
        let row = b.t * call.heads + b.h0 + hh;
        for (c, &a) in acc[hh * d..(hh + 1) * d].iter().enumerate() {
            // SAFETY: out row `row` has d values (it may be q's row, read above).
            unsafe { *call.out.add(row * d + c) = a as f32 };
        }
    }
}

/// Asks for the first `d` values of rows `rows` (`kvw` apart from `base`), a cache line at a
/// time: `Prims::prefetch` of both SIMD versions.
#[cfg(target_arch = "x86_64")]
fn prefetch_rows(base: *const f32, kvw: usize, d: usize, rows: Range<usize>) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    for row in rows {
        for c in (0..d).step_by(16) {
            // SAFETY: a prefetch is a hint: it reads nothing and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(row * kvw + c).cast()) };
        }
    }
}

/// The scores kernels' prefetch of the next block of keys while a block's columns are summed: one
/// cache line of the next block's rows per column step (`step`), row after row, for as many steps
/// as there are (both SIMD versions; no division per step).
#[cfg(target_arch = "x86_64")]
struct NextRows {
    /// The next block's first row.
    next: *const f32,
    kvw: usize,
    /// Cache lines per row (16 values each).
    lines: usize,
    /// Steps that ask for a line: every line of the next block, 0 when there is none.
    ahead: usize,
    /// The next line to ask for: line `line` of row `row`.
    row: usize,
    line: usize,
}

#[cfg(target_arch = "x86_64")]
impl NextRows {
    /// The prefetch of the `keys` rows after `base` (`kvw` apart, `d` values each), or of nothing
    /// when `more` is false.
    #[inline(always)]
    fn new(base: *const f32, kvw: usize, d: usize, keys: usize, more: bool) -> NextRows {
        let lines = d.div_ceil(16);
        NextRows {
            next: base.wrapping_add(keys * kvw),
            kvw,
            lines,
            ahead: if more { keys * lines } else { 0 },
            row: 0,
            line: 0,
        }
    }

    /// Column step `i`: asks for the next line while there is one.
    #[inline(always)]
    fn step(&mut self, i: usize) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        if i < self.ahead {
            let at = self.next.wrapping_add(self.row * self.kvw + 16 * self.line);
            // SAFETY: a prefetch is a hint: it reads nothing and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
            self.line += 1;
            if self.line == self.lines {
                (self.row, self.line) = (self.row + 1, 0);
            }
        }
    }
}

/// The reference's loops, one value at a time.
struct Portable;

impl Prims for Portable {
    unsafe fn scores(
        qs: &[f64],
        n: usize,
        d: usize,
        k: *const f32,
        kvw: usize,
        keys: Range<usize>,
        scale: f64,
        scores: *mut f64,
        cap: usize,
    ) {
        for j in keys.clone() {
            for hh in 0..n {
                let mut dot = -0.0f64;
                for (i, &q) in qs[hh * d..(hh + 1) * d].iter().enumerate() {
                    // SAFETY: key row j has d values of head g.
                    dot += q * f64::from(unsafe { *k.add(j * kvw + i) });
                }
                // SAFETY: within head hh's part of the scratch.
                unsafe { *scores.add(hh * cap + j - keys.start) = dot * scale };
            }
        }
    }

    unsafe fn accumulate(
        w: &[&[f64]],
        v: *const f32,
        kvw: usize,
        keys: Range<usize>,
        acc: &mut [f64],
    ) {
        let d = acc.len() / w.len().max(1);
        for (w, acc) in w.iter().zip(acc.chunks_exact_mut(d.max(1))) {
            for (j, &wj) in keys.clone().zip(w.iter()) {
                for (c, a) in acc.iter_mut().enumerate() {
                    // SAFETY: value row j has d values of head g.
                    *a += wj * f64::from(unsafe { *v.add(j * kvw + c) });
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Prims, Range};
    use std::arch::x86_64::*;

    /// Keys per block of the scores (one 16-lane gather, two f64 vectors).
    const KEYS: usize = 16;
    /// f64 vectors of output sums per head per pass over the value rows (32 columns: four heads'
    /// sums, the row's converted values and a weight fit the 32 registers).
    const COLUMN_VECTORS: usize = 4;

    /// Whether this CPU runs the AVX-512 kernel.
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            // The softmax's exp is the AVX2 one (`native::exp`).
            && super::avx2::available()
    }

    pub(super) struct Simd;

    impl Prims for Simd {
        unsafe fn scores(
            qs: &[f64],
            n: usize,
            d: usize,
            k: *const f32,
            kvw: usize,
            keys: Range<usize>,
            scale: f64,
            scores: *mut f64,
            cap: usize,
        ) {
            // SAFETY: the features are present (`available`); the rest is the caller's.
            unsafe {
                match n {
                    1 => scores_n::<1>(qs, d, k, kvw, keys, scale, scores, cap),
                    2 => scores_n::<2>(qs, d, k, kvw, keys, scale, scores, cap),
                    3 => scores_n::<3>(qs, d, k, kvw, keys, scale, scores, cap),
                    _ => scores_n::<4>(qs, d, k, kvw, keys, scale, scores, cap),
                }
            }
        }

        unsafe fn accumulate(
            w: &[&[f64]],
            v: *const f32,
            kvw: usize,
            keys: Range<usize>,
            acc: &mut [f64],
        ) {
            let n = w.len();
            if n == 0 {
                return;
            }
            let d = acc.len() / n;
            let mut c0 = 0;
            while c0 < d {
                let cols = (d - c0).min(8 * COLUMN_VECTORS);
                // SAFETY: the features are present; columns c0..c0 + cols of the head exist, and
                // of each head's sums.
                unsafe {
                    let v = v.add(c0);
                    let acc = acc.as_mut_ptr().add(c0);
                    match n {
                        1 => columns::<1>(w, v, kvw, keys.clone(), acc, d, cols),
                        2 => columns::<2>(w, v, kvw, keys.clone(), acc, d, cols),
                        3 => columns::<3>(w, v, kvw, keys.clone(), acc, d, cols),
                        _ => columns::<4>(w, v, kvw, keys.clone(), acc, d, cols),
                    }
                }
                c0 += cols;
            }
        }

        fn prefetch(base: *const f32, kvw: usize, d: usize, rows: Range<usize>) {
            super::prefetch_rows(base, kvw, d, rows);
        }

        fn exp_shifted(w: &mut [f64], m: f64) {
            // SAFETY: AVX2 and FMA are present (`available`).
            unsafe { crate::native::exp::avx2::exp_shifted(w, m) }
        }
    }

    /// The mask of the first `n` of 8 lanes.
    fn lanes8(n: usize) -> __mmask8 {
        if n >= 8 {
            0xff
        } else {
            ((1u16 << n) - 1) as __mmask8
        }
    }

    /// `Prims::scores` for `N` query heads: blocks of 16 keys, lane l of the two f64 vectors of head
    /// hh running key `j + l`'s dot in index order. A whole block takes 8 columns of its 16 rows at a
    /// time with plain loads, two 8 × 8 transposes in registers (`avx2::transpose8`, the same values
    /// a gather gives, column by column); a partial block and the last `d mod 8` columns gather.
    ///
    /// # Safety
    /// As `Prims::scores`, with the AVX-512 features present.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq")]
    unsafe fn scores_n<const N: usize>(
        qs: &[f64],
        d: usize,
        k: *const f32,
        kvw: usize,
        keys: Range<usize>,
        scale: f64,
        scores: *mut f64,
        cap: usize,
    ) {
        // The offsets of 16 consecutive rows (`supports`: they fit i32).
        let offsets = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(kvw as i32),
        );
        let scale_v = _mm512_set1_pd(scale);
        let mut j = keys.start;
        while j < keys.end {
            let n_keys = (keys.end - j).min(KEYS);
            let mask: __mmask16 = if n_keys == KEYS {
                0xffff
            } else {
                ((1u32 << n_keys) - 1) as __mmask16
            };
            // SAFETY: rows j..j + n_keys exist; masked-off lanes are not read.
            let base = unsafe { k.add(j * kvw) };
            let mut acc = [[_mm512_set1_pd(-0.0); 2]; N];
            let mut prefetch = super::NextRows::new(base, kvw, d, KEYS, j + KEYS < keys.end);
            // Column i of the block's keys (`lo`: keys j..j + 8 in its lanes, `hi`: the next 8)
            // into every head's dots.
            macro_rules! column {
                ($i:expr, $lo:expr, $hi:expr) => {{
                    let i = $i;
                    prefetch.step(i);
                    let lo = _mm512_cvtps_pd($lo);
                    let hi = _mm512_cvtps_pd($hi);
                    for (hh, a) in acc.iter_mut().enumerate() {
                        let q = _mm512_set1_pd(qs[hh * d + i]);
                        a[0] = _mm512_fmadd_pd(q, lo, a[0]);
                        a[1] = _mm512_fmadd_pd(q, hi, a[1]);
                    }
                }};
            }
            let mut i = 0;
            if n_keys == KEYS {
                while i + 8 <= d {
                    // SAFETY: rows j..j + 16 exist with columns i..i + 8 < d.
                    let rows: [[__m256; 8]; 2] = std::array::from_fn(|half| {
                        std::array::from_fn(|r| unsafe {
                            _mm256_loadu_ps(base.add((8 * half + r) * kvw + i))
                        })
                    });
                    let [lo, hi] = rows;
                    let (lo, hi) = (super::avx2::transpose8(lo), super::avx2::transpose8(hi));
                    for (c, (lo, hi)) in lo.into_iter().zip(hi).enumerate() {
                        column!(i + c, lo, hi);
                    }
                    i += 8;
                }
            }
            while i < d {
                // SAFETY: lane l reads row j + l, column i < d, of the head (lanes < n_keys).
                let kv = unsafe {
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, offsets, base.add(i))
                };
                column!(
                    i,
                    _mm512_castps512_ps256(kv),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(kv)))
                );
                i += 1;
            }
            for (hh, a) in acc.iter().enumerate() {
                let mut s = [0f64; KEYS];
                // SAFETY: 16 f64 in `s`.
                unsafe {
                    _mm512_storeu_pd(s.as_mut_ptr(), _mm512_mul_pd(a[0], scale_v));
                    _mm512_storeu_pd(s.as_mut_ptr().add(8), _mm512_mul_pd(a[1], scale_v));
                }
                for (l, &v) in s.iter().enumerate().take(n_keys) {
                    // SAFETY: within head hh's part of the scratch (`cap ≥ keys.len()`).
                    unsafe { *scores.add(hh * cap + j + l - keys.start) = v };
                }
            }
            j += n_keys;
        }
    }

    /// `Prims::accumulate` for `cols ≤ 8·COLUMN_VECTORS` columns of `N` heads (their sums `d`
    /// apart from `acc`): each value row is loaded and widened once for all the heads.
    ///
    /// # Safety
    /// As `Prims::accumulate` for these columns, with the AVX-512 features present; `w` has `N`
    /// slices.
    #[target_feature(enable = "avx512f,avx512vl,avx512dq")]
    unsafe fn columns<const N: usize>(
        w: &[&[f64]],
        v: *const f32,
        kvw: usize,
        keys: Range<usize>,
        acc: *mut f64,
        d: usize,
        cols: usize,
    ) {
        const V: usize = COLUMN_VECTORS;
        let masks: [__mmask8; V] = std::array::from_fn(|u| lanes8(cols.saturating_sub(8 * u)));
        // SAFETY: head hh's sums start hh·d after `acc`, with `cols` values; masked-off lanes are
        // not touched.
        let mut a: [[__m512d; V]; N] = std::array::from_fn(|hh| {
            std::array::from_fn(|u| unsafe {
                _mm512_maskz_loadu_pd(masks[u], acc.add(hh * d + 8 * u))
            })
        });
        let w: [&[f64]; N] = std::array::from_fn(|hh| w[hh]);
        for (jj, j) in keys.enumerate() {
            // SAFETY: row j of the head has `cols` values from here.
            let row = unsafe { v.add(j * kvw) };
            // SAFETY: as above, masked.
            let x: [__m512d; V] = std::array::from_fn(|u| unsafe {
                _mm512_cvtps_pd(_mm256_maskz_loadu_ps(masks[u], row.add(8 * u)))
            });
            for (s, w) in a.iter_mut().zip(&w) {
                let wv = _mm512_set1_pd(w[jj]);
                for (s, &x) in s.iter_mut().zip(&x) {
                    *s = _mm512_add_pd(*s, _mm512_mul_pd(wv, x));
                }
            }
        }
        for (hh, s) in a.iter().enumerate() {
            for (u, &s) in s.iter().enumerate() {
                // SAFETY: as the loads.
                unsafe { _mm512_mask_storeu_pd(acc.add(hh * d + 8 * u), masks[u], s) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// The reference's attention (`nn.attention`'s eval after the cache write) for every row.
    fn reference(
        (heads, kv_heads, d): (usize, usize, usize),
        (t_len, pos): (usize, usize),
        scale: f64,
        q: &[f32],
        kc: &[f32],
        vc: &[f32],
    ) -> Vec<f32> {
        let kvw = kv_heads * d;
        let group = heads / kv_heads;
        let mut out = vec![0f32; t_len * heads * d];
        for t in 0..t_len {
            for h in 0..heads {
                let g = h / group;
                let qrow = &q[(t * heads + h) * d..][..d];
                let scores: Vec<f64> = (0..=pos + t)
                    .map(|j| {
                        let dot: f64 = qrow
                            .iter()
                            .zip(&kc[j * kvw + g * d..][..d])
                            .map(|(&a, &b)| f64::from(a) * f64::from(b))
                            .sum();
                        dot * scale
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|s| exp(s - m)).sum();
                let w: Vec<f64> = scores.iter().map(|s| exp(s - m) / sum).collect();
                for c in 0..d {
                    let acc: f64 = w
                        .iter()
                        .enumerate()
                        .map(|(j, w)| w * f64::from(vc[j * kvw + g * d + c]))
                        .sum();
                    out[(t * heads + h) * d + c] = acc as f32;
                }
            }
        }
        out
    }

    fn values(next: &mut impl FnMut() -> u64, n: usize, special: bool) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let r = next();
                match r % 97 {
                    0 => -0.0,
                    1 => 0.0,
                    2 if special => f32::INFINITY,
                    3 if special => f32::NEG_INFINITY,
                    _ => ((r >> 8) % 20001) as f32 / 10000.0 - 1.0,
                }
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        (heads, kv_heads, d): (usize, usize, usize),
        (t, pos): (usize, usize),
        scale: f64,
        special: bool,
        seed: u64,
    ) {
        let mut next = crate::native::test_support::xorshift(seed | 1);
        let kvw = kv_heads * d;
        let context = pos + t;
        let q = values(&mut next, t * heads * d, special);
        let kc = values(&mut next, context * kvw, special);
        let vc = values(&mut next, context * kvw, false);
        let expect = reference((heads, kv_heads, d), (t, pos), scale, &q, &kc, &vc);
        // The same caches head-major, as the JIT keeps them: row j of head g at (g·C + j)·d.
        let head_major = |c: &[f32]| -> Vec<f32> {
            (0..kv_heads)
                .flat_map(|g| (0..context).flat_map(move |j| (0..d).map(move |i| (g, j, i))))
                .map(|(g, j, i)| c[j * kvw + g * d + i])
                .collect()
        };
        let (kc_h, vc_h) = (head_major(&kc), head_major(&vc));
        let bits = crate::native::test_support::bits;
        let run_in = |variant: Variant, rows: Range<usize>, in_place: bool, heads_first: bool| {
            let mut out = if in_place {
                q.clone()
            } else {
                vec![0f32; t * heads * d]
            };
            let (kc, vc, row_stride, head_stride) = if heads_first {
                (&kc_h, &vc_h, d, context * d)
            } else {
                (&kc, &vc, kvw, d)
            };
            let call = Call {
                q: if in_place { out.as_ptr() } else { q.as_ptr() },
                kc: kc.as_ptr(),
                vc: vc.as_ptr(),
                out: out.as_mut_ptr(),
                heads,
                kv_heads,
                d,
                row_stride,
                head_stride,
                scale,
                pos,
                rows,
            };
            // SAFETY: the buffers have the call's shapes; `variants` lists what this CPU runs.
            unsafe { variant.drive(&call) };
            out
        };
        let go = |variant: Variant, rows: Range<usize>, in_place: bool| {
            let row_major = run_in(variant, rows.clone(), in_place, false);
            let heads_first = run_in(variant, rows, in_place, true);
            assert_eq!(
                bits(&row_major),
                bits(&heads_first),
                "the two layouts differ, {variant:?}"
            );
            heads_first
        };
        let what = format!("heads {heads}/{kv_heads} d {d} t {t} pos {pos}");
        let rows = t * heads;
        for variant in variants() {
            assert_eq!(
                bits(&go(variant, 0..rows, false)),
                bits(&expect),
                "{variant:?}, {what}"
            );
            assert_eq!(
                bits(&go(variant, 0..rows, true)),
                bits(&expect),
                "{variant:?} in place, {what}"
            );
            // Rows split unevenly between calls (a batch cut in the middle of a group).
            let cut = rows / 3 + 1;
            let mut split = go(variant, 0..cut.min(rows), false);
            let rest = go(variant, cut.min(rows)..rows, false);
            let from = cut.min(rows) * d;
            split[from..].copy_from_slice(&rest[from..]);
            assert_eq!(
                bits(&split),
                bits(&expect),
                "{variant:?} split at row {cut}, {what}"
            );
        }
        // `run` picks one of them.
        assert_eq!(
            bits(&run_in(Variant::Best, 0..rows, false, true)),
            bits(&expect),
            "run, {what}"
        );
    }

    /// Each version of the primitives.
    #[derive(Clone, Copy, Debug)]
    enum Variant {
        Portable,
        #[cfg(target_arch = "x86_64")]
        Avx2,
        #[cfg(target_arch = "x86_64")]
        Avx512,
        /// What `run` picks.
        Best,
    }

    impl Variant {
        /// # Safety
        /// As `run`; the variant is one `variants` lists.
        unsafe fn drive(self, call: &Call) {
            // SAFETY: the caller's.
            unsafe {
                match self {
                    Variant::Portable => drive::<Portable>(call),
                    #[cfg(target_arch = "x86_64")]
                    Variant::Avx2 => drive::<avx2::Simd>(call),
                    #[cfg(target_arch = "x86_64")]
                    Variant::Avx512 => drive::<avx512::Simd>(call),
                    Variant::Best => run(call),
                }
            }
        }
    }

    /// The versions this CPU runs.
    fn variants() -> Vec<Variant> {
        #[allow(unused_mut)]
        let mut v = vec![Variant::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if avx2::available() {
                v.push(Variant::Avx2);
            }
            if avx512::available() {
                v.push(Variant::Avx512);
            }
        }
        v
    }

    #[test]
    fn both_variants_equal_the_reference_bit_for_bit_at_awkward_shapes() {
        let shapes = [
            (4, 2, 32),
            (20, 5, 128),
            (2, 1, 1),
            (3, 3, 3),
            (6, 2, 17),
            (8, 1, 24),
            (12, 2, 136),
            (5, 5, 256),
            (16, 2, 9),
        ];
        for (i, &shape) in shapes.iter().enumerate() {
            for (t, pos) in [(1, 0), (1, 16), (3, 14), (17, 5), (1, 40)] {
                let scale = 1.0 / (shape.2 as f64).sqrt();
                check(shape, (t, pos), scale, false, 7 + i as u64);
            }
        }
    }

    #[test]
    fn infinite_and_large_scores_follow_the_reference() {
        check((4, 2, 8), (5, 20), 0.35, true, 3);
        check((4, 4, 16), (2, 30), 64.0, false, 5);
        check((2, 1, 4), (3, 3), 0.0, false, 9);
    }

    /// The f64 values before the final rounding to f32, which hides most differences of order or
    /// fusion: each SIMD primitive gives the portable one's bits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_simd_primitives_give_the_portable_f64_bits() {
        if avx2::available() {
            primitives_match_the_portable::<avx2::Simd>("avx2");
        }
        if avx512::available() {
            primitives_match_the_portable::<avx512::Simd>("avx512");
        }
    }

    /// `P`'s scores and sums against `Portable`'s, bit for bit (the CPU runs `P`).
    #[cfg(target_arch = "x86_64")]
    fn primitives_match_the_portable<P: Prims>(name: &str) {
        let mut next = crate::native::test_support::xorshift(21);
        for (n, d, kvw, keys) in [
            (1, 128, 640, 3..40),
            (3, 17, 34, 0..16),
            (4, 136, 272, 5..38),
            (2, 6, 12, 2..11),
            (4, 3, 3, 0..1),
        ] {
            let rows = keys.end;
            let q: Vec<f64> = values(&mut next, n * d, false)
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let k = values(&mut next, rows * kvw, false);
            let w: Vec<f64> = (0..n * keys.len())
                .map(|_| (next() % 1_000_003) as f64 / 999_983.0)
                .collect();
            let cap = keys.len();
            let mut simd = vec![0f64; n * cap];
            let mut portable = vec![0f64; n * cap];
            let mut acc_simd: Vec<f64> = (0..n * d).map(|c| c as f64 / 7.0).collect();
            let mut acc_portable = acc_simd.clone();
            let ws: Vec<&[f64]> = w.chunks_exact(keys.len()).collect();
            // SAFETY: `k` has `rows` rows of `kvw` ≥ d values; the scratch holds n·cap.
            unsafe {
                let (k, keys) = (k.as_ptr(), keys.clone());
                P::scores(&q, n, d, k, kvw, keys.clone(), 0.3, simd.as_mut_ptr(), cap);
                Portable::scores(
                    &q,
                    n,
                    d,
                    k,
                    kvw,
                    keys.clone(),
                    0.3,
                    portable.as_mut_ptr(),
                    cap,
                );
                P::accumulate(&ws, k, kvw, keys.clone(), &mut acc_simd);
                Portable::accumulate(&ws, k, kvw, keys, &mut acc_portable);
            }
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&simd), bits(&portable), "{name} scores n {n} d {d}");
            assert_eq!(
                bits(&acc_simd),
                bits(&acc_portable),
                "{name} sums n {n} d {d}"
            );
        }
    }

    #[test]
    fn contexts_past_the_scratch_recompute_the_same_values() {
        // One head per batch: one tile of 8192; four: tiles of 2048 (and the one-tile path).
        check((1, 1, 8), (2, SCRATCH_SCORES - 1), 0.3, false, 11);
        check((4, 1, 5), (1, SCRATCH_SCORES / 4 + 37), 0.3, false, 13);
        check((4, 1, 5), (1, SCRATCH_SCORES / 4 - 1), 0.3, false, 15);
    }
}
