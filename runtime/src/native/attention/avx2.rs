//! The attention micro-kernel's primitives with AVX2 and FMA (x86-64-v3): the AVX-512 version's
//! order of operations on 256-bit vectors, so the same bits (see the parent module's doc).
//!
//! Scores: 8 keys per block, the keys' `k_ji` for one index `i` in the 8 lanes of a vector, widened
//! into two vectors of 4 f64 whose lanes each run one key's dot in index order (a fused
//! multiply-add: the product of two f32 is exact in f64). A whole block takes 8 columns of its 8
//! rows at a time with plain loads and an 8 × 8 transpose in registers (`transpose8`); a partial
//! block and the last `d mod 8` columns gather one column at a time. Weighted sums: each value row
//! loaded and widened once for every head of the batch, a multiply then an add per column (never
//! fused, as the reference).
//! Partial blocks use the instruction set's masked loads, gathers and stores, so nothing past a
//! row or a head's sums is read or written.

use super::{Prims, Range};
use std::arch::x86_64::*;

/// Keys per block of the scores (one 8-lane vector of `k_ji`, two f64 vectors).
const KEYS: usize = 8;

/// Whether this CPU runs the AVX2 kernel.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
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
        // Vectors of 4 columns per head per pass: the heads' sums, one row's widened values and a
        // weight fit the 16 registers.
        let per_pass = 4 * match n {
            1 | 2 => 4,
            _ => 3,
        };
        let mut c0 = 0;
        while c0 < d {
            let cols = (d - c0).min(per_pass);
            // SAFETY: the features are present; columns c0..c0 + cols of the head exist, and of
            // each head's sums.
            unsafe {
                let v = v.add(c0);
                let acc = acc.as_mut_ptr().add(c0);
                match n {
                    1 => columns::<1, 4>(w, v, kvw, keys.clone(), acc, d, cols),
                    2 => columns::<2, 4>(w, v, kvw, keys.clone(), acc, d, cols),
                    3 => columns::<3, 3>(w, v, kvw, keys.clone(), acc, d, cols),
                    _ => columns::<4, 3>(w, v, kvw, keys.clone(), acc, d, cols),
                }
            }
            c0 += cols;
        }
    }

    fn prefetch(base: *const f32, kvw: usize, d: usize, rows: Range<usize>) {
        super::prefetch_rows(base, kvw, d, rows);
    }

    fn exp_shifted(w: &mut [f64], m: f64) {
        // SAFETY: the features are present (`available`).
        unsafe { crate::native::exp::avx2::exp_shifted(w, m) }
    }
}

/// The mask of the first `n` of 4 f64 lanes (all bits of a lane set).
#[target_feature(enable = "avx2")]
fn lanes4_pd(n: usize) -> __m256i {
    _mm256_cmpgt_epi64(
        _mm256_set1_epi64x(n.min(4) as i64),
        _mm256_setr_epi64x(0, 1, 2, 3),
    )
}

/// The mask of the first `n` of 4 f32 lanes.
#[target_feature(enable = "avx2")]
fn lanes4_ps(n: usize) -> __m128i {
    _mm_cmpgt_epi32(_mm_set1_epi32(n.min(4) as i32), _mm_setr_epi32(0, 1, 2, 3))
}

