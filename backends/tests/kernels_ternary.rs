//! Differential tests of the JIT-compiled ternary matmul kernel against the reference interpreter's
//! `bit.ternary_matmul_packed` (bit-exact), for every dot strategy this host can run; the machine-code
//! snapshot of the decode kernel; and a timing print of the GEMV (T = 1) against a naive Rust loop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_backends::cpu::kernels::ternary_matmul::{self, DotStrategy};
use bitnet_backends::cpu::{PACK_BLOCK, PACK_ORDER, jit};
use bitnet_backends::kernel::{KernelKind, TernaryMatmulParams};
use bitnet_ir::ops::ternary_matmul_packed::{pack_row, padded_k};
use bitnet_ir::ops::{EvalCtx, OpKind};
use bitnet_ir::{Attr, Attrs, Data, ElemType, NoWeights, Tensor};
use bitnet_runtime::KernelFn;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use std::time::{Duration, Instant};

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

    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
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

/// A JIT module for the host with some ISA flags turned off.
fn module_without(flags_off: &[&str]) -> JITModule {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").unwrap();
    flags.set("is_pic", "false").unwrap();
    let mut isa = cranelift_native::builder().unwrap();
    for f in flags_off {
        isa.set(f, "false").unwrap();
    }
    let isa = isa.finish(settings::Flags::new(flags)).unwrap();
    JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ))
}

/// The ways to build the kernel that this host runs: the default (best for the host), and forced
/// strategies in modules without VNNI and AVX2 (so the generated kernel, not a call of the runtime's
/// micro-kernel, and its generic lowerings are exercised too).
#[derive(Clone, Copy, Debug)]
enum Variant {
    Host,
    NoVnni,
    Forced(DotStrategy),
}

fn variants() -> Vec<Variant> {
    let mut v = vec![Variant::Host];
    if cfg!(target_arch = "x86_64") {
        v.push(Variant::NoVnni);
        v.push(Variant::Forced(DotStrategy::DotTree {
            codes_unsigned: true,
        }));
    }
    v.push(Variant::Forced(DotStrategy::DotTree {
        codes_unsigned: false,
    }));
    v
}

/// The compiled kernel and the module that owns its code.
struct Compiled {
    _module: JITModule,
    f: KernelFn,
}

fn compile(params: &TernaryMatmulParams, variant: Variant) -> Compiled {
    match variant {
        Variant::Host => {
            let (module, fns) =
                jit::compile_kernels(&[KernelKind::TernaryMatmul(params.clone())]).unwrap();
            Compiled {
                _module: module,
                f: fns[0],
            }
        }
        Variant::NoVnni | Variant::Forced(_) => {
            let mut module = module_without(if cfg!(target_arch = "x86_64") {
                &["has_avx_vnni", "has_avx512vnni", "has_avx2"]
            } else {
                &[]
            });
            let id = match variant {
                Variant::Forced(s) => ternary_matmul::build_with(&mut module, params, s).unwrap(),
                _ => ternary_matmul::build(&mut module, params).unwrap(),
            };
            module.finalize_definitions().unwrap();
            let ptr = module.get_finalized_function(id);
            // SAFETY: the kernel is defined with the kernel signature, the ABI of `KernelFn`.
            let f = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
            Compiled { _module: module, f }
        }
    }
}

/// One test problem.
struct Case {
    t: usize,
    k: usize,
    n: usize,
    xq: Vec<i8>,
    xs: Vec<f32>,
    w: Vec<i8>,
    ws: f32,
    residual: Option<Vec<f32>>,
}

impl Case {
    fn random(rng: &mut Rng, t: usize, k: usize, n: usize, residual: bool) -> Case {
        // Activations: mostly uniform i8 with the extremes forced in; sometimes a constant row.
        let xq = (0..t * k)
            .map(|_| match rng.below(16) {
                0 => -128,
                1 => 127,
                _ => rng.next() as i8,
            })
            .collect();
        let xs = (0..t).map(|_| 0.01 + 10.0 * rng.f32()).collect();
        let mode = rng.below(8);
        let w = (0..n * k)
            .map(|_| match mode {
                0 => 1,
                1 => -1,
                _ => rng.below(3) as i8 - 1,
            })
            .collect();
        let ws = 0.05 + rng.f32();
        let residual = residual.then(|| (0..t * n).map(|_| rng.f32() * 8.0 - 4.0).collect());
        Case {
            t,
            k,
            n,
            xq,
            xs,
            w,
            ws,
            residual,
        }
    }

