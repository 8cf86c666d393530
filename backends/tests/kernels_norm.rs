//! Differential tests of the JIT-compiled norm kernels (`RmsNormQuant`, `ActQuant`, `RmsNorm`) and
//! the elementwise `Relu2Mul` against the reference interpreter's ops: bit-exact (a NaN result must be
//! a NaN; its payload is not compared), row ranges split over several calls as the thread pool does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_backends::cpu::jit;
use bitnet_backends::kernel::{
    ActQuantParams, KernelKind, Relu2MulParams, RmsNormParams, RmsNormQuantParams,
};
use bitnet_ir::ops::{EvalCtx, OpKind};
use bitnet_ir::{Attr, Attrs, Data, ElemType, NoWeights, Tensor};
use bitnet_runtime::KernelFn;
use cranelift_jit::JITModule;

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [-1, 1).
    fn signed(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Splits `0..rows` into 2–3 uneven consecutive ranges (some possibly empty).
fn split(rows: usize, rng: &mut Rng) -> Vec<(usize, usize)> {
    let mut cuts = vec![0, rows];
    for _ in 0..1 + rng.below(2) {
        cuts.push(rng.below(rows + 1));
    }
    cuts.sort_unstable();
    cuts.windows(2).map(|w| (w[0], w[1])).collect()
}

const T_SIZES: [usize; 3] = [1, 2, 37];
const K_SIZES: [usize; 8] = [1, 15, 63, 64, 65, 200, 256, 2560];

/// A row of one of several kinds: plain random values at a random scale, zeros, rounding ties
/// (after act_quant's scaling by 1 when the row's absmax is 127), specials (NaN, ±inf, subnormals,
/// huge values), or tiny values (below the quantizer's floor).
fn row(rng: &mut Rng, k: usize, kind: usize) -> Vec<f32> {
    match kind {
        0 => vec![0.0; k],
        1 => (0..k)
            .map(|i| {
                if i == k / 2 {
                    127.0
                } else {
                    (rng.below(255) as f32 - 127.0) + 0.5 * (rng.below(2) as f32)
                }
                .clamp(-127.0, 127.0)
            })
            .collect(),
        2 => (0..k)
            .map(|_| match rng.below(10) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => f32::from_bits(1 + rng.below(1000) as u32),
                4 => 3e38 * rng.signed(),
                5 => -0.0,
                _ => rng.signed(),
            })
            .collect(),
        3 => (0..k).map(|_| 1e-7 * rng.signed()).collect(),
        _ => {
            let scale = [1e-3, 1.0, 3.0, 100.0, 1e20][rng.below(5)];
            (0..k).map(|_| scale * rng.signed()).collect()
        }
    }
}

/// `t` rows of `k`: mostly plain random rows, with every other kind mixed in.
fn rows(rng: &mut Rng, t: usize, k: usize) -> Vec<f32> {
    (0..t)
        .flat_map(|_| {
            let kind = if rng.below(2) == 0 { 4 } else { rng.below(5) };
            row(rng, k, kind)
        })
        .collect()
}

fn eval(
    op: OpKind,
    inputs: &[&Tensor],
    attrs: &Attrs,
    results: &[(Vec<usize>, ElemType)],
) -> Vec<Data> {
    let shapes: Vec<Vec<usize>> = results.iter().map(|r| r.0.clone()).collect();
    let elems: Vec<ElemType> = results.iter().map(|r| r.1).collect();
    let cx = EvalCtx {
        inputs,
        attrs,
        result_shapes: &shapes,
        result_elems: &elems,
        weights: &NoWeights,
    };
    op.eval(&cx).unwrap().into_iter().map(|t| t.data).collect()
}

fn f32s(d: &Data) -> Vec<f32> {
    match d {
        Data::F32(v) => v.clone(),
        d => panic!("expected f32, got {d:?}"),
    }
}

fn i8s(d: &Data) -> Vec<i8> {
    match d {
        Data::I8(v) => v.clone(),
        d => panic!("expected i8, got {d:?}"),
    }
}

/// Equal bits, or both NaN.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// A compiled kernel and the module that owns its code.
struct Compiled {
    _module: JITModule,
    f: KernelFn,
}

