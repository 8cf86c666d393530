//! The layout of the `Rope` kernel's table (`rope::rope_table`) and a timing print of the `MatmulNt`
//! CPU kernel (ignored by default). The differential tests of `Embedding`, `Rope` and `MatmulNt`
//! are the harness's cases (`harness/`, run by `kernels_cpu.rs` and `kernels_cuda.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::Rng;

use bitnet_backends::cpu::jit::compile_kernels;
use bitnet_backends::cpu::kernels::rope::rope_table;
use bitnet_backends::kernel::{KernelKind, MatmulNtParams};
use bitnet_runtime::KernelFn;

fn compile(kind: KernelKind) -> (cranelift_jit::JITModule, KernelFn) {
    let (module, fns) = compile_kernels(std::slice::from_ref(&kind)).expect("compile");
    (module, fns[0])
}

#[test]
fn rope_table_layout() {
    let d = 8;
    let table = rope_table(3, &bitnet_ir::ops::rope::default_inv_freq(10000.0, d));
    assert_eq!(table.len(), 24);
    // Position 0: cos 0 = 1, sin 0 = 0.
    assert_eq!(&table[..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    // Position 2, i = 0: angle 2.
    assert_eq!(table[16], 2f32.cos());
    assert_eq!(table[20], 2f32.sin());
}

// ---------------------------------------------------------------- MatmulNt

/// Single-thread timing of the lm_head of BitNet b1.58 2B-4T (n = 128256, k = 2560, T = 1; 1.3 GB
/// of f32 weights). Prints, asserts nothing. Run with
/// `cargo test --release -p bitnet-backends --test kernels_misc -- --ignored --nocapture`.
#[test]
#[ignore = "allocates 1.3 GB and takes seconds; run by hand in release"]
fn matmul_nt_lm_head_timing() {
    let (n, k) = (128_256usize, 2560usize);
    let mut rng = Rng(4);
    let mut x = rng.values(k);
    let mut w: Vec<f32> = (0..n * k)
        .map(|i| ((i % 251) as f32 - 125.0) / 128.0)
        .collect();
    let mut out = vec![0f32; n];
    let (_m, f) = compile(KernelKind::MatmulNt(MatmulNtParams {
        k: k as u64,
        n: n as u64,
        bf16: false,
    }));
    let bufs = [
        x.as_mut_ptr().cast::<u8>(),
        w.as_mut_ptr().cast::<u8>(),
        out.as_mut_ptr().cast::<u8>(),
    ];
    let scalars = [1i64, 0];
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let start = std::time::Instant::now();
        // SAFETY: buffers as documented for MatmulNt with T = 1.
        unsafe { f(bufs.as_ptr(), scalars.as_ptr(), 0, n as i64) };
        best = best.min(start.elapsed().as_secs_f64());
    }
    let bytes = (n * k * 4) as f64;
    println!(
        "matmul_nt n {n} k {k} T 1, one thread: {:.1} ms, {:.2} GB/s of weights (checksum {})",
        best * 1e3,
        bytes / best / 1e9,
        out.iter().map(|&v| f64::from(v)).sum::<f64>()
    );
}
