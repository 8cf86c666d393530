//! A timing print of the `Attention` CPU kernel (ignored by default). Its differential tests, and
//! `KvStore`'s, are the harness's cases (`harness/attention.rs`, run by `kernels_cpu.rs` and
//! `kernels_cuda.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::Rng;

use bitnet_backends::cpu::jit::compile_kernels;
use bitnet_backends::cpu::kernels::attention::SCORES_ON_STACK_MAX_CONTEXT;
use bitnet_backends::kernel::{AttentionParams, KernelKind};
use bitnet_ir::ops::EvalCtx;
use bitnet_ir::{Attr, Attrs, Data, ElemType, NoWeights, OpKind, Tensor};
use bitnet_runtime::KernelFn;

fn compile(kinds: &[KernelKind]) -> (cranelift_jit::JITModule, Vec<KernelFn>) {
    compile_kernels(kinds).expect("compile")
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
