//! `bitnetc compile MODEL -o OUT.bnx`: compile a model ahead of time into an artifact, for a CPU
//! (`cpu.rs`: Cranelift object code linked into a shared library) or for CUDA GPUs (`cuda.rs`: PTX).
//! Both check every output path first (`Outputs`: nothing is overwritten) and write the side files
//! `--emit` asks for next to the artifact. `--profile` presets the flags (`profile.rs`).

mod cpu;
mod cuda;
mod profile;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The arguments of `bitnetc compile`.
#[derive(clap::Args, Clone)]
pub struct CompileArgs {
    /// The model (HF folder, .gguf, .onnx).
    pub model: PathBuf,
    /// The artifact to write (an existing file is not overwritten).
    #[arg(short, long)]
    pub output: PathBuf,
    /// What to compile for: native (this CPU), x86_64-unknown-linux-gnu (x86-64-v2),
    /// aarch64-unknown-linux-gnu, or cuda (PTX for NVIDIA GPUs; needs a bitnetc built with
    /// --features cuda, but no GPU).
    #[arg(long, default_value = "native")]
    pub target: String,
    /// The CPU level the code may assume, recorded in the artifact as its required features (a
    /// CPU without one refuses to load it): native (every feature of this CPU; the default for
    /// --target native), generic (the architecture's baseline; the default for a named triple),
    /// x86-64-v3 (AVX2, FMA, BMI) or x86-64-v4 (AVX-512). The hot kernels pick the best variant
    /// the running CPU has at or above that level.
    #[arg(long, value_name = "CPU", value_parser = clap::builder::PossibleValuesParser::new(bitnet_backends::cpu::aot::TARGET_CPUS.iter().copied()))]
    pub target_cpu: Option<String>,
    /// The GPU architecture for --target cuda: sm_80, sm_86, sm_89 or sm_90.
    #[arg(long, value_name = "ARCH")]
    pub cuda_arch: Option<String>,
    /// Also write, next to the output: ir (NAME.ir.bir), opt-ir (NAME.opt.bir), clif (NAME.clif),
    /// asm (NAME.s, Cranelift's listing), obj (NAME.o). Comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "KIND")]
    pub emit: Vec<String>,
    /// Build for this context length (default: the model's maximum).
    #[arg(long)]
    pub context: Option<u64>,
    /// The C compiler driver that links the kernels (default: cc, or <arch>-linux-gnu-gcc when
    /// compiling for another architecture).
    #[arg(long)]
    pub linker: Option<String>,
    /// A named preset of --target, --emit and --head-dtype: development, production, inference
    /// (training comes with issue 18); see docs/presets.md.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(profile::PROFILES.iter().copied()), conflicts_with_all = ["target", "emit", "head_dtype"])]
    pub profile: Option<String>,
    #[command(flatten)]
    pub precision: super::flags::PrecisionArgs,
    #[command(flatten)]
    pub head_bound: super::flags::HeadBoundArgs,
}

impl CompileArgs {
    /// The audit record's kind (`compile`) and what it says before the command runs.
    pub fn audit(&self) -> (&'static str, serde_json::Value) {
        // The flags in force: a profile's (a profile that is refused leaves them as given).
        let effective = profile::apply(self).ok();
        let s = effective.as_ref().unwrap_or(self);
        (
            "compile",
            serde_json::json!({
                "command": "compile",
                "model": s.model.display().to_string(),
                "output": s.output.display().to_string(),
                "flags": {
                    "profile": self.profile,
                    "target": s.target,
                    "target_cpu": s.target_cpu,
                    "emit": s.emit,
                    "context": s.context,
                    "linker": s.linker,
                    "precision": s.precision.audit(),
                    "head_kl_bound": s.head_bound.head_kl_bound,
                },
                "passes": bitnetc::cpu_pipeline().split(',').collect::<Vec<_>>(),
            }),
        )
    }
}

/// Runs the command.
pub fn run(args: &CompileArgs) -> Result<ExitCode> {
    let args = &profile::apply(args)?;
    if args.target == "cuda" {
        if args.target_cpu.is_some() {
            bail!("--target-cpu applies to CPU targets, not --target cuda (see --cuda-arch)");
        }
        if args.head_bound.head_kl_bound.is_some() {
            bail!("--head-kl-bound measures CPU builds; --target cuda takes the exact head");
        }
        cuda::compile(args)?;
    } else if args.cuda_arch.is_some() {
        bail!("--cuda-arch applies to --target cuda only");
    } else {
        cpu::compile(args)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What `bitnetc compile` writes: the artifact, and for each `--emit` kind asked for, `STEM.EXT`
/// beside it.
struct Outputs<'a> {
    stem: String,
    output: &'a Path,
    emit: &'a [String],
}

impl<'a> Outputs<'a> {
    /// Checks `emit` against `kinds` (kind → extension; `for_target` is said in the error, e.g.
    /// "with --target cuda, ") and that none of the files exists yet: nothing is overwritten.
    fn check(
        output: &'a Path,
        emit: &'a [String],
        kinds: &[(&str, &str)],
        for_target: &str,
    ) -> Result<Outputs<'a>> {
        for e in emit {
            if !kinds.iter().any(|(k, _)| k == e) {
                let known: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
                bail!(
                    "--emit {e}: {for_target}expected one of {}",
                    known.join(", ")
                );
            }
        }
        let stem = output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .with_context(|| format!("{}: not a file name", output.display()))?;
        let out = Outputs { stem, output, emit };
        let mut paths = vec![output.to_path_buf()];
        paths.extend(
            kinds
                .iter()
                .filter(|(k, _)| out.wanted(k))
                .map(|(_, ext)| out.side(ext)),
        );
        if let Some(p) = paths.iter().find(|p| p.exists()) {
            bail!(
                "{}: already exists (bitnetc does not overwrite files)",
                p.display()
            );
        }
        Ok(out)
    }

    /// Whether `--emit` asked for `kind`.
    fn wanted(&self, kind: &str) -> bool {
        self.emit.iter().any(|e| e == kind)
    }

    /// The side file with extension `ext`.
    fn side(&self, ext: &str) -> PathBuf {
        self.output.with_file_name(format!("{}.{ext}", self.stem))
    }
}
