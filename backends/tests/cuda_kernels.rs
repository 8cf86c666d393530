//! CUDA kernels at awkward sizes, built for the host (`cuda::host`) and checked against direct
//! computations: the ternary matmul with K not a multiple of 64 or of 16 (the partial last block and
//! the byte-by-byte activation path), uneven row counts, several token tiles and a residual; the
//! quantizer's round-half-even and clamp.

#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_backends::cuda::host::with_host_kernels;
use bitnet_backends::kernel::{ActQuantParams, KernelKind, TernaryMatmulParams};

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// `bytes` in 64-byte aligned storage.
fn aligned(bytes: &[u8]) -> Vec<Line> {
    let mut v = vec![Line([0; 64]); bytes.len().div_ceil(64) + 1];
    for (i, b) in bytes.iter().enumerate() {
        v[i / 64].0[i % 64] = *b;
    }
    v
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read_f32(lines: &[Line], n: usize) -> Vec<f32> {
    let bytes: Vec<u8> = lines.iter().flat_map(|l| l.0).collect();
    bytes[..4 * n]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Packs `w` ([n, k] ternary) as the CPU layout: blocks of 64, element j at byte j % 16, shift
/// 6 − 2·(j / 16), code t + 1 (padding: code 1).
fn pack(w: &[i8], n: usize, k: usize) -> Vec<u8> {
    let kp = k.div_ceil(64) * 64;
    let mut out = vec![0u8; n * kp / 4];
    for r in 0..n {
        for e in 0..kp {
            let t = if e < k { w[r * k + e] } else { 0 };
            let (blk, j) = (e / 64, e % 64);
            out[r * kp / 4 + blk * 16 + j % 16] |= ((t + 1) as u8) << (6 - 2 * (j / 16));
        }
    }
    out
}

#[test]
fn ternary_matmul_at_awkward_sizes() {
    for (k, n, t, residual) in [
        (100usize, 5usize, 3usize, true),
        (64, 7, 1, false),
        (200, 9, 17, true),
        (48, 4, 9, false),
    ] {
        let w: Vec<i8> = (0..n * k)
            .map(|i| ((i * 7 + i / 3) % 3) as i8 - 1)
            .collect();
        let xq: Vec<i8> = (0..t * k).map(|i| ((i * 37 + 11) % 255) as i8).collect();
        let xs: Vec<f32> = (0..t).map(|i| 3.0 + i as f32 * 0.25).collect();
        let ws = [0.75f32];
        let res: Vec<f32> = (0..t * n).map(|i| i as f32 * 0.5 - 2.0).collect();
        let kind = KernelKind::TernaryMatmul(TernaryMatmulParams {
            k: k as u64,
            n: n as u64,
            residual,
        });
        let mut bx = aligned(&xq.iter().map(|&b| b as u8).collect::<Vec<_>>());
        let mut bs = aligned(&f32s(&xs));
        let mut bw = aligned(&pack(&w, n, k));
        let mut bws = aligned(&f32s(&ws));
        let mut br = aligned(&f32s(&res));
        let mut out = aligned(&vec![0u8; 4 * t * n]);
        let mut bufs: Vec<*mut u8> = vec![
            bx.as_mut_ptr().cast(),
            bs.as_mut_ptr().cast(),
            bw.as_mut_ptr().cast(),
            bws.as_mut_ptr().cast(),
        ];
        if residual {
            bufs.push(br.as_mut_ptr().cast());
        }
        bufs.push(out.as_mut_ptr().cast());
        with_host_kernels(std::slice::from_ref(&kind), |hk| {
            // SAFETY: the buffers have the kernel's sizes for `t` tokens.
            unsafe { hk.launch(0, &bufs, n as u64, t as i64, 0) }.unwrap();
        })
        .unwrap();
        let got = read_f32(&out, t * n);
        for tok in 0..t {
            for r in 0..n {
                let acc: i32 = (0..k)
                    .map(|e| i32::from(w[r * k + e]) * i32::from(xq[tok * k + e]))
                    .sum();
                let mut y = acc as f32 / xs[tok] * ws[0];
                if residual {
                    y += res[tok * n + r];
                }
                assert_eq!(
                    got[tok * n + r].to_bits(),
                    y.to_bits(),
                    "k {k} n {n} t {t}: token {tok} row {r}"
                );
            }
        }
    }
}

#[test]
fn act_quant_rounds_half_to_even_and_clamps() {
    // k = 37 (not a multiple of anything the kernel likes); values chosen so that y·s lands on
    // halves: max |x| = 127 gives s = 1.
    let k = 37usize;
    let mut x: Vec<f32> = (0..k).map(|i| i as f32 - 18.5).collect();
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 3.5;
    x[4] = f32::NAN;
    let kind = KernelKind::ActQuant(ActQuantParams {
        k: k as u64,
        eps_bits: 1e-5f32.to_bits(),
        reciprocal: false,
    });
    let mut bx = aligned(&f32s(&x));
    let mut q = aligned(&vec![0u8; k]);
    let mut s = aligned(&[0u8; 4]);
    let bufs: Vec<*mut u8> = vec![
        bx.as_mut_ptr().cast(),
        q.as_mut_ptr().cast(),
        s.as_mut_ptr().cast(),
    ];
    with_host_kernels(std::slice::from_ref(&kind), |hk| {
        // SAFETY: one row of `k`.
        unsafe { hk.launch(0, &bufs, 1, 1, 0) }.unwrap();
    })
    .unwrap();
    let scale = read_f32(&s, 1)[0];
    assert_eq!(scale, 1.0);
    let q: Vec<i8> = q[0].0[..k].iter().map(|&b| b as i8).collect();
    assert_eq!(&q[..5], &[127, 2, -2, 4, 0]);
    for i in 5..k {
        let want = (x[i] * scale).round_ties_even().clamp(-128.0, 127.0) as i8;
        assert_eq!(q[i], want, "element {i}");
    }
}
