//! Differential tests of the `Embedding`, `Rope` and `MatmulNt` CPU kernels against the reference
//! interpreter (`OpKind::eval`): each kernel is JIT-compiled, called through the `KernelFn` ABI on
//! 1–3 uneven row ranges in shuffled order (as the thread pool splits a launch), and compared with
//! the interpreter. Embedding and Rope must be bit-identical; MatmulNt sums in f32 and must be within
//! `MATMUL_TOLERANCE` × max|reference| of the interpreter's exactly rounded f64 sum. After every
//! partial call, the rows not yet computed must still hold what they held before (a kernel writes
//! only its rows).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Rng, Watch, assert_bits, launch, splits};

use bitnet_backends::cpu::jit::compile_kernels;
use bitnet_backends::cpu::kernels::matmul_half::bf16_layout_exact;
use bitnet_backends::cpu::kernels::rope::rope_table;
use bitnet_backends::kernel::{EmbeddingParams, KernelKind, MatmulNtParams, RopeParams};
use bitnet_ir::ops::EvalCtx;
use bitnet_ir::{Attr, Attrs, Data, ElemType, NoWeights, OpKind, Tensor};
use bitnet_runtime::KernelFn;

/// MatmulNt's tolerance: max |kernel − interpreter| ≤ 1e-5 · max |interpreter| per case. An f32 sum
/// of k/16 terms per lane has a relative error around 1e-7·√k of the sum of |products|; with random
/// data that stays two orders of magnitude below this bound (the test prints the worst ratio).
const MATMUL_TOLERANCE: f64 = 1e-5;

fn eval(op: OpKind, inputs: &[&Tensor], attrs: &Attrs, shape: Vec<usize>) -> Tensor {
    let cx = EvalCtx {
        inputs,
        attrs,
        result_shapes: &[shape],
        result_elems: &[ElemType::F32],
        weights: &NoWeights,
    };
    op.eval(&cx).expect("reference eval").remove(0)
}

fn f32s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        Data::F32(v) => v.clone(),
        other => panic!("expected f32 data, found {other:?}"),
    }
}

fn compile(kind: KernelKind) -> (cranelift_jit::JITModule, KernelFn) {
    let (module, fns) = compile_kernels(std::slice::from_ref(&kind)).expect("compile");
    (module, fns[0])
}

// ---------------------------------------------------------------- Embedding

/// With `bf16`, the table holds random bf16 bit patterns (NaN payloads included) and the kernel
/// reads them in `matmul_half::layout` order, as the lowering stores an exactly-bf16 table.
fn embedding_case(rng: &mut Rng, vocab: usize, hidden: usize, t: usize, bf16: bool) {
    // Random bit patterns (NaN payloads included): a copy must move bits.
    let table: Vec<f32> = (0..vocab * hidden)
        .map(|_| {
            let bits = rng.next() as u32;
            f32::from_bits(if bf16 { bits & 0xffff_0000 } else { bits })
        })
        .collect();
    let mut ids: Vec<i64> = (0..t).map(|_| rng.range(0, vocab - 1) as i64).collect();
    if t > 1 {
        ids[0] = 0;
        ids[t - 1] = vocab as i64 - 1;
    }
    let tt = Tensor::new(vec![vocab, hidden], Data::F32(table.clone())).expect("table");
    let it = Tensor::new(vec![t], Data::I64(ids.clone())).expect("ids");
    let want = eval(
        OpKind::Embedding,
        &[&tt, &it],
        &Attrs::new(),
        vec![t, hidden],
    );
    let want = match &want.data {
        Data::F32(v) => v.clone(),
        _ => panic!("f32"),
    };
    let (_m, f) = compile(KernelKind::Embedding(EmbeddingParams {
        vocab: vocab as u64,
        hidden: hidden as u64,
        bf16,
    }));
    // One spare row after the output catches overruns.
    let mut out = vec![f32::from_bits(0x7fc0_dead); (t + 1) * hidden];
    let mut table: Vec<u8> = if bf16 {
        bf16_layout_exact(&table, hidden)
            .expect("exact bf16")
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect()
    } else {
        table.iter().flat_map(|x| x.to_le_bytes()).collect()
    };
    let bufs = [
        table.as_mut_ptr(),
        ids.as_mut_ptr().cast::<u8>(),
        out.as_mut_ptr().cast::<u8>(),
    ];
    let ranges = splits(rng, t);
    let owner = |i: usize| Some(i / hidden).filter(|&r| r < t);
    launch(
        f,
        &bufs,
        [t as i64, 0],
        t,
        &ranges,
        &[Watch {
            data: out.as_ptr(),
            len: out.len(),
            owner: &owner,
        }],
    );
    let got: Vec<u32> = out[..t * hidden].iter().map(|x| x.to_bits()).collect();
    let want: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
    assert_eq!(
        got, want,
        "embedding vocab {vocab} hidden {hidden} T {t} bf16 {bf16}"
    );
}

