//! Differential tests of the `KvStore` and `Attention` CPU kernels against the reference
//! interpreter (`nn.attention`'s `eval`): a prefill of T tokens at pos (KvStore then Attention),
//! then a one-token decode step at pos + T on the caches both sides produced, comparing the caches
//! and the outputs bit for bit. Kernels are JIT-compiled and called through the `KernelFn` ABI on
//! 1–3 uneven row ranges in shuffled order; after every partial call, the rows not yet computed
//! must be unchanged. Both scratch variants are covered: scores on the stack (context ≤
//! `SCORES_ON_STACK_MAX_CONTEXT`) and the recomputing, tiled one (longer contexts).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{Rng, Watch, assert_bits, launch, splits};

use bitnet_backends::cpu::jit::compile_kernels;
use bitnet_backends::cpu::kernels::attention::{SCORES_ON_STACK_MAX_CONTEXT, TILE_KEYS};
use bitnet_backends::kernel::{AttentionParams, KernelKind, KvStoreParams};
use bitnet_ir::ops::EvalCtx;
use bitnet_ir::{Attr, Attrs, Data, ElemType, NoWeights, OpKind, Tensor};
use bitnet_runtime::KernelFn;

fn compile(kinds: &[KernelKind]) -> (cranelift_jit::JITModule, Vec<KernelFn>) {
    compile_kernels(kinds).expect("compile")
}

fn f32s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        Data::F32(v) => v.clone(),
        other => panic!("expected f32 data, found {other:?}"),
    }
}

/// How a case draws its inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Values {
    /// Varied magnitudes, some ±0.
    Normal,
    /// q and k scaled by 64: most weights underflow to 0, the max dominates.
    Large,
    /// q all zero (equal scores, uniform weights) and v all −0.0 (the output is −0.0).
    Degenerate,
    /// Some ±∞ in q and k (NaN and ∞ scores).
    Special,
}

/// One attention configuration with its kernels and both sides' caches.
struct Attn {
    heads: usize,
    kv_heads: usize,
    d: usize,
    context: usize,
    values: Values,
    attrs: Attrs,
    kv_store: KernelFn,
    attention: KernelFn,
    _module: cranelift_jit::JITModule,
    kc: Vec<f32>,
    vc: Vec<f32>,
    kc_ref: Tensor,
    vc_ref: Tensor,
}

impl Attn {
    fn new(
        rng: &mut Rng,
        (heads, kv_heads, d): (usize, usize, usize),
        context: usize,
        values: Values,
    ) -> Attn {
        let kvw = kv_heads * d;
        let explicit_scale = rng.range(0, 2) == 0;
        let scale = if explicit_scale {
            0.05 + f64::from(rng.unit().abs()) * 2.0
        } else {
            1.0 / (d as f64).sqrt()
        };
        let mut attrs = Attrs::new()
            .with("heads", Attr::Int(heads as i64))
            .with("kv_heads", Attr::Int(kv_heads as i64));
        if explicit_scale {
            attrs = attrs.with("scale", Attr::Float(scale));
        }
        let (module, fns) = compile(&[
            KernelKind::KvStore(KvStoreParams { kvw: kvw as u64 }),
            KernelKind::Attention(AttentionParams {
                heads: heads as u64,
                kv_heads: kv_heads as u64,
                head_dim: d as u64,
                context: context as u64,
                scale_bits: scale.to_bits(),
            }),
        ]);
        // The caches start with garbage: rows not written yet must not matter.
        let kc = rng.values(context * kvw);
        let vc = rng.values(context * kvw);
        let kc_ref = Tensor::new(vec![context, kvw], Data::F32(kc.clone())).expect("kc");
        let vc_ref = Tensor::new(vec![context, kvw], Data::F32(vc.clone())).expect("vc");
        Attn {
            heads,
            kv_heads,
            d,
            context,
            values,
            attrs,
            kv_store: fns[0],
            attention: fns[1],
            _module: module,
            kc,
            vc,
            kc_ref,
            vc_ref,
        }
    }

