//! A measurement, not a kernel the runtime runs: issue 16's 1.6-bit ternary layout (five weights
//! per byte) against the 2-bit layout the runtime packs, both from DRAM, one token (decode), on
//! AVX-512 VNNI. The ignored test `decode_from_dram_base3_against_two_bit` prints the times and
//! the ratio; docs/performance.md keeps the numbers and the decision.
//!
//! The layout: a row is padded to blocks of 320 elements, 64 bytes each. Byte j of a block holds
//! the codes (t + 1, 0..=2) of elements j, 64 + j, 128 + j, 192 + j and 256 + j as the base-3 number
//! v = Σ c_i·3^(4 − i), stored as q = ⌈256·v / 243⌉ (llama.cpp's TQ1_0 trick). Then code i is
//! ⌊3·y_i / 256⌋ with y_0 = q and y_(i+1) = 3·y_i mod 256 (two byte additions per 64 bytes).
//!
//! The kernel never forms the codes: 3·y_i = 256·c_i + y_(i+1), so Σ c_i·x = (3·Σ y_i·x −
//! Σ y_(i+1)·x) / 256, and each sum is one `vpdpbusd` of the bytes y (u8) against the slice's 64
//! activations (i8). That is two `vpdpbusd` and two additions per 64 weights, against one
//! `vpdpbusd` and one AND for the 2-bit layout. Forming the codes instead (two unsigned compares
//! y ≥ 86 and y ≥ 171, two masked moves, one `vpdpbusd`) measured slower on AMD Zen 4 (45 against
//! 53 Gweights/s from DRAM on one thread). The result is exact while 256·|Σ c·x| fits i32
//! (K < 32768; the wrapping partial sums cannot change it). The padding holds code 1 (zero weight)
//! against zero activations, and the kernel subtracts Σ x as the 2-bit one does, so the integer
//! sums equal the 2-bit kernel's.

use super::BLOCK;
use std::arch::x86_64::*;

/// Elements per 1.6-bit block (five slices of 64).
const BLOCK3: usize = 5 * BLOCK;

/// Bytes of one row of K elements in the 1.6-bit layout.
fn row_bytes3(k: usize) -> usize {
    k.div_ceil(BLOCK3) * BLOCK
}

/// Packs one row of codes (0..=2) in the 1.6-bit layout.
fn pack3(codes: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; row_bytes3(codes.len())];
    for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
        for (j, byte) in chunk.iter_mut().enumerate() {
            let v = (0..5).fold(0u32, |v, i| {
                v * 3 + u32::from(codes.get(b * BLOCK3 + i * BLOCK + j).copied().unwrap_or(1))
            });
            *byte = ((v * 256).div_ceil(243)) as u8;
        }
    }
    out
}

/// Packs one row of codes in the runtime's 2-bit layout (see the parent module).
fn pack2(codes: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; codes.len().div_ceil(BLOCK) * BLOCK / 4];
    for j in 0..out.len() * 4 {
        let c = codes.get(j).copied().unwrap_or(1);
        let (block, e) = (j / BLOCK, j % BLOCK);
        out[block * 16 + e % 16] |= c << (6 - 2 * (e / 16));
    }
    out
}

/// Σ (code − 1)·x over one 1.6-bit row, without SIMD.
fn dot3_portable(w: &[u8], x: &[i8]) -> i32 {
    let mut acc = 0i32;
    for (b, chunk) in w.chunks(BLOCK).enumerate() {
        for (j, &q) in chunk.iter().enumerate() {
            let mut y = u32::from(q);
            for i in 0..5 {
                let c = (3 * y) >> 8;
                y = (3 * y) % 256;
                let xv = x.get(b * BLOCK3 + i * BLOCK + j).copied().unwrap_or(0);
                acc += (c as i32 - 1) * i32::from(xv);
            }
        }
    }
    acc
}

/// Whether this CPU runs the probe (the parent's AVX-512 VNNI kernel's features).
fn available() -> bool {
    super::avx512::available()
}

