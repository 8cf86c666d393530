//! The CUDA kernels' arithmetic, checked on the host: the kernels are built by the same code as the
//! PTX but for this CPU (`bitnet_backends::cuda::host`), the launch plan of `compile_cuda` runs them
//! block by block, and the logits must match the CPU backend's (same plan, f16 lm_head) on every
//! hf-tiny form and hf-llama variant, for a prefill and greedy decode steps, with the same greedy
//! tokens (on hf-llama: transformers' 16).
//!
//! What this cannot check (see `cuda::host`): 32-lane shuffles, multi-warp reductions, `ex2.approx`
//! and the GPU memory model. The tolerance covers the kernels' f32 attention and summation order
//! against the CPU's f64 sums.

#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_backends::cpu::HeadDtype;
use bitnet_backends::cpu::lower::ProgramParts;
use bitnet_backends::cuda::host::{HostKernels, with_host_kernels};
use bitnet_runtime::Region;
use bitnetc::CpuOptions;
use bitnetc::cuda::{CudaOptions, compile_cuda};

/// 64-byte aligned bytes (the kernels load 16-byte vectors).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

struct Mem(Vec<Line>);

impl Mem {
    fn new(bytes: u64) -> Mem {
        Mem(vec![Line([0; 64]); (bytes as usize).div_ceil(64) + 1])
    }
    fn ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr().cast()
    }
}

/// Runs the launch plan of `parts` with the host kernels: a tiny CUDA executor.
struct HostRun<'a> {
    parts: &'a ProgramParts,
    arena: Mem,
    kv: Mem,
    weights: Mem,
}

impl<'a> HostRun<'a> {
    fn new(parts: &'a ProgramParts) -> HostRun<'a> {
        let mut weights = Mem::new(parts.weights.len() as u64);
        // SAFETY: `weights` has at least `parts.weights.len()` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                parts.weights.as_ptr(),
                weights.ptr(),
                parts.weights.len(),
            )
        };
        HostRun {
            parts,
            arena: Mem::new(parts.arena_bytes),
            kv: Mem::new(parts.kv_bytes),
            weights,
        }
    }

    fn forward(&mut self, hk: &HostKernels, tokens: &[i64], pos: u64) -> Vec<f32> {
        let t = tokens.len() as u64;
        assert!(pos + t <= self.parts.context);
        let (arena, kv, weights) = (self.arena.ptr(), self.kv.ptr(), self.weights.ptr());
        let at = |b: bitnet_runtime::BufRef| -> *mut u8 {
            let base = match b.region {
                Region::Arena => arena,
                Region::Kv => kv,
                Region::Weights => weights,
            };
            // SAFETY: every offset is inside its region (the plan's sizes).
            unsafe { base.add(b.offset as usize) }
        };
        let ids = at(self.parts.tokens).cast::<i64>();
        for (i, &id) in tokens.iter().enumerate() {
            // SAFETY: the tokens buffer holds `context` ids.
            unsafe { ids.add(i).write(id) };
        }
        for l in &self.parts.launches {
            let bufs: Vec<*mut u8> = l.bufs.iter().map(|&b| at(b)).collect();
            // SAFETY: the buffers are the plan's, sized for `context` tokens.
            unsafe { hk.launch(l.kernel, &bufs, l.rows.count(t), t as i64, pos as i64) }.unwrap();
        }
        let n = (t * self.parts.vocab) as usize;
        let logits = at(self.parts.logits).cast::<f32>();
        // SAFETY: the logits buffer holds `T × vocab` f32.
        unsafe { std::slice::from_raw_parts(logits, n) }.to_vec()
    }
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Runs `prompt` and `steps` greedy steps through the host-built CUDA kernels of the model at `dir`
/// and through the CPU backend (f16 lm_head, as the CUDA lowering stores it): the logits agree within
/// 1e-3 relative and the greedy tokens are the same. Returns the greedy tokens (the first one from
/// the prefill).
fn check_against_cpu(name: &str, dir: &std::path::Path, prompt: &[i64], steps: usize) -> Vec<i64> {
    let mut m = bitnetc::Model::open(dir).unwrap();
    let compiled = compile_cuda(&mut m, &CudaOptions::default()).unwrap();
    let mut cm = bitnetc::Model::open(dir).unwrap();
    let mut cpu = bitnetc::compile_cpu(
        &mut cm,
        &CpuOptions {
            threads: 1,
            head: HeadDtype::F16,
            ..CpuOptions::default()
        },
    )
    .unwrap();
    let vocab = compiled.parts.vocab as usize;
    let mut tokens = Vec::new();
    with_host_kernels(&compiled.parts.kinds, |hk| {
        let mut run = HostRun::new(&compiled.parts);
        let ours = run.forward(hk, prompt, 0);
        let theirs = cpu.forward(prompt, 0).unwrap().to_vec();
        let err = max_rel(&ours, &theirs);
        println!(
            "{name}: prefill of {} tokens, max relative error {err:.2e}",
            prompt.len()
        );
        assert!(err < 1e-3, "{name}: prefill logits differ by {err}");
        let last = |l: &[f32]| support::argmax(&l[l.len() - vocab..]);
        let mut next = last(&ours);
        assert_eq!(next, last(&theirs), "{name}: first greedy token");
        tokens.push(next);
        for step in 0..steps {
            let pos = (prompt.len() + step) as u64;
            let ours = run.forward(hk, &[next], pos);
            let theirs = cpu.forward(&[next], pos).unwrap().to_vec();
            let err = max_rel(&ours, &theirs);
            assert!(err < 1e-3, "{name} step {step}: logits differ by {err}");
            let (a, b) = (last(&ours), last(&theirs));
            assert_eq!(a, b, "{name} step {step}: greedy tokens differ");
            next = a;
            tokens.push(next);
        }
    })
    .unwrap();
    tokens
}

#[test]
fn host_built_cuda_kernels_match_the_cpu_backend_on_every_hf_tiny_form() {
    let prompt: Vec<i64> = vec![1, 17, 230, 5, 999, 42, 7, 300, 12, 64, 3];
    for form in ["online", "packed", "packed_bitlinear"] {
        let dir = support::root().join("tests/fixtures/hf-tiny").join(form);
        check_against_cpu(&format!("hf-tiny/{form}"), &dir, &prompt, 8);
    }
}

#[test]
fn host_built_cuda_kernels_give_transformers_greedy_tokens_on_hf_llama() {
    // Projection biases (`BiasAdd`), llama3 rope tables, SiLU-gated MLPs, a dense Qwen2.
    for variant in [
        "ternary",
        "ternary_tied_bias",
        "ternary_llama3",
        "qwen2_dense",
    ] {
        let dir = support::root()
            .join("tests/fixtures/hf-llama")
            .join(variant);
        let r = support::reference(&dir);
        let want = support::ids(&r["greedy_new_tokens"]);
        let got = check_against_cpu(
            &format!("hf-llama/{variant}"),
            &dir,
            &support::ids(&r["prompt_ids"]),
            want.len() - 1,
        );
        assert_eq!(got, want, "hf-llama/{variant}: transformers' greedy tokens");
    }
}