    fn draw(&self, rng: &mut Rng, n: usize, which: char) -> Vec<f32> {
        match (self.values, which) {
            (Values::Normal, _) => rng.values(n),
            (Values::Large, 'q' | 'k') => (0..n).map(|_| rng.value() * 64.0).collect(),
            (Values::Large, _) => rng.values(n),
            (Values::Degenerate, 'q') => vec![0.0; n],
            (Values::Degenerate, 'v') => vec![-0.0; n],
            (Values::Degenerate, _) => rng.values(n),
            (Values::Special, 'q' | 'k') => (0..n)
                .map(|_| match rng.next() % 50 {
                    0 => f32::INFINITY,
                    1 => f32::NEG_INFINITY,
                    _ => rng.value(),
                })
                .collect(),
            (Values::Special, _) => rng.values(n),
        }
    }

    /// One step: T tokens at `pos` (KvStore, then Attention) on both sides, compared bit for bit.
    fn step(&mut self, rng: &mut Rng, t: usize, pos: usize) {
        let (heads, d) = (self.heads, self.d);
        let (qw, kvw) = (heads * d, self.kv_heads * d);
        let what = format!(
            "attention heads {heads}/{} d {d} context {} T {t} pos {pos} {:?} {:?}",
            self.kv_heads, self.context, self.values, self.attrs
        );
        let mut q = self.draw(rng, t * qw, 'q');
        let mut k = self.draw(rng, t * kvw, 'k');
        let mut v = self.draw(rng, t * kvw, 'v');

        let qt = Tensor::new(vec![t, qw], Data::F32(q.clone())).expect("q");
        let kt = Tensor::new(vec![t, kvw], Data::F32(k.clone())).expect("k");
        let vt = Tensor::new(vec![t, kvw], Data::F32(v.clone())).expect("v");
        let pt = Tensor::new(vec![], Data::I64(vec![pos as i64])).expect("pos");
        let shapes = [
            vec![t, qw],
            vec![self.context, kvw],
            vec![self.context, kvw],
        ];
        let cx = EvalCtx {
            inputs: &[&qt, &kt, &vt, &self.kc_ref, &self.vc_ref, &pt],
            attrs: &self.attrs,
            result_shapes: &shapes,
            result_elems: &[ElemType::F32; 3],
            weights: &NoWeights,
        };
        let mut res = OpKind::Attention.eval(&cx).expect("reference eval");
        let vc_ref = res.pop().expect("vc");
        let kc_ref = res.pop().expect("kc");
        let out_ref = f32s(&res[0]);

        // KvStore: rows t, writing cache rows pos + t.
        let bufs = [
            k.as_mut_ptr().cast::<u8>(),
            v.as_mut_ptr().cast::<u8>(),
            self.kc.as_mut_ptr().cast::<u8>(),
            self.vc.as_mut_ptr().cast::<u8>(),
        ];
        let owner = |i: usize| (i / kvw).checked_sub(pos).filter(|&r| r < t);
        let ranges = splits(rng, t);
        launch(
            self.kv_store,
            &bufs,
            [t as i64, pos as i64],
            t,
            &ranges,
            &[
                Watch {
                    data: self.kc.as_ptr(),
                    len: self.kc.len(),
                    owner: &owner,
                },
                Watch {
                    data: self.vc.as_ptr(),
                    len: self.vc.len(),
                    owner: &owner,
                },
            ],
        );
        assert_bits(&format!("{what}: key cache"), &self.kc, &f32s(&kc_ref));
        assert_bits(&format!("{what}: value cache"), &self.vc, &f32s(&vc_ref));

        // Attention: rows T·heads; sometimes in place (out = q).
        let in_place = rng.range(0, 3) == 0;
        let mut out = vec![f32::from_bits(0x7fc0_0bad); (t + 1) * qw];
        let out_ptr = if in_place {
            q.as_mut_ptr()
        } else {
            out.as_mut_ptr()
        };
        let bufs = [
            q.as_mut_ptr().cast::<u8>(),
            self.kc.as_mut_ptr().cast::<u8>(),
            self.vc.as_mut_ptr().cast::<u8>(),
            out_ptr.cast::<u8>(),
        ];
        let rows = t * heads;
        let owner = |i: usize| Some(i / d).filter(|&r| r < rows);
        let ranges = splits(rng, rows);
        let watched = if in_place {
            (q.as_ptr(), q.len())
        } else {
            (out.as_ptr(), out.len())
        };
        launch(
            self.attention,
            &bufs,
            [t as i64, pos as i64],
            rows,
            &ranges,
            &[Watch {
                data: watched.0,
                len: watched.1,
                owner: &owner,
            }],
        );
        let got = if in_place { &q[..] } else { &out[..t * qw] };
        assert_bits(
            &format!("{what}: output (in place {in_place})"),
            got,
            &out_ref,
        );
        self.kc_ref = kc_ref;
        self.vc_ref = vc_ref;
    }
}

