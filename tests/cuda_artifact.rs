//! CUDA artifacts (`bitnetc compile --target cuda`): the same container as a CPU artifact with the
//! PTX as its code, a grid on every launch, a target the CPU loader refuses by name, and
//! byte-identical output for the same inputs. Without the `cuda` feature: the typed "not compiled"
//! error, from the library and from the command line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnetc::cuda::{CudaOptions, compile_cuda};

fn tiny(form: &str) -> std::path::PathBuf {
    support::root().join("tests/fixtures/hf-tiny").join(form)
}

#[cfg(not(feature = "cuda"))]
#[test]
fn without_the_feature_cuda_is_a_typed_error() {
    let dir = tiny("online");
    let mut m = bitnetc::Model::open(&dir).unwrap();
    match compile_cuda(&mut m, &CudaOptions::default()) {
        Err(bitnetc::Error::Backend(bitnet_backends::BackendError::NotCompiled { backend })) => {
            assert_eq!(backend, "cuda")
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("compiled for CUDA without the cuda feature"),
    }
    let scratch = support::Scratch::create("cuda-off");
    let out = scratch.join("m.bnx");
    let o = support::bitnetc(&[
        "compile",
        dir.to_str().unwrap(),
        "--target",
        "cuda",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--features cuda"), "{err}");
    assert!(!out.exists());
}

#[cfg(feature = "cuda")]
#[test]
fn a_cuda_artifact_holds_ptx_and_grids_and_the_cpu_loader_refuses_it() {
    use bitnet_runtime::artifact;
    let dir = tiny("packed");
    let mut m = bitnetc::Model::open(&dir).unwrap();
    let c = compile_cuda(
        &mut m,
        &CudaOptions {
            arch: bitnet_backends::cuda::CudaArch::Sm86,
        },
    )
    .unwrap();
    let bytes = c.artifact().unwrap();
    let parsed = artifact::parse(&bytes).unwrap();
    let man = &parsed.manifest;
    assert_eq!(man.target.os, "cuda");
    assert_eq!(man.target.triple, "nvptx64-nvidia-cuda");
    assert_eq!(man.target.features, vec!["sm_86".to_string()]);
    let code = &bytes[parsed.sections["code"].clone()];
    let ptx = std::str::from_utf8(code).unwrap();
    assert!(ptx.contains(".target sm_86"));
    for k in &man.kernels {
        assert!(
            ptx.contains(&format!(".entry {}(", k.symbol)),
            "{}",
            k.symbol
        );
    }
    assert!(!man.launches.is_empty());
    for l in &man.launches {
        let g = l
            .cuda
            .unwrap_or_else(|| panic!("launch {} has no grid", l.label));
        assert!(
            g.block >= 32 && g.block <= 1024 && g.block % 32 == 0,
            "{g:?}"
        );
        assert!(g.rows_per_block >= 1);
    }
    assert!(parsed.sections.contains_key("weights"));
    assert!(parsed.sections.contains_key("tokenizer"));
    // The CPU loader names the target instead of trying to load PTX as a library.
    let scratch = support::Scratch::create("cuda-artifact");
    let path = scratch.join("m.bnx");
    std::fs::write(&path, &bytes).unwrap();
    let err = match artifact::load_program(&path) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the CPU loader loaded a CUDA artifact"),
    };
    assert!(
        err.contains("CUDA") && err.contains("nvptx64-nvidia-cuda") && err.contains("sm_86"),
        "{err}"
    );
    // Same inputs and flags: the same bytes.
    let mut again = bitnetc::Model::open(&dir).unwrap();
    let c2 = compile_cuda(
        &mut again,
        &CudaOptions {
            arch: bitnet_backends::cuda::CudaArch::Sm86,
        },
    )
    .unwrap();
    assert!(
        c2.artifact().unwrap() == bytes,
        "the artifact is not deterministic"
    );
}

#[cfg(feature = "cuda")]
#[test]
fn the_cli_writes_a_cuda_artifact_and_the_ptx() {
    let scratch = support::Scratch::create("cuda-cli");
    let out = scratch.join("m.bnx");
    let dir = tiny("online");
    let o = support::bitnetc(&[
        "compile",
        dir.to_str().unwrap(),
        "--target",
        "cuda",
        "--cuda-arch",
        "sm_90",
        "--emit",
        "ptx",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ptx = std::fs::read_to_string(scratch.join("m.ptx")).unwrap();
    assert!(ptx.contains(".target sm_90"));
    assert!(out.is_file());
    let o = support::bitnetc(&[
        "compile",
        dir.to_str().unwrap(),
        "--target",
        "cuda",
        "--cuda-arch",
        "sm_70",
        "-o",
        scratch.join("x.bnx").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("sm_80, sm_86, sm_89, sm_90"));
}