    fn packed(&self) -> Vec<u8> {
        let rb = padded_k(self.k, PACK_BLOCK).unwrap() / 4;
        let mut out = vec![0u8; self.n * rb];
        for (row, dst) in self.w.chunks(self.k).zip(out.chunks_mut(rb)) {
            pack_row(row, PACK_BLOCK, PACK_ORDER, dst);
        }
        out
    }

    fn reference(&self, packed: &[u8]) -> Vec<f32> {
        let rb = packed.len() / self.n;
        let xq = Tensor::new(vec![self.t, self.k], Data::I8(self.xq.clone())).unwrap();
        let xs = Tensor::new(vec![self.t, 1], Data::F32(self.xs.clone())).unwrap();
        let wp = Tensor::new(vec![self.n, rb], Data::U8(packed.to_vec())).unwrap();
        let ws = Tensor::new(vec![1], Data::F32(vec![self.ws])).unwrap();
        let r = self
            .residual
            .as_ref()
            .map(|r| Tensor::new(vec![self.t, self.n], Data::F32(r.clone())).unwrap());
        let mut inputs = vec![&xq, &xs, &wp, &ws];
        if let Some(r) = &r {
            inputs.push(r);
        }
        let attrs = Attrs::new()
            .with("block", Attr::Int(PACK_BLOCK as i64))
            .with("k", Attr::Int(self.k as i64))
            .with("order", Attr::Str(PACK_ORDER.name().into()));
        let cx = EvalCtx {
            inputs: &inputs,
            attrs: &attrs,
            result_shapes: &[vec![self.t, self.n]],
            result_elems: &[ElemType::F32],
            weights: &NoWeights,
        };
        let out = OpKind::TernaryMatmulPacked.eval(&cx).unwrap();
        match &out[0].data {
            Data::F32(v) => v.clone(),
            d => panic!("reference returned {d:?}"),
        }
    }

    fn params(&self) -> TernaryMatmulParams {
        TernaryMatmulParams {
            k: self.k as u64,
            n: self.n as u64,
            residual: self.residual.is_some(),
        }
    }

    /// Runs the kernel over `ranges` (one call each), checking after each call that only the
    /// columns computed so far were written.
    fn run(&self, f: KernelFn, packed: &[u8], ranges: &[(usize, usize)]) -> Vec<f32> {
        const SENTINEL: u32 = 0x7FC0_DEAD;
        let (t, n) = (self.t, self.n);
        let mut xq = self.xq.clone();
        let mut xs = self.xs.clone();
        let mut w = packed.to_vec();
        let mut ws = vec![self.ws];
        let mut res = self.residual.clone();
        // One guard element past the end of the output.
        let mut out = vec![f32::from_bits(SENTINEL); t * n + 1];
        let mut bufs: Vec<*mut u8> = vec![
            xq.as_mut_ptr().cast(),
            xs.as_mut_ptr().cast(),
            w.as_mut_ptr(),
            ws.as_mut_ptr().cast(),
        ];
        if let Some(r) = &mut res {
            bufs.push(r.as_mut_ptr().cast());
        }
        bufs.push(out.as_mut_ptr().cast());
        let scalars = [t as i64, 0];
        let mut done = vec![false; n];
        for &(a, b) in ranges {
            // SAFETY: the buffers have the kernel's documented shapes and outlive the call.
            unsafe { f(bufs.as_ptr(), scalars.as_ptr(), a as i64, b as i64) };
            done[a..b].iter_mut().for_each(|d| *d = true);
            for (i, v) in out.iter().enumerate() {
                let written = i < t * n && done[i % n];
                if !written {
                    assert_eq!(
                        v.to_bits(),
                        SENTINEL,
                        "element {i} written outside the rows"
                    );
                }
            }
        }
        out.truncate(t * n);
        out
    }
}

fn check(case: &Case, variant: Variant, rng: &mut Rng) {
    let packed = case.packed();
    let want = case.reference(&packed);
    let compiled = compile(&case.params(), variant);
    let ranges = split(case.n, rng);
    let got = case.run(compiled.f, &packed, &ranges);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{variant:?} T={} K={} N={} residual={} ranges={ranges:?}: out[{}, {}] = {g}, reference {w}",
            case.t,
            case.k,
            case.n,
            case.residual.is_some(),
            i / case.n,
            i % case.n
        );
    }
}

