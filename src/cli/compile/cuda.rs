//! `bitnetc compile MODEL --target cuda`: the model's kernels as PTX in an artifact (no GPU needed).

use super::{CompileArgs, Outputs};
use crate::cli::output::write_new;
use anyhow::{Context, Result};
use bitnet_backends::cuda::CudaArch;

/// Side files `--emit` may ask for with `--target cuda`: kind → extension.
const KINDS: [(&str, &str); 2] = [("ptx", "ptx"), ("opt-ir", "opt.bir")];

/// Checks every output path first (nothing is overwritten), compiles, writes the side files asked
/// for and the artifact.
pub fn compile(args: &CompileArgs) -> Result<()> {
    let CompileArgs {
        model,
        output,
        emit,
        context,
        cuda_arch,
        precision,
        ..
    } = args;
    for (flag, dtype) in [
        ("--head-dtype", precision.head_dtype),
        ("--dense-dtype", precision.dense_dtype),
    ] {
        if dtype != bitnet_backends::cpu::HeadDtype::Auto {
            anyhow::bail!(
                "{flag} {}: the cuda target chooses its own precision (f16 lm_head, dense weights as they are); leave it at auto",
                dtype.name()
            );
        }
    }
    let arch = match cuda_arch.as_deref() {
        None => CudaArch::default(),
        Some(a) => CudaArch::parse(a).with_context(|| {
            let known: Vec<&str> = CudaArch::ALL.iter().map(|a| a.name()).collect();
            format!("--cuda-arch {a}: expected one of {}", known.join(", "))
        })?,
    };
    let out = Outputs::check(output, emit, &KINDS, "with --target cuda, ")?;
    let (side, wanted) = (|ext: &str| out.side(ext), |kind: &str| out.wanted(kind));
    if !cfg!(feature = "cuda") {
        return Err(bitnet_backends::BackendError::NotCompiled { backend: "cuda" }.into());
    }
    let mut m = bitnetc::OpenOptions {
        context: *context,
        quantize: precision.quantize,
    }
    .open(model)?;
    let compiled = bitnetc::cuda::compile_cuda(&mut m, &bitnetc::cuda::CudaOptions { arch })
        .with_context(|| format!("{}", model.display()))?;
    for (kind, ext) in KINDS {
        if !wanted(kind) {
            continue;
        }
        let text = match kind {
            "ptx" => compiled.code.ptx.as_str(),
            _ => compiled.provenance.ir.as_str(),
        };
        write_new(&side(ext), text.as_bytes())?;
        println!("wrote {}", side(ext).display());
    }
    let bytes = compiled.artifact()?;
    write_new(output, &bytes)?;
    println!(
        "wrote {} ({} bytes: {} kernels, {} launches, {} bytes of weights; target nvptx64-nvidia-cuda {})",
        output.display(),
        bytes.len(),
        compiled.parts.kinds.len(),
        compiled.parts.launches.len(),
        compiled.parts.weights.len(),
        arch.name()
    );
    Ok(())
}
