//! The CUDA kernels' arithmetic and the GPU executor, checked on the host: the kernels are built by
//! the same code as the PTX but for this CPU (`bitnet_backends::cuda::host`), the runtime's GPU
//! executor (`bitnet_runtime::gpu::GpuExecutor`) runs the launch plan of `compile_cuda` on them
//! (`HostDevice`: host memory, scalars read through memory, the decode step captured once and
//! replayed), and the logits must match the CPU backend's (same plan, f16 lm_head) on every hf-tiny
//! form and hf-llama variant, for a prefill and greedy decode steps, with the same greedy tokens (on
//! hf-llama: transformers' 16). A CUDA artifact written to a file and loaded back runs the same.
//!
//! What this cannot check (see `cuda::host`): 32-lane shuffles, multi-warp reductions, `ex2.approx`
//! and the GPU memory model. The tolerance covers the kernels' f32 attention and summation order
//! against the CPU's f64 sums.

#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_backends::cpu::HeadDtype;
use bitnet_backends::cuda::host::{HostDevice, with_host_kernels};
use bitnet_runtime::gpu::GpuExecutor;
use bitnet_runtime::gpu::load::load_gpu_program;
use bitnetc::CpuOptions;
use bitnetc::cuda::{CudaOptions, compile_cuda};

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
        let mut run =
            GpuExecutor::new(compiled.gpu_program().unwrap(), HostDevice::new(hk)).unwrap();
        let ours = run.forward(prompt, 0).unwrap().to_vec();
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
            // Decode steps through the captured graph (forward_last with one token).
            let ours = run.forward_last(&[next], pos).unwrap().to_vec();
            let theirs = cpu.forward(&[next], pos).unwrap().to_vec();
            let err = max_rel(&ours, &theirs[theirs.len() - vocab..]);
            assert!(err < 1e-3, "{name} step {step}: logits differ by {err}");
            let (a, b) = (last(&ours), last(&theirs));
            assert_eq!(a, b, "{name} step {step}: greedy tokens differ");
            next = a;
            tokens.push(next);
        }
        if steps > 0 {
            assert_eq!(
                run.device().replays,
                steps as u64,
                "{name}: one replay per decode step"
            );
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

#[test]
fn the_gpu_executor_runs_the_last_token_alone_as_the_full_step_does() {
    let dir = support::root().join("tests/fixtures/hf-tiny/packed");
    let mut m = bitnetc::Model::open(&dir).unwrap();
    let compiled = compile_cuda(&mut m, &CudaOptions::default()).unwrap();
    let vocab = compiled.parts.vocab as usize;
    let prompt: Vec<i64> = vec![1, 17, 230, 5, 999];
    with_host_kernels(&compiled.parts.kinds, |hk| {
        let mut a = GpuExecutor::new(compiled.gpu_program().unwrap(), HostDevice::new(hk)).unwrap();
        let all = a.forward(&prompt, 0).unwrap().to_vec();
        let mut b = GpuExecutor::new(compiled.gpu_program().unwrap(), HostDevice::new(hk)).unwrap();
        let last = b.forward_last(&prompt, 0).unwrap().to_vec();
        assert_eq!(&all[all.len() - vocab..], &last[..], "bit for bit");
        // Without graphs, decode steps give the same logits as with them.
        let mut c = GpuExecutor::new(compiled.gpu_program().unwrap(), HostDevice::new(hk)).unwrap();
        c.set_graphs(false);
        c.forward_last(&prompt, 0).unwrap();
        for (i, tok) in [7i64, 300, 12].into_iter().enumerate() {
            let pos = (prompt.len() + i) as u64;
            let with = b.forward_last(&[tok], pos).unwrap().to_vec();
            let without = c.forward_last(&[tok], pos).unwrap().to_vec();
            assert_eq!(with, without, "decode step {i}");
        }
        assert_eq!(b.device().replays, 3);
        assert_eq!(c.device().replays, 0);
        // Bad input is an error, not a launch.
        assert!(b.forward_last(&[], 0).is_err());
        assert!(b.forward_last(&[vocab as i64], 0).is_err());
        assert!(b.forward_last(&[1], compiled.parts.context).is_err());
    })
    .unwrap();
}

#[test]
fn a_cuda_artifact_loads_and_runs_as_compiled() {
    let dir = support::root().join("tests/fixtures/hf-tiny/packed");
    let mut m = bitnetc::Model::open(&dir).unwrap();
    let compiled = compile_cuda(&mut m, &CudaOptions::default()).unwrap();
    let tmp = support::Scratch::create("cuda-host-artifact");
    let path = tmp.join("tiny.cuda.bnx");
    std::fs::write(&path, compiled.artifact().unwrap()).unwrap();
    let loaded = load_gpu_program(&path).unwrap();
    assert_eq!(loaded.program.arch, "sm_80");
    assert!(loaded.tokenizer.is_some());
    let prompt: Vec<i64> = vec![1, 17, 230, 5, 999];
    with_host_kernels(&compiled.parts.kinds, |hk| {
        let mut a = GpuExecutor::new(loaded.program, HostDevice::new(hk)).unwrap();
        let mut b = GpuExecutor::new(compiled.gpu_program().unwrap(), HostDevice::new(hk)).unwrap();
        assert_eq!(
            a.forward(&prompt, 0).unwrap().to_vec(),
            b.forward(&prompt, 0).unwrap().to_vec()
        );
    })
    .unwrap();
}

#[test]
fn backend_cuda_without_a_driver_is_a_clear_error() {
    if bitnet_runtime::gpu::driver::driver_present() {
        return;
    }
    let dir = support::root().join("tests/fixtures/hf-tiny/packed");
    let dir = dir.to_str().unwrap();
    for args in [
        vec!["run", dir, "--tokens", "1,2,3", "--backend", "cuda"],
        vec!["logits", dir, "--tokens", "1,2,3", "--backend", "cuda"],
    ] {
        let out = support::bitnetc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("no CUDA driver"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
