//! Differential tests of the lm_head kernels of `HeadDtype::I8`, `HeadDtype::F16` and the bf16 one
//! of `HeadDtype::Auto`: each kernel
//! is JIT-compiled, called through the `KernelFn` ABI on 1–3 uneven row ranges in shuffled order (as
//! the thread pool splits a launch), and compared with a scalar reference. `MatmulI8` is exact (its
//! i32 dot and its two f32 operations are redone here and must agree bit for bit); `MatmulNtHalf`
//! sums in f32 and must be within `TOLERANCE` × max|reference| of the f64 sum over the rounded
//! weights, and widens every finite f16 and bf16 exactly. After every partial call, the rows not yet computed must hold what they held before.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_backends::cpu::jit::compile_kernels;
use bitnet_backends::cpu::kernels::matmul_half::{self, HalfFormat};
use bitnet_backends::cpu::kernels::matmul_i8;
use bitnet_backends::kernel::{KernelKind, MatmulI8Params, MatmulNtHalfParams, MatmulNtParams};
use bitnet_runtime::KernelFn;
use support::{Rng, Watch, assert_bits, launch, splits};

/// `MatmulNtHalf`'s tolerance, as `MatmulNt`'s.
const TOLERANCE: f64 = 1e-5;

fn compile(kind: KernelKind) -> (cranelift_jit::JITModule, KernelFn) {
    let (module, fns) = compile_kernels(std::slice::from_ref(&kind)).expect("compile");
    (module, fns[0])
}

/// Sizes with every remainder the kernels handle: k mod 8, 16, 32, 128 and tiny k.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 2),
    (3, 5, 3),
    (7, 3, 1),
    (8, 2, 2),
    (9, 4, 1),
    (15, 2, 3),
    (16, 9, 1),
    (17, 4, 2),
    (31, 3, 1),
    (32, 5, 2),
    (33, 6, 3),
    (127, 4, 1),
    (128, 3, 2),
    (129, 5, 5),
    (255, 33, 2),
    (2560, 19, 1),
    (2560, 7, 4),
];

// ---------------------------------------------------------------- MatmulI8

#[test]
fn quantize_rows_rounds_to_nearest_even_within_half_a_step() {
    let mut rng = Rng(11);
    let k = 37;
    let mut w = rng.values(5 * k);
    w[k..2 * k].iter_mut().for_each(|v| *v = 0.0);
    w[2 * k + 3] = -40.0;
    let (q, s) = matmul_i8::quantize_rows(&w, k);
    assert_eq!((q.len(), s.len()), (w.len(), 5));
    assert_eq!(s[1], 0.0, "a zero row has scale 0");
    assert!(
        q[k..2 * k].iter().all(|&b| b == 128),
        "a zero row is all q = 0"
    );
    assert_eq!(q[2 * k + 3], 1, "the absmax of a row maps to −127");
    for (r, row) in w.chunks(k).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            let qv = i32::from(q[r * k + c]) - 128;
            assert!((-127..=127).contains(&qv));
            let back = qv as f32 * s[r];
            assert!(
                (back - x).abs() <= s[r] * 0.5 * 1.000_01,
                "row {r} col {c}: {x} → {qv} · {}",
                s[r]
            );
        }
    }
}