#[test]
fn ternary_matmul_awkward_sizes_match_the_reference() {
    let mut rng = Rng(1);
    for variant in variants() {
        let full = matches!(variant, Variant::Host);
        for &t in &[1, 2, 37] {
            for &k in &[1, 15, 63, 64, 65, 200, 256, 2560] {
                for &n in &[1, 3, 64, 100] {
                    if !(full || n == 3 || n == 100) {
                        continue;
                    }
                    for residual in [false, true] {
                        let case = Case::random(&mut rng, t, k, n, residual);
                        check(&case, variant, &mut rng);
                    }
                }
            }
        }
    }
}

#[test]
fn ternary_matmul_random_cases_match_the_reference() {
    let mut rng = Rng(2);
    let variants = variants();
    for i in 0..160 {
        let t = 1 + rng.below(9);
        let k = 1 + rng.below(400);
        let n = 1 + rng.below(70);
        let residual = rng.below(2) == 0;
        let case = Case::random(&mut rng, t, k, n, residual);
        check(&case, variants[i % variants.len()], &mut rng);
    }
}

#[test]
fn ternary_matmul_extreme_accumulators_match_the_reference() {
    // All activations -128 or 127 against all +1 / -1 weights: the largest sums (no i16 partial
    // sum may saturate), with K spanning many blocks.
    // K = 524 287 is the largest K of the VNNI kernel's masked-in-place decoding, where one quarter's
    // scaled sum reaches -2^31 exactly; K = 524 353 falls back to the shifts.
    let mut rng = Rng(3);
    for variant in variants() {
        for &x in &[-128i8, 127] {
            for &wv in &[-1i8, 1] {
                for (t, k, n) in [(5, 2560 + 17, 3), (3, 524_287, 2), (1, 524_353, 1)] {
                    let mut case = Case::random(&mut rng, t, k, n, false);
                    case.xq = vec![x; t * k];
                    case.w = vec![wv; n * k];
                    check(&case, variant, &mut rng);
                }
            }
        }
    }
}

#[test]
fn ternary_matmul_empty_calls_write_nothing() {
    let mut rng = Rng(4);
    let case = Case::random(&mut rng, 0, 65, 7, true);
    let packed = case.packed();
    let compiled = compile(&case.params(), Variant::Host);
    // T = 0 and empty row ranges: nothing to compute, nothing written (checked by `run`).
    let _ = case.run(compiled.f, &packed, &[(0, 7), (3, 3)]);
}

/// The x86-64 target of the snapshot: x86-64-v3 (SSE3–4.2, POPCNT, AVX, AVX2, BMI1/2, LZCNT, FMA)
/// plus AVX-VNNI, fixed so the snapshot does not depend on the machine that runs the test.
fn snapshot_isa() -> Option<std::sync::Arc<dyn cranelift_codegen::isa::TargetIsa>> {
    let mut isa = cranelift_codegen::isa::lookup_by_name("x86_64").ok()?;
    for f in [
        "has_sse3",
        "has_ssse3",
        "has_sse41",
        "has_sse42",
        "has_popcnt",
        "has_avx",
        "has_avx2",
        "has_bmi1",
        "has_bmi2",
        "has_lzcnt",
        "has_fma",
        "has_avx_vnni",
    ] {
        isa.enable(f).ok()?;
    }
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").ok()?;
    flags.set("is_pic", "false").ok()?;
    isa.finish(settings::Flags::new(flags)).ok()
}

/// Machine code (Cranelift's listing of the x86-64 instructions after register allocation, not
/// CLIF) of the decode hot kernel, `TernaryMatmul { k: 2560, n: 2560, residual: false }`, compiled
/// for `snapshot_isa` (x86-64-v3 + AVX-VNNI: the `vpdpbusd` path). Regenerate with
/// `INSTA_UPDATE=always cargo test -p bitnet-backends --test kernels_ternary snapshot` or
/// `cargo insta review`.
#[test]
fn ternary_matmul_2560x2560_machine_code_snapshot() {
    if !cfg!(target_arch = "x86_64") {
        println!(
            "skipped: the machine-code snapshot is x86-64 code, compiled on x86-64 hosts only"
        );
        return;
    }
    let Some(isa) = snapshot_isa() else {
        println!("skipped: this Cranelift has no x86-64 backend");
        return;
    };
    let params = TernaryMatmulParams {
        k: 2560,
        n: 2560,
        residual: false,
    };
    let text = ternary_matmul::disassemble(&*isa, &params).unwrap();
    assert!(
        text.contains("vpdpbusd"),
        "the VNNI dot product was not selected"
    );
    insta::with_settings!({
        snapshot_path => "snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => "x86-64 machine code (Cranelift VCode listing, x86-64-v3 + AVX-VNNI) of TernaryMatmul { k: 2560, n: 2560, residual: false }",
    }, {
        insta::assert_snapshot!("ternary_matmul_2560x2560", text);
    });
}