/// A prefill of `t` tokens at `pos`, then (when the context allows) a one-token decode step.
fn prefill_then_decode(
    rng: &mut Rng,
    shape: (usize, usize, usize),
    t: usize,
    pos: usize,
    context: usize,
    values: Values,
) {
    let mut a = Attn::new(rng, shape, context, values);
    a.step(rng, t, pos);
    if pos + t < context {
        a.step(rng, 1, pos + t);
    }
}

const SHAPES: [(usize, usize, usize); 9] = [
    (4, 2, 32),
    (8, 8, 64),
    (20, 5, 128),
    (2, 1, 1),
    (3, 3, 3),
    (6, 2, 17),
    (4, 4, 18),
    (2, 2, 30),
    (4, 1, 48),
];

#[test]
fn attention_edges_match_interpreter() {
    let mut rng = Rng(10);
    for &shape in &SHAPES {
        for &t in &[1, 2, 37] {
            for &pos in &[0, 1, 7, 9] {
                let context = pos + t + 1 + rng.range(0, 3);
                prefill_then_decode(&mut rng, shape, t, pos, context, Values::Normal);
            }
        }
        // The cache exactly full after the step (no decode).
        prefill_then_decode(&mut rng, shape, 2, 5, 7, Values::Normal);
        for values in [Values::Large, Values::Degenerate, Values::Special] {
            prefill_then_decode(&mut rng, shape, 3, 4, 9, values);
        }
    }
}

#[test]
fn attention_random_cases_match_interpreter() {
    let mut rng = Rng(11);
    for _ in 0..150 {
        let shape = rng.pick(&SHAPES);
        let shape = if rng.range(0, 3) == 0 {
            let kv = rng.range(1, 4);
            (kv * rng.range(1, 4), kv, rng.range(1, 70))
        } else {
            shape
        };
        let opts = [1, 2, 37, rng.range(1, 9)];
        let t = rng.pick(&opts);
        let opts = [0, rng.range(1, 40), rng.range(1, 200)];
        let pos = rng.pick(&opts);
        let context = pos + t + rng.range(0, 20);
        let values = match rng.next() % 10 {
            0 => Values::Large,
            1 => Values::Special,
            _ => Values::Normal,
        };
        prefill_then_decode(&mut rng, shape, t, pos, context, values);
    }
}

#[test]
fn attention_long_context_on_stack_limit() {
    // The largest context that keeps the scores on the stack, filled to the end.
    let mut rng = Rng(12);
    let c = SCORES_ON_STACK_MAX_CONTEXT as usize;
    prefill_then_decode(&mut rng, (4, 2, 32), 2, c - 3, c, Values::Normal);
}