#[test]
fn embedding_matches_interpreter() {
    let mut rng = Rng(1);
    for &(vocab, hidden, t) in &[
        (1, 1, 1),
        (3, 2, 2),
        (5, 3, 37),
        (7, 4, 1),
        (2, 15, 2),
        (2, 16, 37),
        (9, 17, 3),
        (4, 63, 2),
        (4, 64, 5),
        (4, 65, 1),
        (3, 100, 37),
        (6, 2560, 2),
    ] {
        for bf16 in [false, true] {
            embedding_case(&mut rng, vocab, hidden, t, bf16);
        }
    }
    for i in 0..240 {
        let vocab = rng.range(1, 40);
        let opts = [rng.range(1, 80), rng.range(1, 300), 2560];
        let hidden = rng.pick(&opts);
        let opts = [1, 2, 37, rng.range(1, 12)];
        let t = rng.pick(&opts);
        embedding_case(&mut rng, vocab, hidden, t, i % 2 == 1);
    }
}

// ---------------------------------------------------------------- Rope

fn rope_case(rng: &mut Rng, heads: usize, d: usize, t: usize, pos: usize, theta: f64) {
    let width = heads * d;
    let context = pos + t + rng.range(0, 5);
    let x = rng.values(t * width);
    let xt = Tensor::new(vec![t, width], Data::F32(x.clone())).expect("x");
    let pt = Tensor::new(vec![], Data::I64(vec![pos as i64])).expect("pos");
    let attrs = Attrs::new()
        .with("head_dim", Attr::Int(d as i64))
        .with("theta", Attr::Float(theta));
    let want = f32s(&eval(OpKind::Rope, &[&xt, &pt], &attrs, vec![t, width]));
    let mut table = rope_table(context, d, theta as f32);
    assert_eq!(table.len(), context * d);
    let (_m, f) = compile(KernelKind::Rope(RopeParams {
        width: width as u64,
        head_dim: d as u64,
    }));
    let in_place = rng.range(0, 3) == 0;
    let mut x = x;
    let mut out = vec![f32::from_bits(0x7fc0_beef); (t + 1) * width];
    let out_ptr = if in_place {
        x.as_mut_ptr()
    } else {
        out.as_mut_ptr()
    };
    let bufs = [
        x.as_mut_ptr().cast::<u8>(),
        table.as_mut_ptr().cast::<u8>(),
        out_ptr.cast::<u8>(),
    ];
    let ranges = splits(rng, t);
    let owner = |i: usize| Some(i / width).filter(|&r| r < t);
    let (watched, len) = if in_place {
        (x.as_ptr(), x.len())
    } else {
        (out.as_ptr(), out.len())
    };
    launch(
        f,
        &bufs,
        [t as i64, pos as i64],
        t,
        &ranges,
        &[Watch {
            data: watched,
            len,
            owner: &owner,
        }],
    );
    let got = if in_place { &x[..] } else { &out[..t * width] };
    assert_bits(
        &format!("rope heads {heads} d {d} T {t} pos {pos} theta {theta} in place {in_place}"),
        got,
        &want,
    );
}

#[test]
fn rope_matches_interpreter() {
    let mut rng = Rng(2);
    for &(heads, d, t, pos) in &[
        (1, 2, 1, 0),
        (2, 4, 2, 0),
        (3, 6, 37, 0),
        (1, 8, 1, 5),
        (4, 10, 2, 100),
        (20, 128, 37, 0),
        (20, 128, 1, 4000),
        (5, 64, 37, 1000),
        (2, 32, 2, 3),
        (3, 18, 1, 77),
    ] {
        rope_case(&mut rng, heads, d, t, pos, 500000.0);
        rope_case(&mut rng, heads, d, t, pos, 10000.0);
    }
    for _ in 0..120 {
        let opts = [
            2,
            4,
            6,
            8,
            10,
            12,
            18,
            32,
            34,
            64,
            128,
            2 * rng.range(1, 70),
        ];
        let d = rng.pick(&opts);
        let heads = rng.range(1, 20);
        let opts = [1, 2, 37, rng.range(1, 10)];
        let t = rng.pick(&opts);
        let opts = [0, rng.range(1, 50), rng.range(0, 5000)];
        let pos = rng.pick(&opts);
        let opts = [10000.0, 500000.0, 1.0 + rng.unit().abs() as f64 * 1e6];
        let theta = rng.pick(&opts);
        rope_case(&mut rng, heads, d, t, pos, theta);
    }
}