/// The fastest of repeated runs of `f` within about `budget`.
fn best_time(budget: Duration, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < 3 || (start.elapsed() < budget && runs < 10_000) {
        let t0 = Instant::now();
        f();
        best = best.min(t0.elapsed());
        runs += 1;
    }
    best
}

/// Prints the single-thread GEMV (T = 1) time of the kernel and of a naive Rust loop over unpacked
/// i8 weights, for review (no assertion on speed; meaningful in a release build:
/// `cargo test --release -p bitnet-backends --test kernels_ternary -- --nocapture gemv`).
#[test]
fn gemv_timing_print() {
    let mut rng = Rng(5);
    for &(n, k) in &[(2560usize, 2560usize), (6912, 2560), (2560, 6912)] {
        let case = Case::random(&mut rng, 1, k, n, false);
        let packed = case.packed();
        let compiled = compile(&case.params(), Variant::Host);
        let mut xq = case.xq.clone();
        let mut xs = case.xs.clone();
        let mut w = packed.clone();
        let mut ws = vec![case.ws];
        let mut out = vec![0f32; n];
        let bufs: Vec<*mut u8> = vec![
            xq.as_mut_ptr().cast(),
            xs.as_mut_ptr().cast(),
            w.as_mut_ptr(),
            ws.as_mut_ptr().cast(),
            out.as_mut_ptr().cast(),
        ];
        let scalars = [1i64, 0];
        let jit = best_time(Duration::from_millis(300), || {
            // SAFETY: the buffers have the kernel's shapes and outlive the call.
            unsafe { (compiled.f)(bufs.as_ptr(), scalars.as_ptr(), 0, n as i64) };
            std::hint::black_box(&out);
        });
        let jit_out = out.clone();
        // The same with the host's second-best strategy (x86 without VNNI: `pmaddubsw`).
        let fallback = cfg!(target_arch = "x86_64").then(|| {
            let compiled = compile(&case.params(), Variant::NoVnni);
            best_time(Duration::from_millis(300), || {
                // SAFETY: as above.
                unsafe { (compiled.f)(bufs.as_ptr(), scalars.as_ptr(), 0, n as i64) };
                std::hint::black_box(&out);
            })
        });
        assert_eq!(out, jit_out);
        let mut naive_out = vec![0f32; n];
        let naive = best_time(Duration::from_millis(300), || {
            let x = std::hint::black_box(&case.xq);
            for (o, row) in naive_out.iter_mut().zip(case.w.chunks(k)) {
                let mut acc = 0i32;
                for (&a, &b) in x.iter().zip(row) {
                    acc += i32::from(a) * i32::from(b);
                }
                *o = acc as f32 / case.xs[0] * case.ws;
            }
            std::hint::black_box(&naive_out);
        });
        assert_eq!(jit_out, naive_out);
        let gbs = packed.len() as f64 / jit.as_secs_f64() / 1e9;
        println!(
            "GEMV N={n} K={k} T=1: JIT {:.1} us ({gbs:.1} GB/s of packed weights, {} bytes), naive i8 loop {:.1} us ({:.1} GB/s of i8 weights), speedup {:.2}x",
            jit.as_secs_f64() * 1e6,
            packed.len(),
            naive.as_secs_f64() * 1e6,
            (n * k) as f64 / naive.as_secs_f64() / 1e9,
            naive.as_secs_f64() / jit.as_secs_f64()
        );
        if let Some(f) = fallback {
            println!(
                "  without VNNI (pmaddubsw): {:.1} us ({:.1} GB/s)",
                f.as_secs_f64() * 1e6,
                packed.len() as f64 / f.as_secs_f64() / 1e9
            );
        }
    }
}

/// Prints the single-thread time per token of a prefill (T = 37) against the GEMV, for review.
#[test]
fn prefill_timing_print() {
    let mut rng = Rng(6);
    let (n, k) = (2560usize, 2560usize);
    for t in [1usize, 2, 4, 37] {
        let case = Case::random(&mut rng, t, k, n, false);
        let packed = case.packed();
        let compiled = compile(&case.params(), Variant::Host);
        let mut xq = case.xq.clone();
        let mut xs = case.xs.clone();
        let mut w = packed.clone();
        let mut ws = vec![case.ws];
        let mut out = vec![0f32; t * n];
        let bufs: Vec<*mut u8> = vec![
            xq.as_mut_ptr().cast(),
            xs.as_mut_ptr().cast(),
            w.as_mut_ptr(),
            ws.as_mut_ptr().cast(),
            out.as_mut_ptr().cast(),
        ];
        let scalars = [t as i64, 0];
        let time = best_time(Duration::from_millis(300), || {
            // SAFETY: the buffers have the kernel's shapes and outlive the call.
            unsafe { (compiled.f)(bufs.as_ptr(), scalars.as_ptr(), 0, n as i64) };
            std::hint::black_box(&out);
        });
        println!(
            "ternary matmul N={n} K={k} T={t}: {:.1} us per token",
            time.as_secs_f64() * 1e6 / t as f64
        );
    }
}

