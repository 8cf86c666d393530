//! `bitnetc compile` for a CPU target: Cranelift object code for every kernel, linked with the
//! system C compiler driver into the artifact. Without a linker, `--emit obj` still writes the
//! object (and the other side files) and says the artifact was not written.

use super::{CompileArgs, Outputs};
use crate::cli::output::{write_new, write_new_artifact};
use anyhow::{Context, Result, bail};

/// Side files `--emit` may ask for with a CPU target: kind → extension.
const KINDS: [(&str, &str); 5] = [
    ("ir", "ir.bir"),
    ("opt-ir", "opt.bir"),
    ("clif", "clif"),
    ("asm", "s"),
    ("obj", "o"),
];

/// Checks every output path first (nothing is overwritten), compiles, writes the side files asked
/// for, links and writes the artifact.
pub fn compile(args: &CompileArgs) -> Result<()> {
    let CompileArgs {
        model,
        output,
        target,
        target_cpu,
        emit,
        context,
        linker,
        precision,
        ..
    } = args;
    let out = Outputs::check(output, emit, &KINDS, "")?;
    if !bitnet_backends::cpu::aot::TARGETS.contains(&target.as_str()) {
        bail!(
            "--target {target}: expected one of {}",
            bitnet_backends::cpu::aot::TARGETS.join(", ")
        );
    }
    let (side, wanted) = (|ext: &str| out.side(ext), |kind: &str| out.wanted(kind));
    // `--head-kl-bound`: the lossy heads measured by JIT builds on this CPU (their logits do not
    // depend on the target: every kernel variant gives the same bits).
    let mut measured = bitnetc::Options {
        context: *context,
        quantize: precision.quantize,
        ..bitnetc::Options::default()
    };
    measured.cpu.head = precision.head_dtype;
    measured.cpu.dense = precision.dense_dtype;
    args.head_bound
        .apply(model, precision.head_dtype, &mut measured)?;
    let cpu = bitnetc::CpuOptions {
        head: measured.cpu.head,
        dense: precision.dense_dtype,
        ..bitnetc::CpuOptions::default()
    };
    let mut m = bitnetc::OpenOptions {
        context: *context,
        quantize: precision.quantize,
    }
    .open(model)?;
    let options = bitnetc::ArtifactOptions {
        target: target.to_string(),
        target_cpu: target_cpu.clone(),
        cpu,
        ir: wanted("ir"),
        clif: wanted("clif"),
        asm: wanted("asm"),
    };
    let compiled = bitnetc::compile_cpu_object(&mut m, &options)
        .with_context(|| format!("{}", model.display()))?;
    let texts = [
        ("ir", compiled.ir.as_deref()),
        ("opt-ir", Some(compiled.opt_ir.as_str())),
        ("clif", compiled.code.clif.as_deref()),
        ("asm", compiled.code.asm.as_deref()),
    ];
    for (kind, ext) in KINDS {
        if !wanted(kind) {
            continue;
        }
        let bytes = match texts.iter().find(|(k, _)| *k == kind) {
            Some((_, text)) => text.unwrap_or_default().as_bytes(),
            None => compiled.code.object.as_slice(),
        };
        write_new(&side(ext), bytes)?;
        println!("wrote {}", side(ext).display());
    }
    match compiled.shared_library(linker.as_deref()) {
        Ok(library) => {
            let bytes =
                write_new_artifact(output, &compiled, &library).map_err(anyhow::Error::msg)?;
            let against = input_bytes(model)
                .filter(|&n| n > 0)
                .map(|n| format!("; {:.3}× the input's {n} bytes", bytes as f64 / n as f64))
                .unwrap_or_default();
            println!(
                "wrote {} ({} bytes: {} kernels, {} launches, {} bytes of weights; lm_head {}; target {}{against})",
                output.display(),
                bytes,
                compiled.parts.kinds.len(),
                compiled.parts.launches.len(),
                compiled.parts.weights.len(),
                compiled.parts.head_storage().unwrap_or("none"),
                compiled.code.target.triple
            );
        }
        Err(bitnetc::Error::Aot(bitnet_backends::cpu::aot::AotError::NoLinker {
            linker,
            reason,
        })) if wanted("obj") => {
            eprintln!(
                "warning: {} was not written: no linker (could not run `{linker}`: {reason}); {} holds the kernels",
                output.display(),
                side("o").display()
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The bytes of the weights the model was read from: a GGUF's size, or a folder's
/// `model*.safetensors` files (not a trained folder's optimizer state); `None` for other inputs
/// (an ONNX graph may keep its weights in other files) and when they cannot be read.
fn input_bytes(model: &std::path::Path) -> Option<u64> {
    let meta = std::fs::metadata(model).ok()?;
    if meta.is_file() {
        let gguf = model
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        return gguf.then_some(meta.len());
    }
    let mut total = 0u64;
    for entry in std::fs::read_dir(model).ok()? {
        let path = entry.ok()?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            total = total.checked_add(std::fs::metadata(&path).ok()?.len())?;
        }
    }
    Some(total)
}