fn compile(kind: &KernelKind) -> Compiled {
    let (module, fns) = jit::compile_kernels(std::slice::from_ref(kind)).unwrap();
    Compiled {
        _module: module,
        f: fns[0],
    }
}

/// A kernel buffer: bytes, and how many bytes one row (token) of it has (0: not per row).
struct Buf {
    bytes: Vec<u8>,
    row_bytes: usize,
    output: bool,
}

fn input<T: Copy>(v: &[T]) -> Buf {
    let bytes =
        // SAFETY: plain-old-data values viewed as bytes.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
            .to_vec();
    Buf {
        bytes,
        row_bytes: 0,
        output: false,
    }
}

const SENTINEL: u8 = 0xA5;

fn output(rows: usize, row_bytes: usize) -> Buf {
    Buf {
        // One guard row past the end.
        bytes: vec![SENTINEL; (rows + 1) * row_bytes],
        row_bytes,
        output: true,
    }
}

/// Runs the kernel on `t` rows over `ranges` (one call each; buffers copied to 16-byte-misaligned
/// addresses to check the kernels assume no alignment), checking after each call that no output
/// byte outside the rows computed so far changed. Returns the buffers.
fn run(f: KernelFn, mut bufs: Vec<Buf>, t: usize, ranges: &[(usize, usize)]) -> Vec<Buf> {
    // Misalign every buffer by 4 bytes within a 16-byte-aligned allocation.
    let mut storage: Vec<Vec<u128>> = bufs
        .iter()
        .map(|b| vec![0u128; b.bytes.len() / 16 + 2])
        .collect();
    let ptrs: Vec<*mut u8> = storage
        .iter_mut()
        .zip(&bufs)
        .map(|(s, b)| {
            // SAFETY: the allocation has 16 spare bytes past the buffer.
            let p = unsafe { s.as_mut_ptr().cast::<u8>().add(4) };
            // SAFETY: `p` has room for the buffer.
            unsafe { std::ptr::copy_nonoverlapping(b.bytes.as_ptr(), p, b.bytes.len()) };
            p
        })
        .collect();
    let scalars = [t as i64, 0];
    let mut done = vec![false; t];
    for &(a, z) in ranges {
        // SAFETY: the buffers have the kernel's documented shapes and outlive the call.
        unsafe { f(ptrs.as_ptr(), scalars.as_ptr(), a as i64, z as i64) };
        done[a..z].iter_mut().for_each(|d| *d = true);
        for (b, &p) in bufs.iter().zip(&ptrs) {
            if !b.output {
                continue;
            }
            // SAFETY: `p` holds `b.bytes.len()` bytes.
            let now = unsafe { std::slice::from_raw_parts(p, b.bytes.len()) };
            for (i, &v) in now.iter().enumerate() {
                let r = i / b.row_bytes;
                if r >= t || !done[r] {
                    assert_eq!(
                        v, SENTINEL,
                        "byte {i} (row {r}) written outside the rows {ranges:?}"
                    );
                }
            }
        }
    }
    for (b, &p) in bufs.iter_mut().zip(&ptrs) {
        // SAFETY: `p` holds `b.bytes.len()` bytes.
        b.bytes = unsafe { std::slice::from_raw_parts(p, b.bytes.len()) }.to_vec();
        if b.output {
            b.bytes.truncate(t * b.row_bytes);
        }
    }
    bufs
}