fn matmul_i8_case(rng: &mut Rng, k: usize, n: usize, t: usize) {
    let mut xq: Vec<i8> = (0..t * k).map(|_| rng.range(0, 255) as u8 as i8).collect();
    if t * k > 2 {
        xq[0] = -128;
        xq[1] = 127;
    }
    let mut xs: Vec<f32> = (0..t).map(|_| 127.0 / (rng.unit().abs() + 0.01)).collect();
    let w = rng.values(n * k);
    let (mut wq, mut ws) = matmul_i8::quantize_rows(&w, k);
    let mut want = vec![0f32; t * n];
    for ti in 0..t {
        for r in 0..n {
            let acc: i64 = (0..k)
                .map(|c| i64::from(xq[ti * k + c]) * (i64::from(wq[r * k + c]) - 128))
                .sum();
            want[ti * n + r] = acc as i32 as f32 / xs[ti] * ws[r];
        }
    }
    let (_m, f) = compile(KernelKind::MatmulI8(MatmulI8Params {
        k: k as u64,
        n: n as u64,
    }));
    let mut out = vec![f32::from_bits(0x7fc0_cafe); t * n + 3];
    let bufs = [
        xq.as_mut_ptr().cast::<u8>(),
        xs.as_mut_ptr().cast::<u8>(),
        wq.as_mut_ptr(),
        ws.as_mut_ptr().cast::<u8>(),
        out.as_mut_ptr().cast::<u8>(),
    ];
    let ranges = splits(rng, n);
    let owner = |i: usize| Some(i % n).filter(|_| i < t * n);
    launch(
        f,
        &bufs,
        [t as i64, 0],
        n,
        &ranges,
        &[Watch {
            data: out.as_ptr(),
            len: out.len(),
            owner: &owner,
        }],
    );
    assert_bits(
        &format!("matmul_i8 k {k} n {n} T {t}"),
        &out[..t * n],
        &want,
    );
}

#[test]
fn matmul_i8_matches_reference_bitwise() {
    let mut rng = Rng(5);
    for &(k, n, t) in SHAPES {
        matmul_i8_case(&mut rng, k, n, t);
    }
    for _ in 0..60 {
        let opts = [1, 16, 255, 2560, rng.range(1, 40), rng.range(1, 600)];
        let k = rng.pick(&opts);
        let n = rng.range(1, 40);
        let opts = [1, 2, 37, rng.range(1, 6)];
        let t = rng.pick(&opts);
        matmul_i8_case(&mut rng, k, n, t);
    }
}

#[test]
fn matmul_i8_extreme_values_stay_exact() {
    // Every product at its largest magnitude: 127·128·k must not wrap the result.
    let (k, n, t) = (4096usize, 3usize, 2usize);
    let mut xq = vec![-128i8; t * k];
    xq[k..].iter_mut().for_each(|x| *x = 127);
    let mut xs = vec![1f32; t];
    let mut wq = vec![1u8; n * k]; // q = −127
    wq[k..2 * k].iter_mut().for_each(|b| *b = 255); // q = 127
    let mut ws = vec![1f32; n];
    let mut out = vec![0f32; t * n];
    let (_m, f) = compile(KernelKind::MatmulI8(MatmulI8Params {
        k: k as u64,
        n: n as u64,
    }));
    let bufs = [
        xq.as_mut_ptr().cast::<u8>(),
        xs.as_mut_ptr().cast::<u8>(),
        wq.as_mut_ptr(),
        ws.as_mut_ptr().cast::<u8>(),
        out.as_mut_ptr().cast::<u8>(),
    ];
    // SAFETY: buffers as documented for MatmulI8 with T = 2.
    unsafe { f(bufs.as_ptr(), [t as i64, 0].as_ptr(), 0, n as i64) };
    let big = (127 * 128 * k) as f32;
    let small = (127 * 127 * k) as f32;
    assert_eq!(out, vec![big, -big, big, -small, small, -small]);
}

// ---------------------------------------------------------------- MatmulNtHalf

fn round(x: f32, format: HalfFormat) -> f32 {
    match format {
        HalfFormat::F16 => half::f16::from_f32(x).to_f32(),
        HalfFormat::Bf16 => half::bf16::from_f32(x).to_f32(),
    }
}