#[test]
fn attention_recomputing_variant_matches_interpreter() {
    // Contexts past the stack limit recompute scores in tiles of TILE_KEYS keys; cover tile edges.
    let mut rng = Rng(13);
    let c = SCORES_ON_STACK_MAX_CONTEXT as usize + 100;
    let tile = TILE_KEYS as usize;
    for &(shape, t, pos) in &[
        ((4, 2, 32), 1, 0),
        ((4, 2, 32), 2, tile - 2),
        ((4, 2, 32), 37, 2 * tile - 20),
        ((2, 1, 17), 3, 3 * tile - 1),
        ((20, 5, 128), 2, 2500),
        ((4, 2, 32), 37, c - 38),
    ] {
        prefill_then_decode(&mut rng, shape, t, pos, c, Values::Normal);
    }
    prefill_then_decode(&mut rng, (4, 2, 32), 2, tile + 5, c, Values::Large);
}

/// Single-thread timing of one decode step of BitNet b1.58 2B-4T's attention (20/5 heads, d 128)
/// at the end of a 4096 context, and of the same step past the stack limit (recomputing). Prints,
/// asserts nothing. Run with
/// `cargo test --release -p bitnet-backends --test kernels_attention -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run by hand in release"]
fn attention_decode_timing() {
    let mut rng = Rng(14);
    let (heads, kv_heads, d) = (20usize, 5usize, 128usize);
    for context in [4096usize, SCORES_ON_STACK_MAX_CONTEXT as usize + 4096] {
        let kvw = kv_heads * d;
        let (_m, fns) = compile(&[KernelKind::Attention(AttentionParams {
            heads: heads as u64,
            kv_heads: kv_heads as u64,
            head_dim: d as u64,
            context: context as u64,
            scale_bits: (1.0 / (d as f64).sqrt()).to_bits(),
        })]);
        let mut q = rng.values(heads * d);
        let mut kc = rng.values(context * kvw);
        let mut vc = rng.values(context * kvw);
        let mut out = vec![0f32; heads * d];
        let bufs = [
            q.as_mut_ptr().cast::<u8>(),
            kc.as_mut_ptr().cast::<u8>(),
            vc.as_mut_ptr().cast::<u8>(),
            out.as_mut_ptr().cast::<u8>(),
        ];
        let pos = 4095i64;
        let scalars = [1i64, pos];
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            // SAFETY: buffers as documented for Attention with T = 1.
            unsafe { fns[0](bufs.as_ptr(), scalars.as_ptr(), 0, heads as i64) };
            best = best.min(start.elapsed().as_secs_f64());
        }
        let keys = (pos + 1) as f64 * heads as f64;
        if context == 4096 {
            // The interpreter on the same step, for scale (includes copying the caches).
            let qt = Tensor::new(vec![1, heads * d], Data::F32(q.clone())).expect("q");
            let kt = Tensor::new(vec![1, kvw], Data::F32(kc[..kvw].to_vec())).expect("k");
            let vt = Tensor::new(vec![1, kvw], Data::F32(vc[..kvw].to_vec())).expect("v");
            let kct = Tensor::new(vec![context, kvw], Data::F32(kc.clone())).expect("kc");
            let vct = Tensor::new(vec![context, kvw], Data::F32(vc.clone())).expect("vc");
            let pt = Tensor::new(vec![], Data::I64(vec![pos])).expect("pos");
            let attrs = Attrs::new()
                .with("heads", Attr::Int(heads as i64))
                .with("kv_heads", Attr::Int(kv_heads as i64));
            let shapes = [vec![1, heads * d], vec![context, kvw], vec![context, kvw]];
            let cx = EvalCtx {
                inputs: &[&qt, &kt, &vt, &kct, &vct, &pt],
                attrs: &attrs,
                result_shapes: &shapes,
                result_elems: &[ElemType::F32; 3],
                weights: &NoWeights,
            };
            let start = std::time::Instant::now();
            OpKind::Attention.eval(&cx).expect("eval");
            println!("interpreter: {:.2} ms", start.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "attention decode 20/5 d 128, {} keys, context {context}: {:.2} ms ({:.1} ns per key and head)",
            pos + 1,
            best * 1e3,
            best * 1e9 / keys
        );
    }
}