fn as_f32(b: &Buf) -> Vec<f32> {
    b.bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn as_i8(b: &Buf) -> Vec<i8> {
    b.bytes.iter().map(|&v| v as i8).collect()
}

fn assert_f32s(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            same(*g, *w),
            "{what}: element {i} is {g:e} ({:#x}), reference {w:e} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// One quantizer check (`ActQuant`, or `RmsNormQuant` when `w` is given).
#[allow(clippy::too_many_arguments)]
fn check_quant(
    rng: &mut Rng,
    t: usize,
    k: usize,
    x: &[f32],
    w: Option<&[f32]>,
    eps: f32,
    eps_norm: f32,
    reciprocal: bool,
) {
    let xt = Tensor::new(vec![t, k], Data::F32(x.to_vec())).unwrap();
    let results = [(vec![t, k], ElemType::I8), (vec![t, 1], ElemType::F32)];
    let mut attrs = Attrs::new().with("eps", Attr::Float(f64::from(eps)));
    if reciprocal {
        attrs = attrs.with("reciprocal", Attr::Bool(true));
    }
    let (want, kind, mut bufs) = match w {
        Some(w) => {
            let wt = Tensor::new(vec![k], Data::F32(w.to_vec())).unwrap();
            let attrs = attrs.with("eps_norm", Attr::Float(f64::from(eps_norm)));
            let want = eval(OpKind::RmsNormQuant, &[&xt, &wt], &attrs, &results);
            let kind = KernelKind::RmsNormQuant(RmsNormQuantParams {
                k: k as u64,
                eps_norm_bits: eps_norm.to_bits(),
                eps_bits: eps.to_bits(),
                reciprocal,
            });
            (want, kind, vec![input(x), input(w)])
        }
        None => {
            let want = eval(OpKind::ActQuant, &[&xt], &attrs, &results);
            let kind = KernelKind::ActQuant(ActQuantParams {
                k: k as u64,
                eps_bits: eps.to_bits(),
                reciprocal,
            });
            (want, kind, vec![input(x)])
        }
    };
    bufs.push(output(t, k));
    bufs.push(output(t, 4));
    let compiled = compile(&kind);
    let ranges = split(t, rng);
    let got = run(compiled.f, bufs, t, &ranges);
    let n = got.len();
    let what = format!("{kind:?} reciprocal={reciprocal} T={t} ranges={ranges:?}");
    assert_eq!(as_i8(&got[n - 2]), i8s(&want[0]), "{what}: q");
    assert_f32s(&format!("{what}: s"), &as_f32(&got[n - 1]), &f32s(&want[1]));
}

#[test]
fn act_quant_matches_the_reference() {
    let mut rng = Rng(11);
    let mut cases = 0;
    for &t in &T_SIZES {
        for &k in &K_SIZES {
            for reciprocal in [false, true] {
                let x = rows(&mut rng, t, k);
                check_quant(&mut rng, t, k, &x, None, 1e-5, 0.0, reciprocal);
                cases += 1;
            }
        }
    }
    for _ in 0..120 {
        let (t, k) = (1 + rng.below(8), 1 + rng.below(300));
        let x = rows(&mut rng, t, k);
        let eps = [1e-5, 1e-6, 0.5, 1e3][rng.below(4)];
        let reciprocal = rng.below(4) == 0;
        check_quant(&mut rng, t, k, &x, None, eps, 0.0, reciprocal);
        cases += 1;
    }
    assert!(cases >= 100);
}

#[test]
fn act_quant_rounds_ties_to_even() {
    // absmax 127: the scale is exactly 1, so every x.5 value is a rounding tie.
    let mut rng = Rng(12);
    let k = 260;
    let mut x: Vec<f32> = (0..k).map(|i| (i as f32 - 128.0) / 2.0).collect();
    x[0] = 127.0;
    x[1] = -127.5;
    x[2] = 126.5;
    x[3] = -0.5;
    x[4] = 0.5;
    x[5] = 1.5;
    x[6] = 2.5;
    check_quant(&mut rng, 1, k, &x, None, 1e-5, 0.0, false);
}

#[test]
fn rms_norm_quant_matches_the_reference() {
    let mut rng = Rng(13);
    for &t in &T_SIZES {
        for &k in &K_SIZES {
            for reciprocal in [false, true] {
                let x = rows(&mut rng, t, k);
                let w: Vec<f32> = (0..k).map(|_| 2.0 * rng.signed()).collect();
                check_quant(&mut rng, t, k, &x, Some(&w), 1e-5, 1e-5, reciprocal);
            }
        }
    }
    for _ in 0..120 {
        let (t, k) = (1 + rng.below(8), 1 + rng.below(300));
        let x = rows(&mut rng, t, k);
        let w: Vec<f32> = (0..k)
            .map(|_| {
                if rng.below(10) == 0 {
                    0.0
                } else {
                    2.0 * rng.signed()
                }
            })
            .collect();
        let eps = [1e-5, 1e-6, 0.5][rng.below(3)];
        let eps_norm = [1e-5, 1e-6, 0.0, 2.0][rng.below(4)];
        let reciprocal = rng.below(4) == 0;
        check_quant(&mut rng, t, k, &x, Some(&w), eps, eps_norm, reciprocal);
    }
}

fn check_rms_norm(rng: &mut Rng, t: usize, k: usize, x: &[f32], w: &[f32], eps: f32) {
    let xt = Tensor::new(vec![t, k], Data::F32(x.to_vec())).unwrap();
    let wt = Tensor::new(vec![k], Data::F32(w.to_vec())).unwrap();
    let attrs = Attrs::new().with("eps", Attr::Float(f64::from(eps)));
    let want = eval(
        OpKind::RmsNorm,
        &[&xt, &wt],
        &attrs,
        &[(vec![t, k], ElemType::F32)],
    );
    let kind = KernelKind::RmsNorm(RmsNormParams {
        k: k as u64,
        eps_bits: eps.to_bits(),
    });
    let compiled = compile(&kind);
    let ranges = split(t, rng);
    let got = run(
        compiled.f,
        vec![input(x), input(w), output(t, 4 * k)],
        t,
        &ranges,
    );
    assert_f32s(
        &format!("{kind:?} T={t} ranges={ranges:?}"),
        &as_f32(&got[2]),
        &f32s(&want[0]),
    );
}

#[test]
fn rms_norm_matches_the_reference() {
    let mut rng = Rng(14);
    for &t in &T_SIZES {
        for &k in &K_SIZES {
            let x = rows(&mut rng, t, k);
            let w: Vec<f32> = (0..k).map(|_| 2.0 * rng.signed()).collect();
            check_rms_norm(&mut rng, t, k, &x, &w, 1e-5);
        }
    }
    for _ in 0..120 {
        let (t, k) = (1 + rng.below(8), 1 + rng.below(300));
        let x = rows(&mut rng, t, k);
        let w: Vec<f32> = (0..k).map(|_| 2.0 * rng.signed()).collect();
        let eps = [1e-5, 1e-6, 0.0, 2.0][rng.below(4)];
        check_rms_norm(&mut rng, t, k, &x, &w, eps);
    }
}

fn check_relu2_mul(rng: &mut Rng, t: usize, n: usize, g: &[f32], u: &[f32]) {
    let gt = Tensor::new(vec![t, n], Data::F32(g.to_vec())).unwrap();
    let ut = Tensor::new(vec![t, n], Data::F32(u.to_vec())).unwrap();
    let want = eval(
        OpKind::Relu2Mul,
        &[&gt, &ut],
        &Attrs::new(),
        &[(vec![t, n], ElemType::F32)],
    );
    let kind = KernelKind::Relu2Mul(Relu2MulParams { n: n as u64 });
    let compiled = compile(&kind);
    let ranges = split(t, rng);
    let got = run(
        compiled.f,
        vec![input(g), input(u), output(t, 4 * n)],
        t,
        &ranges,
    );
    assert_f32s(
        &format!("{kind:?} T={t} ranges={ranges:?}"),
        &as_f32(&got[2]),
        &f32s(&want[0]),
    );
}

#[test]
fn relu2_mul_matches_the_reference() {
    let mut rng = Rng(15);
    for &t in &T_SIZES {
        for &n in &K_SIZES {
            let g = rows(&mut rng, t, n);
            let u = rows(&mut rng, t, n);
            check_relu2_mul(&mut rng, t, n, &g, &u);
        }
    }
    for _ in 0..120 {
        let (t, n) = (1 + rng.below(8), 1 + rng.below(300));
        let g = rows(&mut rng, t, n);
        let u = rows(&mut rng, t, n);
        check_relu2_mul(&mut rng, t, n, &g, &u);
    }
}

#[test]
fn relu2_mul_special_values() {
    // NaN gates stay NaN (a negative NaN included), -0 squares to +0, -inf gives 0·u, overflow to
    // inf, and subnormal products.
    let mut rng = Rng(16);
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7FA0_0001),
        -0.0,
        0.0,
        f32::NEG_INFINITY,
        f32::INFINITY,
        -1.0,
        1e20,
        1e-20,
        f32::from_bits(1),
        3.0,
    ];
    let mut g = Vec::new();
    let mut u = Vec::new();
    for &a in &specials {
        for &b in &specials {
            g.push(a);
            u.push(b);
        }
    }
    let n = g.len();
    check_relu2_mul(&mut rng, 1, n, &g, &u);
}