/// Rows `rows` of a 1.6-bit matrix against one token's activations `x` (padded with zeros to
/// whole blocks), `out[row] = f32(Σ (code − 1)·x)`, each row prefetching the row
/// `PREFETCH_ROWS` on, as the 2-bit kernel's `single`.
///
/// # Safety
/// `w` holds the rows of `row_bytes3(k)` bytes, `x` `row_bytes3(k) * 5` bytes, `out` the rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows3(
    w: *const u8,
    x: *const i8,
    xsum: i32,
    k: usize,
    rows: std::ops::Range<usize>,
    out: *mut f32,
) {
    let rb = row_bytes3(k);
    let blocks = rb / BLOCK;
    let last = rows.end;
    for row in rows {
        // SAFETY: row `row` of the matrix; prefetches touch nothing.
        let wr = unsafe { w.add(row * rb) };
        if row + super::PREFETCH_ROWS < last {
            let ahead = unsafe { wr.add(super::PREFETCH_ROWS * rb) };
            let mut line = 0;
            while line < rb {
                unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.add(line).cast()) };
                line += 64;
            }
        }
        let mut p = [_mm512_setzero_si512(); 5];
        let mut q = [_mm512_setzero_si512(); 5];
        for b in 0..blocks {
            // SAFETY: block b of the row and its 320 activations.
            unsafe {
                let mut y = _mm512_loadu_si512(wr.add(b * BLOCK).cast());
                for i in 0..5 {
                    let xv = _mm512_loadu_si512(x.add(b * BLOCK3 + i * BLOCK).cast());
                    p[i] = _mm512_dpbusd_epi32(p[i], y, xv);
                    y = _mm512_add_epi8(y, _mm512_add_epi8(y, y));
                    q[i] = _mm512_dpbusd_epi32(q[i], y, xv);
                }
            }
        }
        let sum = |v: [__m512i; 5]| {
            _mm512_reduce_add_epi32(_mm512_add_epi32(
                _mm512_add_epi32(_mm512_add_epi32(v[0], v[1]), _mm512_add_epi32(v[2], v[3])),
                v[4],
            ))
        };
        // 3·y_i = 256·c_i + y_(i+1), so Σ c_i·x = (3·Σ y_i·x − Σ y_(i+1)·x) / 256, exactly.
        let dot = sum(p).wrapping_mul(3).wrapping_sub(sum(q)) >> 8;
        // SAFETY: out holds the row.
        unsafe { *out.add(row) = dot.wrapping_sub(xsum) as f32 };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::native::test_support::xorshift;

    /// Random codes for `n` rows of `k`.
    fn codes(n: usize, k: usize, seed: u64) -> Vec<u8> {
        let mut next = xorshift(seed);
        (0..n * k).map(|_| (next() % 3) as u8).collect()
    }

    /// Activations padded with zeros to whole 1.6-bit blocks.
    fn acts(k: usize, seed: u64) -> Vec<i8> {
        let mut next = xorshift(seed);
        let mut x: Vec<i8> = (0..k).map(|_| (next() % 255) as i8).collect();
        x.resize(row_bytes3(k) * 5, 0);
        x
    }

    #[test]
    fn the_base3_decode_gives_every_code_back() {
        for v in 0..243u32 {
            let digits: Vec<u8> = (0..5).map(|i| (v / 3u32.pow(4 - i) % 3) as u8).collect();
            let mut codes = vec![1u8; BLOCK3];
            for (i, &d) in digits.iter().enumerate() {
                codes[i * BLOCK] = d;
            }
            let w = pack3(&codes);
            let mut y = u32::from(w[0]);
            for (i, &d) in digits.iter().enumerate() {
                assert_eq!((3 * y) >> 8, u32::from(d), "value {v} digit {i}");
                y = 3 * y % 256;
            }
        }
    }

    #[test]
    fn the_base3_kernel_equals_the_two_bit_sums() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        for (k, n) in [
            (1, 3),
            (64, 2),
            (100, 5),
            (319, 4),
            (320, 3),
            (321, 7),
            (2560, 9),
            (6912, 5),
        ] {
            let c = codes(n, k, (k * 7 + n) as u64);
            let x = acts(k, k as u64 + 1);
            let xsum: i32 = x.iter().map(|&v| i32::from(v)).sum();
            let w3: Vec<u8> = c.chunks(k).flat_map(pack3).collect();
            let mut out = vec![0f32; n];
            // SAFETY: the buffers have the shapes `rows3` takes.
            unsafe { rows3(w3.as_ptr(), x.as_ptr(), xsum, k, 1..n, out.as_mut_ptr()) };
            for row in 0..n {
                let codes = &c[row * k..(row + 1) * k];
                let want: i32 = codes
                    .iter()
                    .zip(&x)
                    .map(|(&c, &x)| (i32::from(c) - 1) * i32::from(x))
                    .sum();
                assert_eq!(dot3_portable(&pack3(codes), &x), want, "k {k} row {row}");
                let got = if row == 0 { want as f32 } else { out[row] };
                assert_eq!(got, want as f32, "k {k} row {row}");
            }
            assert_eq!(out[0], 0.0);
            // The 2-bit packing of the same codes gives the same sums through the runtime kernel.
            let w2: Vec<u8> = c.chunks(k).flat_map(pack2).collect();
            let mut out2 = vec![0f32; n];
            let xs = [1f32];
            let call = super::super::Call {
                xq: x.as_ptr(),
                xs: xs.as_ptr(),
                w: w2.as_ptr(),
                ws: 1.0,
                residual: std::ptr::null(),
                out: out2.as_mut_ptr(),
                k,
                n,
                t: 1,
                rows: 1..n,
            };
            // SAFETY: the buffers have the call's shapes.
            unsafe { super::super::portable(&call) };
            assert_eq!(out[1..], out2[1..], "k {k}");
        }
    }

    /// The 2B-4T projections of one layer, `(rows, K)`.
    const LAYER: [(usize, usize); 7] = [
        (2560, 2560),
        (640, 2560),
        (640, 2560),
        (2560, 2560),
        (6912, 2560),
        (6912, 2560),
        (2560, 6912),
    ];
    /// Layers per timed pass: 10 × 69.5M weights, far past any cache.
    const LAYERS: usize = 10;

    /// Bytes of pseudo-random weights (the times do not depend on the values).
    fn noise(bytes: usize, seed: u64) -> Vec<u8> {
        let mut next = xorshift(seed);
        let mut v = Vec::with_capacity(bytes + 8);
        while v.len() < bytes {
            v.extend_from_slice(&next().to_le_bytes());
        }
        v.truncate(bytes);
        v
    }

    /// `reps` decode passes over every matrix on `threads` threads (each its share of every
    /// matrix's rows), `two_bit` or 1.6-bit; the wall time of one pass in seconds.
    fn pass(
        mats: &[(usize, usize, Vec<u8>)],
        x: &[Vec<i8>; 2],
        threads: usize,
        two_bit: bool,
        reps: usize,
    ) -> f64 {
        let out = vec![0f32; 6912 * threads];
        let barrier = std::sync::Barrier::new(threads);
        let xs = [1f32];
        // Each worker times itself (a third thread on two cores would start its clock late); the
        // pass lasts from the first start to the last end.
        let spans: Vec<(std::time::Instant, std::time::Instant)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|th| {
                    let (mats, x, barrier, out, xs) = (
                        mats,
                        x,
                        &barrier,
                        out.as_ptr() as usize,
                        xs.as_ptr() as usize,
                    );
                    s.spawn(move || {
                        barrier.wait();
                        let start = std::time::Instant::now();
                        for (n, k, w) in (0..reps).flat_map(|_| mats.iter()) {
                            let (n, k) = (*n, *k);
                            let xk = &x[usize::from(k != 2560)];
                            let share = n.div_ceil(threads);
                            let rows = (th * share).min(n)..((th + 1) * share).min(n);
                            let o = (out as *mut f32)
                                .wrapping_add(th * 6912)
                                .wrapping_sub(rows.start);
                            if two_bit {
                                // `n` = 0: row r of token 0 lands at `o[r]`, as in `rows3`.
                                let call = super::super::Call {
                                    xq: xk.as_ptr(),
                                    xs: xs as *const f32,
                                    w: w.as_ptr(),
                                    ws: 1.0,
                                    residual: std::ptr::null(),
                                    out: o,
                                    k,
                                    n: 0,
                                    t: 1,
                                    rows,
                                };
                                // SAFETY: the matrix, the activations and the thread's slice of `out`.
                                unsafe { super::super::avx512::run(&call) };
                            } else {
                                // SAFETY: the matrix, the padded activations and the thread's slice.
                                unsafe { rows3(w.as_ptr(), xk.as_ptr(), 0, k, rows, o) };
                            }
                        }
                        (start, std::time::Instant::now())
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let start = spans.iter().map(|s| s.0).min().unwrap();
        let end = spans.iter().map(|s| s.1).max().unwrap();
        (end - start).as_secs_f64() / reps as f64
    }

    /// The 2-bit and the 1.6-bit packing of `layers` copies of `layer` (pseudo-random weights).
    type Packed = Vec<(usize, usize, Vec<u8>)>;
    fn matrices(layer: &[(usize, usize)], layers: usize) -> (Packed, Packed) {
        let (mut two, mut three) = (Vec::new(), Vec::new());
        for l in 0..layers {
            for (i, &(n, k)) in layer.iter().enumerate() {
                let seed = (l * 7 + i + 1) as u64;
                two.push((n, k, noise(n * k.div_ceil(BLOCK) * BLOCK / 4, seed)));
                three.push((n, k, noise(n * row_bytes3(k), seed + 1000)));
            }
        }
        (two, three)
    }

    /// Times both layouts over `layers` copies of `layer`, `reps` passes per timing, alternating
    /// `rounds` times, at 1 and 2 threads; prints the best times (the least disturbed) and the
    /// median ratio of the paired rounds.
    fn compare(what: &str, layer: &[(usize, usize)], layers: usize, reps: usize, rounds: usize) {
        let (two, three) = matrices(layer, layers);
        let bytes =
            |m: &[(usize, usize, Vec<u8>)]| m.iter().map(|(_, _, w)| w.len()).sum::<usize>() as f64;
        let (b2, b3) = (bytes(&two), bytes(&three));
        let x = [acts(2560, 5), acts(6912, 6)];
        for threads in [1, 2] {
            let (mut t2, mut t3) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                t2.push(pass(&two, &x, threads, true, reps));
                t3.push(pass(&three, &x, threads, false, reps));
            }
            let mut ratios: Vec<f64> = t3.iter().zip(&t2).map(|(a, b)| a / b).collect();
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
            let (m2, m3) = (best(&t2), best(&t3));
            eprintln!(
                "{what}, {threads} thread(s), best of {rounds}: 2-bit {:.3} ms ({:.1} MB, {:.1} GB/s, {:.1} Gweights/s); 1.6-bit {:.3} ms ({:.1} MB, {:.1} GB/s, {:.1} Gweights/s); 1.6-bit time / 2-bit time: best {:.3}, median of the paired rounds {:.3}",
                m2 * 1e3,
                b2 / 1e6,
                b2 / m2 / 1e9,
                b2 * 4.0 / m2 / 1e9,
                m3 * 1e3,
                b3 / 1e6,
                b3 / m3 / 1e9,
                b3 * 5.0 / m3 / 1e9,
                m3 / m2,
                median(&mut ratios),
            );
        }
    }

    #[test]
    #[ignore = "a timing: cargo test --release -p bitnet-runtime base3 -- --ignored --nocapture"]
    fn decode_from_dram_base3_against_two_bit() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        // From DRAM: 10 layers of the 2B-4T projections, 695M weights.
        compare("DRAM", &LAYER, LAYERS, 1, 31);
        // From L2: one 640 × 2560 projection (410 KB at 2 bits), 500 passes per timing: the
        // kernels' compute rate.
        compare("L2", &[(640, 2560)], 1, 500, 31);
    }
}
