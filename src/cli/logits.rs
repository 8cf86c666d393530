//! `bitnetc logits MODEL --tokens …`: run a prompt through a model (the reference interpreter or the
//! CPU backend) or an artifact and print each position's argmax, or save the logits as `.npy`.

use super::output::write_new;
use anyhow::{Context, Result, bail};
use bitnet_frontend::npy;
use bitnet_ir::Tensor;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc logits`.
#[derive(clap::Args)]
pub struct LogitsArgs {
    /// The model.
    pub model: PathBuf,
    /// Token ids, comma-separated (e.g. 1,17,256).
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        allow_hyphen_values = true
    )]
    pub tokens: Vec<i64>,
    /// Save the logits [1, T, vocab] as .npy (an existing file is not overwritten).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Where to run: `interp` (the reference interpreter; the default for models; on a .bnx
    /// artifact it runs the compiled IR and weights the artifact carries), `cpu` (Cranelift JIT
    /// for models; the default for .bnx artifacts) or `cuda` (CUDA device 0: a `--target cuda`
    /// artifact, or a model compiled for the device; needs the `cuda-runtime` or `cuda` feature).
    #[arg(long)]
    pub backend: Option<String>,
    /// Run the default pass pipeline first (lowering BitLinear to bit.* ops).
    #[arg(short = 'O', long)]
    pub optimize: bool,
    /// Run this pass pipeline first (comma-separated pass names).
    #[arg(short = 'p', long = "passes")]
    pub pipeline: Option<String>,
}

impl LogitsArgs {
    /// The backend asked for, or the default for the input (`cpu` for artifacts, else `interp`).
    fn backend(&self) -> String {
        self.backend.clone().unwrap_or_else(|| {
            if bitnet_runtime::artifact::is_artifact(&self.model) {
                "cpu"
            } else {
                "interp"
            }
            .to_string()
        })
    }

    /// The audit record's kind (`run`) and what it says before the command runs.
    pub fn audit(&self) -> (&'static str, serde_json::Value) {
        (
            "run",
            serde_json::json!({
                "command": "logits",
                "model": self.model.display().to_string(),
                "tokens": self.tokens.len(),
                "output": self.output.as_ref().map(|p| p.display().to_string()),
                "backend": self.backend(),
                "flags": {"optimize": self.optimize, "passes": self.pipeline},
            }),
        )
    }
}

/// Runs the command.
pub fn run(args: &LogitsArgs) -> Result<ExitCode> {
    let LogitsArgs {
        model,
        tokens,
        output,
        optimize,
        pipeline,
        ..
    } = args;
    let artifact = bitnet_runtime::artifact::is_artifact(model);
    let backend = args.backend();
    if backend != "interp" && backend != "cpu" && backend != "cuda" {
        bail!(
            "--backend {backend}: expected `interp` (the reference interpreter), `cpu` (Cranelift, JIT) or `cuda`"
        );
    }
    let logits = if backend == "cuda" {
        if *optimize || pipeline.is_some() {
            bail!(
                "--backend cuda runs the CUDA pipeline; -O and --passes apply to the interpreter"
            );
        }
        cuda_logits(model, tokens)?
    } else if artifact {
        if *optimize || pipeline.is_some() {
            bail!(
                "{}: a compiled artifact is already optimized; -O and --passes apply to models",
                model.display()
            );
        }
        if backend == "interp" {
            // The reference interpreter on the compiled IR and weights the artifact carries.
            bitnetc::artifact_prompt_logits(model, tokens)?
        } else {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut exec = bitnet_runtime::artifact::load(model, threads)?;
            let v = exec.forward(tokens, 0)?.to_vec();
            let vocab = exec.program().vocab as usize;
            Tensor::new(vec![1, tokens.len(), vocab], bitnet_ir::Data::F32(v))
                .with_context(|| "logits shape".to_string())?
        }
    } else {
        let context = Some(tokens.len() as u64);
        let mut m = bitnetc::OpenOptions {
            context,
            ..Default::default()
        }
        .open(model)?;
        let pipeline = pipeline
            .clone()
            .or_else(|| optimize.then(|| bitnet_passes::DEFAULT_PIPELINE.to_string()));
        if backend == "cpu" {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut exec =
                bitnetc::compile_cpu(&mut m, &bitnetc::CpuOptions::with_threads(threads))
                    .with_context(|| format!("{}", model.display()))?;
            let v = exec.forward(tokens, 0)?.to_vec();
            let vocab = exec.program().vocab as usize;
            Tensor::new(vec![1, tokens.len(), vocab], bitnet_ir::Data::F32(v))
                .with_context(|| "logits shape".to_string())?
        } else {
            match pipeline {
                Some(p) => {
                    let opt = bitnetc::optimize(&mut m, &bitnetc::OptimizeOptions::passes(&p))?;
                    for n in &opt.notes {
                        eprintln!("; {n}");
                    }
                    let weights = bitnet_passes::Overlay {
                        derived: &opt.derived,
                        base: Some(m.weights.as_ref()),
                    };
                    bitnetc::prompt_logits(&m.module, &weights, tokens)
                }
                None => bitnetc::prompt_logits(&m.module, m.weights.as_ref(), tokens),
            }
            .with_context(|| format!("{}", model.display()))?
        }
    };
    match output {
        Some(path) => {
            write_new(path, &npy::encode(&logits))?;
            println!("wrote {} ({})", path.display(), logits.ty());
        }
        None => print_logits(&logits),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints each position's argmax and its logit.
fn print_logits(t: &Tensor) {
    let v = t.data.to_f32();
    let vocab = t.shape.last().copied().unwrap_or(1).max(1);
    for (pos, row) in v.chunks(vocab).enumerate() {
        let (arg, max) =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |a, (i, &x)| if x > a.1 { (i, x) } else { a },
            );
        println!("position {pos}: argmax {arg} (logit {max:.4})");
    }
}

/// Every position's logits from CUDA device 0.
#[cfg(feature = "cuda-runtime")]
fn cuda_logits(model: &std::path::Path, tokens: &[i64]) -> Result<Tensor> {
    let options = bitnetc::jit::Options {
        context: Some(tokens.len() as u64),
        ..Default::default()
    };
    let mut m = bitnetc::gpu::open_gpu(model, &options, 0)
        .with_context(|| format!("{}", model.display()))?;
    let v = m.executor.forward(tokens, 0)?.to_vec();
    let vocab = v.len() / tokens.len().max(1);
    Tensor::new(vec![1, tokens.len(), vocab], bitnet_ir::Data::F32(v))
        .with_context(|| "logits shape".to_string())
}

/// `--backend cuda` in a bitnetc built without the CUDA runtime.
#[cfg(not(feature = "cuda-runtime"))]
fn cuda_logits(_model: &std::path::Path, _tokens: &[i64]) -> Result<Tensor> {
    bail!(
        "--backend cuda: this bitnetc is built without the CUDA runtime (build it with --features cuda-runtime, or cuda to compile models too)"
    )
}