#[test]
fn in_place_outputs_match() {
    // The planner may give RmsNorm and Relu2Mul their input's buffer as output: every element is
    // read before the element at the same index is written.
    let mut rng = Rng(17);
    let (t, k) = (3, 203);
    let x = rows(&mut rng, t, k);
    let w: Vec<f32> = (0..k).map(|_| rng.signed()).collect();
    let xt = Tensor::new(vec![t, k], Data::F32(x.clone())).unwrap();
    let wt = Tensor::new(vec![k], Data::F32(w.clone())).unwrap();
    let attrs = Attrs::new().with("eps", Attr::Float(1e-5));
    let want = eval(
        OpKind::RmsNorm,
        &[&xt, &wt],
        &attrs,
        &[(vec![t, k], ElemType::F32)],
    );
    let kind = KernelKind::RmsNorm(RmsNormParams {
        k: k as u64,
        eps_bits: 1e-5f32.to_bits(),
    });
    let compiled = compile(&kind);
    let mut xb = x.clone();
    let mut wb = w.clone();
    let bufs: Vec<*mut u8> = vec![
        xb.as_mut_ptr().cast(),
        wb.as_mut_ptr().cast(),
        xb.as_mut_ptr().cast(),
    ];
    // SAFETY: the buffers have the kernel's shapes and outlive the call.
    unsafe { (compiled.f)(bufs.as_ptr(), [t as i64, 0].as_ptr(), 0, t as i64) };
    assert_f32s("in-place rms_norm", &xb, &f32s(&want[0]));

    let u = rows(&mut rng, t, k);
    let gt = Tensor::new(vec![t, k], Data::F32(x.clone())).unwrap();
    let ut = Tensor::new(vec![t, k], Data::F32(u.clone())).unwrap();
    let want = eval(
        OpKind::Relu2Mul,
        &[&gt, &ut],
        &Attrs::new(),
        &[(vec![t, k], ElemType::F32)],
    );
    let compiled = compile(&KernelKind::Relu2Mul(Relu2MulParams { n: k as u64 }));
    let mut gb = x.clone();
    let mut ub = u.clone();
    let bufs: Vec<*mut u8> = vec![
        gb.as_mut_ptr().cast(),
        ub.as_mut_ptr().cast(),
        gb.as_mut_ptr().cast(),
    ];
    // SAFETY: as above.
    unsafe { (compiled.f)(bufs.as_ptr(), [t as i64, 0].as_ptr(), 0, t as i64) };
    assert_f32s("in-place relu2_mul", &gb, &f32s(&want[0]));
}

/// Rows whose f64 sum of squares rounds differently in any order other than the index order: the
/// first two squares sum to exactly an f32 rounding tie (1 + 2^-24, times 1/K exactly), and six
/// squares of 2^-54 (a quarter ulp each) round away when added one by one after them, but not when
/// some are added to each other first (as a reversed, pairwise or lane-wise sum would), which moves
/// the f32 mean off the tie.
#[test]
fn rms_sum_is_in_index_order() {
    let mut rng = Rng(18);
    for k in [8usize, 16, 64, 256, 2048] {
        let mut x = vec![0f32; k];
        x[0] = 1.0;
        x[1] = 2f32.powi(-12);
        for v in &mut x[2..8] {
            *v = 2f32.powi(-27);
        }
        let w = vec![1f32; k];
        check_rms_norm(&mut rng, 1, k, &x, &w, 0.0);
        check_quant(&mut rng, 1, k, &x, Some(&w), 1e-5, 0.0, false);
    }
}