fn matmul_half_case(rng: &mut Rng, k: usize, n: usize, t: usize, format: HalfFormat) -> f64 {
    let mut x = rng.values(t * k);
    let mut w = rng.values(n * k);
    // Subnormal f16 values and signed zeros.
    if n * k > 4 {
        w[0] = 3.0e-6;
        w[1] = -5.9e-8;
        w[2] = -0.0;
        w[3] = 65504.0;
    }
    let mut wl = matmul_half::layout(&w, k, format).expect("in range");
    let want: Vec<f64> = (0..t * n)
        .map(|i| {
            let (ti, r) = (i / n, i % n);
            (0..k)
                .map(|c| f64::from(x[ti * k + c]) * f64::from(round(w[r * k + c], format)))
                .sum()
        })
        .collect();
    let (_m, f) = compile(KernelKind::MatmulNtHalf(MatmulNtHalfParams {
        k: k as u64,
        n: n as u64,
        format,
    }));
    let mut out = vec![f32::from_bits(0x7fc0_cafe); t * n + 3];
    let bufs = [
        x.as_mut_ptr().cast::<u8>(),
        wl.as_mut_ptr().cast::<u8>(),
        out.as_mut_ptr().cast::<u8>(),
    ];
    let ranges = splits(rng, n);
    let owner = |i: usize| Some(i % n).filter(|_| i < t * n);
    launch(
        f,
        &bufs,
        [t as i64, 0],
        n,
        &ranges,
        &[Watch {
            data: out.as_ptr(),
            len: out.len(),
            owner: &owner,
        }],
    );
    let max_ref = want.iter().fold(0f64, |m, &v| m.max(v.abs()));
    let max_err = out[..t * n]
        .iter()
        .zip(&want)
        .fold(0f64, |m, (&g, &r)| m.max((f64::from(g) - r).abs()));
    let ratio = if max_ref > 0.0 {
        max_err / max_ref
    } else {
        max_err
    };
    assert!(
        ratio <= TOLERANCE,
        "matmul_nt_half {format:?} k {k} n {n} T {t}: max error {max_err:e} vs max |out| {max_ref:e}"
    );
    ratio
}

#[test]
fn matmul_half_matches_reference_within_tolerance() {
    let mut rng = Rng(6);
    for format in [HalfFormat::F16, HalfFormat::Bf16] {
        let mut worst = 0f64;
        for &(k, n, t) in SHAPES {
            worst = worst.max(matmul_half_case(&mut rng, k, n, t, format));
        }
        for _ in 0..60 {
            let opts = [1, 8, 255, 2560, rng.range(1, 40), rng.range(1, 600)];
            let k = rng.pick(&opts);
            let n = rng.range(1, 40);
            let opts = [1, 2, 37, rng.range(1, 6)];
            let t = rng.pick(&opts);
            worst = worst.max(matmul_half_case(&mut rng, k, n, t, format));
        }
        println!(
            "matmul_nt_half {format:?}: worst max|err| / max|out| = {worst:e} (tolerance {TOLERANCE:e})"
        );
    }
}

#[test]
fn matmul_half_widens_every_value_exactly() {
    for format in [HalfFormat::F16, HalfFormat::Bf16] {
        widen_every_value(format);
    }
}

/// x = one-hot: the output is the widened weight itself, for every finite bit pattern of `format`
/// (at every position of a group of eight and in the tail).
fn widen_every_value(format: HalfFormat) {
    let finite: Vec<u16> = (0..=u16::MAX)
        .filter(|&h| format.value(h).is_finite())
        .collect();
    let k = 11;
    let n = finite.len().div_ceil(k);
    let mut w = vec![0f32; n * k];
    for (i, &h) in finite.iter().enumerate() {
        w[i] = format.value(h);
    }
    let mut wl = matmul_half::layout(&w, k, format).expect("representable values");
    let (_m, f) = compile(KernelKind::MatmulNtHalf(MatmulNtHalfParams {
        k: k as u64,
        n: n as u64,
        format,
    }));
    for j in 0..k {
        let mut x = vec![0f32; k];
        x[j] = 1.0;
        let mut out = vec![0f32; n];
        let bufs = [
            x.as_mut_ptr().cast::<u8>(),
            wl.as_mut_ptr().cast::<u8>(),
            out.as_mut_ptr().cast::<u8>(),
        ];
        // SAFETY: buffers as documented for MatmulNtF16 with T = 1.
        unsafe { f(bufs.as_ptr(), [1i64, 0].as_ptr(), 0, n as i64) };
        let want: Vec<f32> = (0..n).map(|r| w[r * k + j] + 0.0).collect();
        let got: Vec<f32> = out.iter().map(|v| v + 0.0).collect();
        assert_bits(&format!("{format:?} element {j}"), &got, &want);
    }
}

