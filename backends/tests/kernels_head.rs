//! Properties of the lm_head kernels' weights and kernels beyond the harness's differential cases
//! (`harness/matmul.rs`): `matmul_i8::quantize_rows` rounds to the nearest step, `MatmulNtHalf`
//! widens every finite f16 and bf16 value exactly, the f16 layout refuses values out of range; and
//! a timing print of the lm_head in each storage (ignored by default).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_backends::cpu::jit::compile_kernels;
use bitnet_backends::cpu::kernels::matmul_half::{self, HalfFormat};
use bitnet_backends::cpu::kernels::matmul_i8;
use bitnet_backends::kernel::{KernelKind, MatmulI8Params, MatmulNtHalfParams, MatmulNtParams};
use bitnet_runtime::KernelFn;
use support::{Rng, assert_bits};

fn compile(kind: KernelKind) -> (cranelift_jit::JITModule, KernelFn) {
    let (module, fns) = compile_kernels(std::slice::from_ref(&kind)).expect("compile");
    (module, fns[0])
}

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

// ---------------------------------------------------------------- MatmulNtHalf

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