/// Prints, per shape and token count, the time of the generated kernel a CPU without AVX-512 ran
/// before the 256-bit micro-kernels (the host without AVX-512: AVX-VNNI and AVX2, or AVX2 alone)
/// and of the micro-kernel the JIT now calls (its variant capped by `BITNETC_ISA`: run with
/// `avxvnni` and with `avx2`), single thread, weights in cache for T > 1, for review (no assertion
/// on speed): `BITNETC_ISA=avx2 cargo test --release -p bitnet-backends --test kernels_ternary --
/// --ignored --nocapture avx2_tier`.
#[test]
#[ignore = "timing print; run by hand in a release build"]
fn avx2_tier_timing_print() {
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let cap = std::env::var("BITNETC_ISA").unwrap_or_else(|_| "amx".into());
    let mut rng = Rng(11);
    for &(n, k, t) in &[
        (2560usize, 2560usize, 1usize),
        (6912, 2560, 1),
        (2560, 6912, 1),
        (6912, 2560, 8),
        (2560, 2560, 64),
    ] {
        let case = Case::random(&mut rng, t, k, n, false);
        let packed = case.packed();
        let (mut xq, mut xs, mut w) = (case.xq.clone(), case.xs.clone(), packed.clone());
        let mut ws = vec![case.ws];
        let mut out = vec![0f32; t * n];
        let bufs: Vec<*mut u8> = vec![
            xq.as_mut_ptr().cast(),
            xs.as_mut_ptr().cast(),
            w.as_mut_ptr(),
            ws.as_mut_ptr().cast(),
            out.as_mut_ptr().cast(),
        ];
        let scalars = [t as i64, 0];
        let time = |f: KernelFn| {
            let d = best_time(Duration::from_millis(400), || {
                // SAFETY: the buffers have the kernel's shapes and outlive the call.
                unsafe { f(bufs.as_ptr(), scalars.as_ptr(), 0, n as i64) };
            });
            (d, out.clone())
        };
        let generated = |off: &[&str]| {
            let mut module = module_without(off);
            let strategy = DotStrategy::for_isa(cranelift_module::Module::isa(&module));
            let id = ternary_matmul::build_with(&mut module, &case.params(), strategy).unwrap();
            module.finalize_definitions().unwrap();
            // SAFETY: the kernel is defined with the kernel signature, the ABI of `KernelFn`.
            let f = unsafe {
                std::mem::transmute::<*const u8, KernelFn>(module.get_finalized_function(id))
            };
            (module, f)
        };
        let no512 = [
            "has_avx512f",
            "has_avx512vnni",
            "has_avx512vl",
            "has_avx512dq",
        ];
        let (_m1, vnni_gen) = generated(&no512);
        let (_m2, avx2_gen) = generated(&[&no512[..], &["has_avx_vnni"]].concat());
        let (_m3, micro) = {
            let (m, fns) =
                jit::compile_kernels(&[KernelKind::TernaryMatmul(case.params())]).unwrap();
            (m, fns[0])
        };
        let (a, ra) = time(vnni_gen);
        let (b, rb) = time(avx2_gen);
        let (c, rc) = time(micro);
        assert_eq!(ra, rc);
        assert_eq!(rb, rc);
        let gbs = |d: Duration| packed.len() as f64 / d.as_secs_f64() / 1e9;
        println!(
            "N={n} K={k} T={t}: generated AVX-VNNI {:.1} us ({:.1} GB/s), generated AVX2 {:.1} us ({:.1} GB/s), micro-kernel (cap {cap}) {:.1} us ({:.1} GB/s): {:.2}x / {:.2}x",
            a.as_secs_f64() * 1e6,
            gbs(a),
            b.as_secs_f64() * 1e6,
            gbs(b),
            c.as_secs_f64() * 1e6,
            gbs(c),
            a.as_secs_f64() / c.as_secs_f64(),
            b.as_secs_f64() / c.as_secs_f64(),
        );
    }
}
