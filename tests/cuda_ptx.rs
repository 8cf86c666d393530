//! The CUDA backend's PTX, checked offline: every hf-tiny form, every hf-llama variant and the `2b4t`
//! preset's shapes are
//! compiled to PTX for sm_80 and sm_90, and `ptxas` (named by `BITNETC_PTXAS`; `.ci/run` unzips it
//! from the `nvidia-cuda-nvcc-cu12` wheel) must accept each. Without `BITNETC_PTXAS` the PTX is still
//! generated and its structure checked, and the test says visibly that ptxas was skipped.
//!
//! `2b4t`: the preset with one decoder layer instead of 30, written by `synth::write_checkpoint` and
//! imported like any checkpoint. Every layer has the same shapes, and a program has one kernel per
//! distinct `KernelKind`, so its kernels (and PTX) are those of the 30-layer model; the test also
//! compares the kernel list against the one built for two layers. The full model would take minutes
//! to pack and is not needed for the PTX.

#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_backends::cuda::CudaArch;
use bitnetc::cuda::{CudaOptions, compile_cuda};
use std::path::{Path, PathBuf};

const ARCHS: [CudaArch; 2] = [CudaArch::Sm80, CudaArch::Sm90];

/// `ptxas`, if the environment names one.
fn ptxas() -> Option<PathBuf> {
    std::env::var_os("BITNETC_PTXAS")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

/// Compiles the model at `dir` for `arch`: its kernel symbols and PTX.
fn ptx_of(dir: &Path, arch: CudaArch) -> (Vec<String>, String) {
    let mut m = bitnetc::Model::open(dir).unwrap();
    let c = compile_cuda(&mut m, &CudaOptions { arch }).unwrap();
    let symbols = c.parts.kinds.iter().map(|k| k.symbol()).collect();
    (symbols, c.code.ptx)
}

/// Structural checks, then `ptxas` when available. Returns whether ptxas ran.
fn check(name: &str, arch: CudaArch, symbols: &[String], ptx: &str, scratch: &Path) -> bool {
    assert!(
        ptx.contains(&format!(".target {}", arch.name())),
        "{name}: no .target {}",
        arch.name()
    );
    for s in symbols {
        assert!(
            ptx.contains(&format!(".visible .entry {s}(")),
            "{name} {}: kernel {s} is not an entry",
            arch.name()
        );
    }
    // Every call must be resolved inside the module (an unknown intrinsic becomes an extern call).
    assert!(
        !ptx.contains(".extern .func"),
        "{name} {}: the PTX calls an external function",
        arch.name()
    );
    let Some(ptxas) = ptxas() else {
        return false;
    };
    let file = scratch.join(format!("{name}-{}.ptx", arch.name()).replace('/', "-"));
    std::fs::write(&file, ptx).unwrap();
    let out = std::process::Command::new(&ptxas)
        .arg(format!("-arch={}", arch.name()))
        .arg(&file)
        .arg("-o")
        .arg(file.with_extension("cubin"))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", ptxas.display()));
    assert!(
        out.status.success(),
        "ptxas rejected the PTX of {name} for {}:\n{}",
        arch.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

fn report(ran: bool, what: &str) {
    if ran {
        println!("ptxas accepted {what}");
    } else {
        println!("skipped: no ptxas (set BITNETC_PTXAS to check {what} with ptxas)");
    }
}

#[test]
fn ptxas_accepts_every_hf_tiny_form() {
    let scratch = support::Scratch::create("cuda-ptx-tiny");
    let mut ran = true;
    for form in ["online", "packed", "packed_bitlinear"] {
        let dir = support::root().join("tests/fixtures/hf-tiny").join(form);
        for arch in ARCHS {
            let (symbols, ptx) = ptx_of(&dir, arch);
            ran &= check(&format!("hf-tiny/{form}"), arch, &symbols, &ptx, &scratch);
        }
    }
    report(
        ran,
        "hf-tiny (online, packed, packed_bitlinear) for sm_80 and sm_90",
    );
}

#[test]
fn ptxas_accepts_every_hf_llama_variant() {
    // Ternary Llamas (projection biases, llama3 rope scaling) and a dense Qwen2: bias adds, scaled
    // rope tables, SiLU-gated MLPs, dense projections.
    let scratch = support::Scratch::create("cuda-ptx-llama");
    let mut ran = true;
    for variant in [
        "ternary",
        "ternary_tied_bias",
        "ternary_llama3",
        "qwen2_dense",
    ] {
        let dir = support::root()
            .join("tests/fixtures/hf-llama")
            .join(variant);
        for arch in ARCHS {
            let (symbols, ptx) = ptx_of(&dir, arch);
            ran &= check(
                &format!("hf-llama/{variant}"),
                arch,
                &symbols,
                &ptx,
                &scratch,
            );
        }
    }
    report(
        ran,
        "hf-llama (ternary, biases, llama3 rope, qwen2 dense) for sm_80 and sm_90",
    );
}

#[test]
fn ptxas_accepts_the_2b4t_kernels() {
    let scratch = support::Scratch::create("cuda-ptx-2b4t");
    let full = bitnet_frontend::synth::preset("2b4t").unwrap();
    let mut kinds_by_layers = Vec::new();
    for layers in [1u64, 2] {
        let dir = scratch.join(format!("2b4t-{layers}"));
        let p = bitnet_frontend::synth::Preset {
            layers,
            ..full.clone()
        };
        bitnet_frontend::synth::write_checkpoint(&p, &dir, 0).unwrap();
        let mut m = bitnetc::Model::open(&dir).unwrap();
        let c = compile_cuda(&mut m, &CudaOptions::default()).unwrap();
        kinds_by_layers.push(c.parts.kinds.clone());
        if layers == 1 {
            let mut ran = true;
            let symbols: Vec<String> = c.parts.kinds.iter().map(|k| k.symbol()).collect();
            for arch in ARCHS {
                let code = bitnet_backends::cuda::compile(&c.parts.kinds, arch).unwrap();
                ran &= check("2b4t", arch, &symbols, &code.ptx, &scratch);
            }
            report(ran, "the 2b4t kernels for sm_80 and sm_90");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    assert_eq!(
        kinds_by_layers[0], kinds_by_layers[1],
        "more layers changed the kernel set"
    );
}