/// `Prims::scores` for `N` query heads: blocks of 8 keys, lane l of the two f64 vectors of head hh
/// running key `j + l`'s dot in index order.
///
/// # Safety
/// As `Prims::scores`, with AVX2 and FMA present.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
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
    // The offsets of 8 consecutive rows (`supports`: they fit i32).
    let offsets = _mm256_mullo_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_set1_epi32(kvw as i32),
    );
    let scale_v = _mm256_set1_pd(scale);
    let mut j = keys.start;
    while j < keys.end {
        let n_keys = (keys.end - j).min(KEYS);
        let mask = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
            _mm256_set1_epi32(n_keys as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        ));
        // SAFETY: rows j..j + n_keys exist; masked-off lanes are not read.
        let base = unsafe { k.add(j * kvw) };
        let mut acc = [[_mm256_set1_pd(-0.0); 2]; N];
        let mut prefetch = super::NextRows::new(base, kvw, d, KEYS, j + KEYS < keys.end);
        // Column i of the block's keys (`kv`, lane l key j + l) into every head's dots.
        macro_rules! column {
            ($i:expr, $kv:expr) => {{
                let i = $i;
                prefetch.step(i);
                let kv: __m256 = $kv;
                let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(kv));
                let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(kv));
                for (hh, a) in acc.iter_mut().enumerate() {
                    let q = _mm256_set1_pd(qs[hh * d + i]);
                    a[0] = _mm256_fmadd_pd(q, lo, a[0]);
                    a[1] = _mm256_fmadd_pd(q, hi, a[1]);
                }
            }};
        }
        let mut i = 0;
        if n_keys == KEYS {
            // Whole blocks: 8 columns of the 8 rows by plain loads, transposed in registers (the
            // same values a gather gives, column by column).
            while i + 8 <= d {
                // SAFETY: rows j..j + 8 exist with columns i..i + 8 < d.
                let rows: [__m256; 8] =
                    std::array::from_fn(|r| unsafe { _mm256_loadu_ps(base.add(r * kvw + i)) });
                for (c, kv) in transpose8(rows).into_iter().enumerate() {
                    column!(i + c, kv);
                }
                i += 8;
            }
        }
        while i < d {
            // SAFETY: lane l reads row j + l, column i < d, of the head (lanes < n_keys).
            column!(i, unsafe {
                _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), base.add(i), offsets, mask)
            });
            i += 1;
        }
        for (hh, a) in acc.iter().enumerate() {
            let mut s = [0f64; KEYS];
            // SAFETY: 8 f64 in `s`.
            unsafe {
                _mm256_storeu_pd(s.as_mut_ptr(), _mm256_mul_pd(a[0], scale_v));
                _mm256_storeu_pd(s.as_mut_ptr().add(4), _mm256_mul_pd(a[1], scale_v));
            }
            for (l, &v) in s.iter().enumerate().take(n_keys) {
                // SAFETY: within head hh's part of the scratch (`cap ≥ keys.len()`).
                unsafe { *scores.add(hh * cap + j + l - keys.start) = v };
            }
        }
        j += n_keys;
    }
}

/// The 8 × 8 transpose: element c of `rows[r]` becomes element r of the result's vector c (the
/// AVX-512 scores take it too).
///
/// # Safety
/// The CPU has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub fn transpose8(rows: [__m256; 8]) -> [__m256; 8] {
    let [r0, r1, r2, r3, r4, r5, r6, r7] = rows;
    // Pairs of rows interleaved, then quadruples, within each 128-bit half ...
    let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
    let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
    let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
    let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xee>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xee>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xee>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xee>(t5, t7);
    // ... then the halves: rows 0-3 of a column in the low half, rows 4-7 in the high one.
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// `Prims::accumulate` for `cols ≤ 4·V` columns of `N` heads (their sums `d` apart from `acc`):
/// each value row is loaded and widened once for all the heads.
///
/// # Safety
/// As `Prims::accumulate` for these columns, with AVX2 present; `w` has `N` slices.
#[target_feature(enable = "avx2")]
unsafe fn columns<const N: usize, const V: usize>(
    w: &[&[f64]],
    v: *const f32,
    kvw: usize,
    keys: Range<usize>,
    acc: *mut f64,
    d: usize,
    cols: usize,
) {
    let masks_pd: [__m256i; V] = std::array::from_fn(|u| lanes4_pd(cols.saturating_sub(4 * u)));
    let masks_ps: [__m128i; V] = std::array::from_fn(|u| lanes4_ps(cols.saturating_sub(4 * u)));
    // SAFETY: head hh's sums start hh·d after `acc`, with `cols` values; masked-off lanes are not
    // touched.
    let mut a: [[__m256d; V]; N] = std::array::from_fn(|hh| {
        std::array::from_fn(|u| unsafe { _mm256_maskload_pd(acc.add(hh * d + 4 * u), masks_pd[u]) })
    });
    let w: [&[f64]; N] = std::array::from_fn(|hh| w[hh]);
    let full = cols == 4 * V;
    for (jj, j) in keys.enumerate() {
        // SAFETY: row j of the head has `cols` values from here.
        let row = unsafe { v.add(j * kvw) };
        // SAFETY: as above, masked.
        let x: [__m256d; V] = std::array::from_fn(|u| unsafe {
            if full {
                _mm256_cvtps_pd(_mm_loadu_ps(row.add(4 * u)))
            } else {
                _mm256_cvtps_pd(_mm_maskload_ps(row.add(4 * u), masks_ps[u]))
            }
        });
        for (s, w) in a.iter_mut().zip(&w) {
            let wv = _mm256_set1_pd(w[jj]);
            for (s, &x) in s.iter_mut().zip(&x) {
                *s = _mm256_add_pd(*s, _mm256_mul_pd(wv, x));
            }
        }
    }
    for (hh, s) in a.iter().enumerate() {
        for (u, &s) in s.iter().enumerate() {
            // SAFETY: as the loads.
            unsafe { _mm256_maskstore_pd(acc.add(hh * d + 4 * u), masks_pd[u], s) };
        }
    }
}