#[test]
fn f16_layout_refuses_overflow() {
    assert!(matmul_half::layout(&[1.0, 70000.0], 2, HalfFormat::F16).is_none());
    assert!(matmul_half::layout(&[1.0, 65504.0], 2, HalfFormat::F16).is_some());
    assert!(matmul_half::layout(&[1.0, 70000.0], 2, HalfFormat::Bf16).is_some());
}

/// Single-thread timing of the lm_head of BitNet b1.58 2B-4T (n = 128256, k = 2560, T = 1) in each
/// storage, with the plain-bf16 `MatmulNt` as the baseline of the same run. Prints, asserts nothing.
/// Run with `cargo test --release -p bitnet-backends --test kernels_head -- --ignored --nocapture`.
#[test]
#[ignore = "allocates about 1 GB and takes seconds; run by hand in release"]
fn lm_head_timing() {
    let (n, k) = (128_256usize, 2560usize);
    let mut rng = Rng(4);
    let mut x = rng.values(k);
    let w: Vec<f32> = (0..n * k)
        .map(|i| f32::from_bits((((i % 251) as f32 - 125.0) / 128.0).to_bits() & 0xffff_0000))
        .collect();
    let mut out = vec![0f32; n];
    let time = |f: KernelFn, bufs: &[*mut u8]| {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            // SAFETY: buffers as documented for the kernel with T = 1.
            unsafe { f(bufs.as_ptr(), [1i64, 0].as_ptr(), 0, n as i64) };
            best = best.min(start.elapsed().as_secs_f64());
        }
        best
    };
    let mut w16: Vec<u16> = w.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
    let (_m0, f0) = compile(KernelKind::MatmulNt(MatmulNtParams {
        k: k as u64,
        n: n as u64,
        bf16: true,
    }));
    let xp = x.as_mut_ptr().cast::<u8>();
    let op = out.as_mut_ptr().cast::<u8>();
    let base = time(f0, &[xp, w16.as_mut_ptr().cast(), op]);
    drop(w16);
    let report = |name: &str, secs: f64, bytes: usize| {
        println!(
            "lm_head {name}: {:.1} ms, {:.1} GB/s of weights, {:.2}× the plain-bf16 MatmulNt ({:.1} ms)",
            secs * 1e3,
            bytes as f64 / secs / 1e9,
            base / secs,
            base * 1e3
        );
    };
    report("bf16 MatmulNt (baseline)", base, n * k * 2);
    for format in [HalfFormat::Bf16, HalfFormat::F16] {
        let mut wl = matmul_half::layout(&w, k, format).expect("in range");
        let (_m, f) = compile(KernelKind::MatmulNtHalf(MatmulNtHalfParams {
            k: k as u64,
            n: n as u64,
            format,
        }));
        let secs = time(f, &[xp, wl.as_mut_ptr().cast(), op]);
        report(&format!("{format:?} MatmulNtHalf"), secs, n * k * 2);
    }
    let (mut wq, mut ws) = matmul_i8::quantize_rows(&w, k);
    let mut xq: Vec<i8> = (0..k).map(|i| (i % 255) as i8).collect();
    let mut xs = vec![1f32];
    let (_m, f) = compile(KernelKind::MatmulI8(MatmulI8Params {
        k: k as u64,
        n: n as u64,
    }));
    let secs = time(
        f,
        &[
            xq.as_mut_ptr().cast(),
            xs.as_mut_ptr().cast(),
            wq.as_mut_ptr(),
            ws.as_mut_ptr().cast(),
            op,
        ],
    );
    report("int8 MatmulI8", secs, n * k);
}