#[test]
fn rope_table_layout() {
    let d = 8;
    let table = rope_table(3, d, 10000.0);
    assert_eq!(table.len(), 24);
    // Position 0: cos 0 = 1, sin 0 = 0.
    assert_eq!(&table[..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    // Position 2, i = 0: angle 2.
    assert_eq!(table[16], 2f32.cos());
    assert_eq!(table[20], 2f32.sin());
}

// ---------------------------------------------------------------- MatmulNt

/// Runs one case (weights stored as f32, or as bf16 when `bf16`); returns max |error| / max |reference|.
fn matmul_case(rng: &mut Rng, k: usize, n: usize, t: usize, bf16: bool) -> f64 {
    let x = rng.values(t * k);
    let mut w = rng.values(n * k);
    if bf16 {
        // Exactly bf16 values, so the kernel's widened weights equal the interpreter's.
        for v in &mut w {
            *v = f32::from_bits(v.to_bits() & 0xffff_0000);
        }
    }
    let mut wt = vec![0f32; k * n];
    for r in 0..n {
        for c in 0..k {
            wt[c * n + r] = w[r * k + c];
        }
    }
    let xt = Tensor::new(vec![t, k], Data::F32(x.clone())).expect("x");
    let wtt = Tensor::new(vec![k, n], Data::F32(wt)).expect("w");
    let want = f32s(&eval(
        OpKind::MatMul,
        &[&xt, &wtt],
        &Attrs::new(),
        vec![t, n],
    ));
    let (_m, f) = compile(KernelKind::MatmulNt(MatmulNtParams {
        k: k as u64,
        n: n as u64,
        bf16,
    }));
    let (mut x, mut w) = (x, w);
    let mut w16: Vec<u16> = w.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
    let mut out = vec![f32::from_bits(0x7fc0_cafe); t * n + 3];
    let wptr = if bf16 {
        w16.as_mut_ptr().cast::<u8>()
    } else {
        w.as_mut_ptr().cast::<u8>()
    };
    let bufs = [
        x.as_mut_ptr().cast::<u8>(),
        wptr,
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
    let max_ref = want.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
    let max_err = out[..t * n].iter().zip(&want).fold(0f64, |m, (&g, &r)| {
        m.max((f64::from(g) - f64::from(r)).abs())
    });
    let ratio = if max_ref > 0.0 {
        max_err / max_ref
    } else {
        max_err
    };
    assert!(
        ratio <= MATMUL_TOLERANCE,
        "matmul_nt k {k} n {n} T {t}: max error {max_err:e} vs max |out| {max_ref:e}"
    );
    ratio
}

#[test]
fn matmul_nt_matches_interpreter_within_tolerance() {
    let mut rng = Rng(3);
    let mut worst = 0f64;
    for &(k, n, t) in &[
        (1, 1, 1),
        (1, 7, 2),
        (3, 5, 37),
        (4, 3, 1),
        (15, 2, 2),
        (16, 9, 1),
        (17, 4, 3),
        (255, 33, 2),
        (256, 8, 37),
        (2560, 19, 1),
        (2560, 5, 37),
    ] {
        for bf16 in [false, true] {
            worst = worst.max(matmul_case(&mut rng, k, n, t, bf16));
        }
    }
    for _ in 0..120 {
        let opts = [1, 3, 255, 2560, rng.range(1, 40), rng.range(1, 600)];
        let k = rng.pick(&opts);
        let n = rng.range(1, 40);
        let opts = [1, 2, 37, rng.range(1, 6)];
        let t = rng.pick(&opts);
        let bf16 = rng.range(0, 2) == 1;
        worst = worst.max(matmul_case(&mut rng, k, n, t, bf16));
    }
    println!("matmul_nt: worst max|err| / max|out| = {worst:e} (tolerance {MATMUL_TOLERANCE:e})");
}

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
