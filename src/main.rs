//! The `bitnetc` command line.

use anyhow::{Context, Result, bail};
use bitnet_frontend::model::{ImportOptions, ModelSummary};
use bitnet_frontend::{SafetensorsStore, import_model, npy};
use bitnet_ir::tensor::max_relative_error;
use bitnet_ir::{NoWeights, Tensor, WeightStore, interp, text};
use bitnetc::{BirError, load_bir};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod cli;
use cli::write_new;

/// bitnetc: a compiler for ternary (BitNet b1.58) neural networks.
#[derive(Parser)]
#[command(name = "bitnetc", version, about)]
struct Cli {
    /// Append a record of `compile`, `run`, `bench` and `logits` (inputs and their sha256, flags,
    /// outputs, timings, errors) to this hash-chained JSON-lines log. Default: $BITNETC_AUDIT_LOG
    /// (`off` turns logging off), else audit.jsonl in bitnetc's folder of the user's data directory.
    #[arg(long, global = true, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile a model (or load a .bnx artifact), run a prompt and stream the generated text.
    Run(cli::run::RunArgs),
    /// Measure prefill and decode speed, latency, memory and compile time on this machine, against
    /// the same model compiled with full-precision weights in the same run.
    Bench(cli::bench::BenchArgs),
    /// Parse and verify a .bir file; print every error (exit 1) or a one-line summary.
    Check {
        /// The IR file.
        file: PathBuf,
    },
    /// Print a .bir file in canonical form.
    Print {
        /// The IR file.
        file: PathBuf,
    },
    /// Run a function of a .bir file with the reference interpreter.
    Eval {
        /// The IR file.
        file: PathBuf,
        /// The function to run.
        #[arg(long, default_value = "main")]
        function: String,
        /// The weights that `nn.weight` ops refer to.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// An input, as NAME=FILE.npy (NAME is the argument without `%`); once per argument.
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        /// Where to write the results (.npy), one per result in order; without it, results are summarized.
        #[arg(long = "output", value_name = "FILE.npy")]
        outputs: Vec<PathBuf>,
        /// Reference values for the results (.npy), in order (fewer than the results is fine): prints
        /// max|result - reference| / max|reference| for each and fails above --tolerance.
        #[arg(long = "expect", value_name = "FILE.npy")]
        expects: Vec<PathBuf>,
        /// The largest relative error --expect accepts.
        #[arg(long, default_value_t = 1e-5)]
        tolerance: f64,
    },
    /// Import a model (HF folder, .gguf, .onnx) and print its IR, weights as references.
    Import {
        /// The model.
        model: PathBuf,
        /// Write the IR here instead of stdout (an existing file is not overwritten).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Build the function for this context length (default: the model's maximum).
        #[arg(long)]
        context: Option<u64>,
    },
    /// Run a pass pipeline on IR (a .bir file) or on an imported model, and print the result.
    Opt {
        /// A .bir file or a model (HF folder, .gguf, .onnx).
        input: PathBuf,
        /// The pipeline: comma-separated pass names (default: the -O pipeline).
        #[arg(short = 'p', long = "passes")]
        pipeline: Option<String>,
        /// Weights for a .bir input (passes that look at weight values need them).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Write the IR here instead of stdout (an existing file is not overwritten).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print each pass's time.
        #[arg(long)]
        time_passes: bool,
        /// Print the IR after the named pass (repeatable).
        #[arg(long = "print-after", value_name = "PASS")]
        print_after: Vec<String>,
        /// Print the IR after every pass.
        #[arg(long)]
        print_after_all: bool,
        /// Write the IR after every pass into DIR as numbered files (DIR must not exist yet).
        #[arg(long, value_name = "DIR")]
        dump_phases: Option<PathBuf>,
        /// Print, for each lowered layer, the rewrite rules that fired.
        #[arg(long)]
        explain: bool,
        /// The layout `pack-weights` packs into: i2s-128 (the default), low-first-row or i2s-32.
        #[arg(long, value_name = "NAME")]
        pack_layout: Option<String>,
    },
    /// Compile a model with the default pipeline and report its memory plan: arena bytes against the
    /// lower bound and the naive sum, the KV cache, and every buffer.
    Plan {
        /// The model (HF folder, .gguf, .onnx).
        model: PathBuf,
        /// Plan for this context length (default: the model's maximum).
        #[arg(long)]
        context: Option<u64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Describe a model: architecture, parameters, bytes by dtype, tensors.
    Inspect {
        /// The model.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a prompt through a model and print or save the logits of every position.
    Logits {
        /// The model.
        model: PathBuf,
        /// Token ids, comma-separated (e.g. 1,17,256).
        #[arg(
            long,
            value_delimiter = ',',
            required = true,
            allow_hyphen_values = true
        )]
        tokens: Vec<i64>,
        /// Save the logits [1, T, vocab] as .npy (an existing file is not overwritten).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Where to run: `interp` (the reference interpreter; the default for models; on a .bnx
        /// artifact it runs the compiled IR and weights the artifact carries) or `cpu` (Cranelift JIT
        /// for models; the default for .bnx artifacts).
        #[arg(long)]
        backend: Option<String>,
        /// Run the default pass pipeline first (lowering BitLinear to bit.* ops).
        #[arg(short = 'O', long)]
        optimize: bool,
        /// Run this pass pipeline first (comma-separated pass names).
        #[arg(short = 'p', long = "passes")]
        pipeline: Option<String>,
    },
    /// Compile a model ahead of time for the CPU into an artifact (.bnx) that `bitnetc logits` and the
    /// runtime load without the compiler.
    Compile {
        /// The model (HF folder, .gguf, .onnx).
        model: PathBuf,
        /// The artifact to write (an existing file is not overwritten).
        #[arg(short, long)]
        output: PathBuf,
        /// What to compile for: native (this CPU), x86_64-unknown-linux-gnu (x86-64-v2),
        /// aarch64-unknown-linux-gnu, or cuda (PTX for NVIDIA GPUs; needs a bitnetc built with
        /// --features cuda, but no GPU).
        #[arg(long, default_value = "native")]
        target: String,
        /// The GPU architecture for --target cuda: sm_80, sm_86, sm_89 or sm_90.
        #[arg(long, value_name = "ARCH")]
        cuda_arch: Option<String>,
        /// Also write, next to the output: ir (NAME.ir.bir), opt-ir (NAME.opt.bir), clif (NAME.clif),
        /// asm (NAME.s, Cranelift's listing), obj (NAME.o). Comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "KIND")]
        emit: Vec<String>,
        /// Build for this context length (default: the model's maximum).
        #[arg(long)]
        context: Option<u64>,
        /// The C compiler driver that links the kernels (default: cc, or <arch>-linux-gnu-gcc when
        /// compiling for another architecture).
        #[arg(long)]
        linker: Option<String>,
        /// How the lm_head stores its weights: auto (bf16 when the weights are exactly bf16, else
        /// f32), f16, or i8 (per-row scale, activations quantized per token).
        #[arg(long, default_value = "auto", value_parser = cli::parse_head_dtype)]
        head_dtype: bitnet_backends::cpu::HeadDtype,
    },
    /// Work with audit logs (see --audit-log).
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Write a deterministic random BitNet b1.58 checkpoint (HF layout of microsoft/bitnet-b1.58-2B-4T).
    Synth {
        /// The sizes.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(bitnet_frontend::synth::PRESETS.iter().copied()))]
        preset: String,
        /// The folder to create (it must not exist, or be empty).
        #[arg(short, long)]
        output: PathBuf,
        /// The random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check an audit log's hash chain: print "ok: N records" or the first broken link (exit 1).
    Verify {
        /// The log.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a .bir file; diagnostics go to stderr and become exit code 1.
fn load_or_report(file: &Path) -> Result<Option<bitnet_ir::Module>> {
    match load_bir(file) {
        Ok(m) => Ok(Some(m)),
        Err(BirError::Invalid { count, rendered }) => {
            eprint!("{rendered}");
            eprintln!("{}: {count} error(s)", file.display());
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs a command and, for the commands that are logged, appends its record (or its error's) to the
/// audit log (`cli::audit_log` says where).
fn run(cli: Cli) -> Result<ExitCode> {
    let mut extra = serde_json::json!({});
    let target = cli::audit_log::resolve(cli.audit_log.clone());
    let (Some(target), Some((kind, mut fields))) = (target, audit_fields(&cli.command)?) else {
        return run_command(cli.command, &mut extra);
    };
    let Some(mut log) = cli::audit_log::open(&target)? else {
        return run_command(cli.command, &mut extra);
    };
    if let Some(model) = fields["model"].as_str().map(PathBuf::from)
        && bitnet_runtime::artifact::is_artifact(&model)
    {
        log.append(
            "load",
            serde_json::json!({
                "artifact": model.display().to_string(),
                "inputs": fields["inputs"].clone(),
            }),
        )?;
    }
    let started = std::time::Instant::now();
    let result = run_command(cli.command, &mut extra);
    fields["wall_s"] = started.elapsed().as_secs_f64().into();
    if let (Some(f), serde_json::Value::Object(extra)) = (fields.as_object_mut(), extra) {
        f.extend(extra);
    }
    match &result {
        Ok(_) => {
            if let Some(out) = fields["output"].as_str().map(PathBuf::from)
                && out.is_file()
            {
                fields["output_sha256"] = bitnet_runtime::audit::file_sha256(&out)?.0.into();
            }
            log.append(kind, fields)?;
        }
        Err(e) => {
            fields["message"] = format!("{e:#}").into();
            log.append("error", fields)?;
        }
    }
    result
}

/// What an audit record says about a command before it runs, and its kind; `None` for commands that
/// are not logged.
fn audit_fields(command: &Command) -> Result<Option<(&'static str, serde_json::Value)>> {
    // An unreadable input is recorded as such; the command then fails and its error is logged too.
    let input_digests = |p: &Path| {
        Ok::<_, anyhow::Error>(
            bitnet_runtime::audit::input_digests(p)
                .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() })),
        )
    };
    Ok(match command {
        Command::Compile {
            model,
            output,
            target,
            emit,
            context,
            linker,
            head_dtype,
            ..
        } => Some((
            "compile",
            serde_json::json!({
                "command": "compile",
                "inputs": input_digests(model)?,
                "model": model.display().to_string(),
                "output": output.display().to_string(),
                "flags": {
                    "target": target,
                    "emit": emit,
                    "context": context,
                    "linker": linker,
                    "head_dtype": head_dtype.name(),
                },
                "passes": bitnetc::cpu_pipeline().split(',').collect::<Vec<_>>(),
            }),
        )),
        Command::Logits {
            model,
            tokens,
            output,
            backend,
            optimize,
            pipeline,
        } => Some((
            "run",
            serde_json::json!({
                "command": "logits",
                "inputs": input_digests(model)?,
                "model": model.display().to_string(),
                "tokens": tokens.len(),
                "output": output.as_ref().map(|p| p.display().to_string()),
                "backend": backend.clone().unwrap_or_else(|| {
                    if bitnet_runtime::artifact::is_artifact(model) { "cpu" } else { "interp" }.to_string()
                }),
                "flags": {"optimize": optimize, "passes": pipeline},
            }),
        )),
        Command::Run(args) => Some((
            "run",
            serde_json::json!({
                "command": "run",
                "inputs": input_digests(&args.model)?,
                "model": args.model.display().to_string(),
                "flags": {
                    "max_tokens": args.max_tokens,
                    "head_dtype": args.head_dtype.name(),
                    "chat": args.chat,
                    "threads": args.threads,
                    "context": args.context,
                    "stop": args.stop,
                    "stop_tokens": args.stop_tokens,
                    "ignore_eos": args.ignore_eos,
                },
            }),
        )),
        Command::Bench(args) => Some((
            "run",
            serde_json::json!({
                "command": "bench",
                "inputs": match &args.model {
                    Some(m) => input_digests(m)?,
                    None => serde_json::Value::Null,
                },
                "model": args.model.as_ref().map(|m| m.display().to_string()),
                "flags": {
                    "preset": args.preset,
                    "head_dtype": args.head_dtype.name(),
                    "threads": args.threads,
                    "prompt_len": args.prompt_len,
                    "steps": args.steps,
                    "repeat": args.repeat,
                    "no_baseline": args.no_baseline,
                },
            }),
        )),
        _ => None,
    })
}

/// Runs `command`; the commands that measure something add it to `audit` for the log.
fn run_command(command: Command, audit: &mut serde_json::Value) -> Result<ExitCode> {
    match command {
        Command::Run(args) => cli::run::run(&args, audit)?,
        Command::Bench(args) => cli::bench::run(&args, audit)?,
        Command::Audit {
            action: AuditCommand::Verify { path },
        } => {
            let report = bitnet_runtime::audit::verify(&path)?;
            if let Some(p) = &report.problem {
                println!(
                    "{}: {p} ({} whole record(s) before it verify)",
                    path.display(),
                    report.records
                );
                return Ok(ExitCode::FAILURE);
            }
            println!("ok: {} records", report.records);
            for line in &report.skipped {
                println!(
                    "note: line {line} is a record cut off by a crash; the chain links across it"
                );
            }
            if let Some(line) = report.incomplete_tail {
                println!("note: line {line} onwards is an incomplete record (a write was cut off)");
            }
        }
        Command::Check { file } => {
            let Some(m) = load_or_report(&file)? else {
                return Ok(ExitCode::FAILURE);
            };
            let ops: usize = m.functions.iter().map(|f| f.ops.len()).sum();
            println!(
                "{}: ok ({} function(s), {ops} op(s))",
                file.display(),
                m.functions.len()
            );
        }
        Command::Print { file } => {
            let Some(m) = load_or_report(&file)? else {
                return Ok(ExitCode::FAILURE);
            };
            print!("{}", text::print_module(&m));
        }
        Command::Eval {
            file,
            function,
            weights,
            inputs,
            outputs,
            expects,
            tolerance,
        } => {
            let Some(m) = load_or_report(&file)? else {
                return Ok(ExitCode::FAILURE);
            };
            let f = m
                .function(&function)
                .with_context(|| format!("{}: no function @{function}", file.display()))?;
            let store: Box<dyn WeightStore> = match &weights {
                Some(p) => Box::new(SafetensorsStore::open(p)?),
                None => Box::new(NoWeights),
            };
            let tensors = bind_inputs(f, &inputs)?;
            let results = interp::run_function(f, &tensors, store.as_ref())
                .with_context(|| format!("{}: evaluating @{function}", file.display()))?;
            if outputs.is_empty() {
                for (i, t) in results.iter().enumerate() {
                    println!("result {i}: {}", summarize(t));
                }
            } else if outputs.len() != results.len() {
                bail!(
                    "@{function} has {} result(s) but {} --output path(s) were given",
                    results.len(),
                    outputs.len()
                );
            } else {
                for (path, t) in outputs.iter().zip(&results) {
                    npy::write(path, t)?;
                    println!("wrote {} ({})", path.display(), t.ty());
                }
            }
            if expects.len() > results.len() {
                bail!(
                    "@{function} has {} result(s) but {} --expect path(s) were given",
                    results.len(),
                    expects.len()
                );
            }
            let mut ok = true;
            for (i, (path, t)) in expects.iter().zip(&results).enumerate() {
                let reference = npy::read(path)?;
                let err = max_relative_error(t, &reference).with_context(|| {
                    format!(
                        "result {i}: shapes differ: {} and {}",
                        t.ty(),
                        reference.ty()
                    )
                })?;
                let verdict = if err <= tolerance { "ok" } else { "FAIL" };
                println!(
                    "result {i} vs {}: max relative error {err:.3e} (tolerance {tolerance:e}) {verdict}",
                    path.display()
                );
                ok &= err <= tolerance;
            }
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Import {
            model,
            output,
            context,
        } => {
            let m = import_model(&model, &ImportOptions { context })?;
            let text = text::print_module(&m.module);
            write_or_print(output.as_deref(), &text)?;
        }
        Command::Opt {
            input,
            pipeline,
            weights,
            output,
            time_passes,
            print_after,
            print_after_all,
            dump_phases,
            explain,
            pack_layout,
        } => {
            let (mut module, store): (bitnet_ir::Module, Option<Box<dyn WeightStore>>) =
                if bitnet_frontend::detect::detect(&input)?
                    == bitnet_frontend::detect::ModelFormat::Bir
                {
                    let Some(m) = load_or_report(&input)? else {
                        return Ok(ExitCode::FAILURE);
                    };
                    let store: Option<Box<dyn WeightStore>> = match &weights {
                        Some(p) => Some(Box::new(SafetensorsStore::open(p)?)),
                        None => None,
                    };
                    (m, store)
                } else {
                    let m = import_model(&input, &ImportOptions::default())?;
                    (m.module, Some(m.weights))
                };
            let spec = pipeline.unwrap_or_else(|| bitnet_passes::DEFAULT_PIPELINE.to_string());
            let mut pm = bitnet_passes::PassManager::new(bitnet_passes::parse_pipeline(&spec)?);
            pm.verify_each = true;
            pm.print_after = if print_after_all || dump_phases.is_some() {
                bitnet_passes::PrintAfter::All
            } else if print_after.is_empty() {
                bitnet_passes::PrintAfter::None
            } else {
                bitnet_passes::PrintAfter::Passes(print_after.clone())
            };
            let mut cx = bitnet_passes::PassContext::new(store.as_deref());
            cx.explain = explain;
            if let Some(name) = &pack_layout {
                use bitnet_passes::pack_weights::PackLayout;
                cx.pack_layout = PackLayout::by_name(name).with_context(|| {
                    let known: Vec<&str> = PackLayout::ALL.iter().map(|l| l.name).collect();
                    format!("unknown pack layout {name:?}; known: {}", known.join(", "))
                })?;
            }
            let runs = pm.run(&mut module, &mut cx)?;
            if let Some(dir) = &dump_phases {
                std::fs::create_dir(dir).with_context(|| {
                    format!("{}: cannot create (it must not exist yet)", dir.display())
                })?;
                for (i, r) in runs.iter().enumerate() {
                    if let Some(ir) = &r.ir_after {
                        write_new(
                            &dir.join(format!("{:02}-{}.bir", i + 1, r.name)),
                            ir.as_bytes(),
                        )?;
                    }
                }
            } else {
                for r in &runs {
                    if let Some(ir) = &r.ir_after {
                        eprintln!("; IR after {}\n{ir}", r.name);
                    }
                }
            }
            for n in &cx.notes {
                eprintln!("; {n}");
            }
            if time_passes {
                let total: f64 = runs.iter().map(|r| r.elapsed.as_secs_f64()).sum();
                eprintln!("pass timing (total {:.3} ms):", total * 1e3);
                for r in &runs {
                    eprintln!(
                        "  {:>10.3} ms  {}{}",
                        r.elapsed.as_secs_f64() * 1e3,
                        r.name,
                        if r.changed { "" } else { " (no change)" }
                    );
                }
            }
            let text = text::print_module(&module);
            write_or_print(output.as_deref(), &text)?;
        }
        Command::Plan {
            model,
            context,
            json,
        } => {
            let mut m = import_model(&model, &ImportOptions { context })?;
            let pipeline = format!("{},plan-memory", bitnet_passes::DEFAULT_PIPELINE);
            let opt = bitnetc::optimize(&mut m, &pipeline, false)?;
            for plan in &opt.plans {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&plan_json(&m.module, plan))?
                    );
                } else {
                    print!("{}", plan_text(&m.module, plan));
                }
            }
        }
        Command::Inspect { model, json } => {
            let m = import_model(&model, &ImportOptions::default())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary_json(&m.summary))?
                );
            } else {
                print!("{}", summary_text(&m.summary));
            }
        }
        Command::Logits {
            model,
            tokens,
            output,
            backend,
            optimize,
            pipeline,
        } => {
            let artifact = bitnet_runtime::artifact::is_artifact(&model);
            let backend =
                backend.unwrap_or_else(|| if artifact { "cpu" } else { "interp" }.to_string());
            if backend != "interp" && backend != "cpu" {
                bail!(
                    "--backend {backend}: expected `interp` (the reference interpreter) or `cpu` (Cranelift, JIT)"
                );
            }
            if artifact {
                if optimize || pipeline.is_some() {
                    bail!(
                        "{}: a compiled artifact is already optimized; -O and --passes apply to models",
                        model.display()
                    );
                }
                let logits = if backend == "interp" {
                    // The reference interpreter on the compiled IR and weights the artifact carries.
                    bitnetc::artifact_prompt_logits(&model, &tokens)?
                } else {
                    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                    let mut exec = bitnet_runtime::artifact::load(&model, threads)?;
                    let v = exec.forward(&tokens, 0)?.to_vec();
                    let vocab = exec.program().vocab as usize;
                    Tensor::new(vec![1, tokens.len(), vocab], bitnet_ir::Data::F32(v))
                        .with_context(|| "logits shape".to_string())?
                };
                match output {
                    Some(path) => {
                        write_new(&path, &npy::encode(&logits))?;
                        println!("wrote {} ({})", path.display(), logits.ty());
                    }
                    None => print_logits(&logits),
                }
                return Ok(ExitCode::SUCCESS);
            }
            let context = Some(tokens.len() as u64);
            let mut m = import_model(&model, &ImportOptions { context })?;
            let pipeline =
                pipeline.or_else(|| optimize.then(|| bitnet_passes::DEFAULT_PIPELINE.to_string()));
            let logits = if backend == "cpu" {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let mut exec = bitnetc::compile_cpu(&mut m, threads)
                    .with_context(|| format!("{}", model.display()))?;
                let v = exec.forward(&tokens, 0)?.to_vec();
                let vocab = exec.program().vocab as usize;
                Tensor::new(vec![1, tokens.len(), vocab], bitnet_ir::Data::F32(v))
                    .with_context(|| "logits shape".to_string())?
            } else {
                match pipeline {
                    Some(p) => {
                        let opt = bitnetc::optimize(&mut m, &p, false)?;
                        for n in &opt.notes {
                            eprintln!("; {n}");
                        }
                        let weights = bitnet_passes::Overlay {
                            derived: &opt.derived,
                            base: Some(m.weights.as_ref()),
                        };
                        bitnetc::prompt_logits_with(&m.module, &weights, &tokens)
                    }
                    None => bitnetc::prompt_logits(&m, &tokens),
                }
                .with_context(|| format!("{}", model.display()))?
            };
            match output {
                Some(path) => {
                    write_new(&path, &npy::encode(&logits))?;
                    println!("wrote {} ({})", path.display(), logits.ty());
                }
                None => print_logits(&logits),
            }
        }
        Command::Compile {
            model,
            output,
            target,
            emit,
            context,
            linker,
            cuda_arch,
            head_dtype,
        } => {
            if target == "cuda" {
                cli::cuda::compile(&model, &output, &emit, context, cuda_arch.as_deref())?
            } else if cuda_arch.is_some() {
                bail!("--cuda-arch applies to --target cuda only");
            } else {
                let cpu = bitnetc::CpuOptions {
                    head: head_dtype,
                    ..bitnetc::CpuOptions::default()
                };
                compile(
                    &model,
                    &output,
                    &target,
                    &emit,
                    context,
                    linker.as_deref(),
                    &cpu,
                )?
            }
        }
        Command::Synth {
            preset,
            output,
            seed,
        } => {
            let p = bitnet_frontend::synth::preset(&preset)
                .with_context(|| format!("no preset \"{preset}\""))?;
            let s = bitnet_frontend::synth::write_checkpoint(&p, &output, seed)?;
            println!(
                "wrote {} (preset {}, seed {seed}): {} tensors, {} parameters, {} bytes in model.safetensors",
                output.display(),
                p.name,
                s.tensors,
                s.parameters,
                s.bytes
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bitnetc compile`: checks every output path first (nothing is overwritten), compiles, writes the
/// side files asked for, links and writes the artifact. Without a linker, `--emit obj` still writes the
/// object (and the other side files) and says the artifact was not written.
fn compile(
    model: &Path,
    output: &Path,
    target: &str,
    emit: &[String],
    context: Option<u64>,
    linker: Option<&str>,
    cpu: &bitnetc::CpuOptions,
) -> Result<()> {
    const KINDS: [(&str, &str); 5] = [
        ("ir", "ir.bir"),
        ("opt-ir", "opt.bir"),
        ("clif", "clif"),
        ("asm", "s"),
        ("obj", "o"),
    ];
    let out = cli::Outputs::check(output, emit, &KINDS, "")?;
    if !bitnet_backends::cpu::aot::TARGETS.contains(&target) {
        bail!(
            "--target {target}: expected one of {}",
            bitnet_backends::cpu::aot::TARGETS.join(", ")
        );
    }
    let (side, wanted) = (|ext: &str| out.side(ext), |kind: &str| out.wanted(kind));
    let mut m = import_model(model, &ImportOptions { context })?;
    let options = bitnetc::ArtifactOptions {
        target: target.to_string(),
        ir: wanted("ir"),
        clif: wanted("clif"),
        asm: wanted("asm"),
    };
    let compiled = bitnetc::compile_cpu_object_with(&mut m, model, &options, cpu)
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
    match compiled.link(linker) {
        Ok(bytes) => {
            write_new(output, &bytes)?;
            println!(
                "wrote {} ({} bytes: {} kernels, {} launches, {} bytes of weights; target {})",
                output.display(),
                bytes.len(),
                compiled.parts.kinds.len(),
                compiled.parts.launches.len(),
                compiled.parts.weights.len(),
                compiled.code.target.triple
            );
        }
        Err(bitnetc::CpuError::Aot(bitnet_backends::cpu::aot::AotError::NoLinker {
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

/// Writes IR text to `output` (a new file) or prints it.
fn write_or_print(output: Option<&Path>, text: &str) -> Result<()> {
    match output {
        Some(path) => {
            write_new(path, text.as_bytes())?;
            println!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Prints each position's argmax and its logit, then the first values.
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

fn summary_text(s: &ModelSummary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "format: {}\narchitecture: {}\nparameters: {}",
        s.format, s.architecture, s.parameters
    );
    for (k, v) in &s.config {
        let _ = writeln!(out, "{k}: {v}");
    }
    let _ = writeln!(out, "bytes by dtype:");
    for (k, v) in s.bytes_by_dtype() {
        let _ = writeln!(out, "  {k}: {v}");
    }
    let _ = writeln!(out, "tensors ({}):", s.tensors.len());
    for t in &s.tensors {
        let _ = writeln!(
            out,
            "  {} {} {:?} ({} bytes)",
            t.name, t.dtype, t.shape, t.bytes
        );
    }
    out
}

fn summary_json(s: &ModelSummary) -> serde_json::Value {
    serde_json::json!({
        "format": s.format,
        "architecture": s.architecture,
        "parameters": s.parameters,
        "config": s.config,
        "bytes_by_dtype": s.bytes_by_dtype(),
        "tensors": s.tensors.iter().map(|t| serde_json::json!({
            "name": t.name, "dtype": t.dtype, "shape": t.shape, "bytes": t.bytes,
        })).collect::<Vec<_>>(),
    })
}

/// Matches `NAME=FILE.npy` inputs to the function's arguments, in argument order.
fn bind_inputs(f: &bitnet_ir::Function, inputs: &[String]) -> Result<Vec<Tensor>> {
    let mut given: Vec<(String, PathBuf)> = Vec::new();
    for spec in inputs {
        let (name, path) = spec
            .split_once('=')
            .with_context(|| format!("--input {spec}: expected NAME=FILE.npy"))?;
        let name = name.trim_start_matches('%').to_string();
        if given.iter().any(|(n, _)| *n == name) {
            bail!("--input {name} is given twice");
        }
        given.push((name, PathBuf::from(path)));
    }
    let mut tensors = Vec::with_capacity(f.args.len());
    for &arg in &f.args {
        let name = f.value(arg).name.clone().unwrap_or_default();
        let pos = given
            .iter()
            .position(|(n, _)| *n == name)
            .with_context(|| {
                format!("@{} needs --input {name}=FILE.npy ({})", f.name, f.ty(arg))
            })?;
        let (_, path) = given.remove(pos);
        tensors.push(npy::read(&path)?);
    }
    if let Some((name, _)) = given.first() {
        bail!("@{} has no argument %{name}", f.name);
    }
    Ok(tensors)
}

/// A one-line description of a tensor: its type and first values.
fn summarize(t: &Tensor) -> String {
    let v = t.data.to_f32();
    let head: Vec<String> = v.iter().take(8).map(|x| format!("{x}")).collect();
    let more = if v.len() > 8 { ", ..." } else { "" };
    format!("{} [{}{more}]", t.ty(), head.join(", "))
}

fn plan_json(
    m: &bitnet_ir::Module,
    p: &bitnet_passes::plan_memory::MemoryPlan,
) -> serde_json::Value {
    let f = m.function(&p.function);
    let op_of = |v: &bitnet_ir::ValueId| {
        f.and_then(|f| f.def_op(*v))
            .and_then(|o| f.map(|f| f.op(o).kind.name()))
            .unwrap_or("argument")
    };
    serde_json::json!({
        "function": p.function,
        "arena_bytes": p.arena_bytes,
        "lower_bound_bytes": p.lower_bound,
        "arena_over_lower_bound": p.arena_bytes as f64 / p.lower_bound.max(1) as f64,
        "naive_bytes": p.naive_bytes,
        "kv_cache_bytes": p.kv_bytes,
        "constant_bytes": p.constant_bytes,
        "schedule_length": p.schedule.len(),
        "kv_slots": p.kv_slots.iter().map(|s| serde_json::json!({"name": s.label, "offset": s.offset, "bytes": s.bytes})).collect::<Vec<_>>(),
        "buffers": p.buffers.iter().map(|b| serde_json::json!({
            "name": b.label, "op": b.values.first().map(op_of).unwrap_or("?"), "values": b.values.len(),
            "offset": b.offset, "bytes": b.bytes, "live": [b.start, b.end],
        })).collect::<Vec<_>>(),
    })
}

fn plan_text(m: &bitnet_ir::Module, p: &bitnet_passes::plan_memory::MemoryPlan) -> String {
    use std::fmt::Write;
    let f = m.function(&p.function);
    let mut out = String::new();
    let _ = writeln!(out, "@{}: {} ops scheduled", p.function, p.schedule.len());
    let _ = writeln!(out, "arena:        {:>14} bytes", p.arena_bytes);
    let _ = writeln!(
        out,
        "lower bound:  {:>14} bytes (arena / lower bound = {:.3})",
        p.lower_bound,
        p.arena_bytes as f64 / p.lower_bound.max(1) as f64
    );
    let _ = writeln!(
        out,
        "naive sum:    {:>14} bytes (arena / naive = {:.3})",
        p.naive_bytes,
        p.arena_bytes as f64 / p.naive_bytes.max(1) as f64
    );
    let _ = writeln!(
        out,
        "KV cache:     {:>14} bytes in {} slots",
        p.kv_bytes,
        p.kv_slots.len()
    );
    let _ = writeln!(
        out,
        "constants:    {:>14} bytes computed from weights at compile time",
        p.constant_bytes
    );
    let _ = writeln!(
        out,
        "{:>14} {:>12} {:>11}  {:<16} buffer",
        "offset", "bytes", "live", "op"
    );
    let mut order: Vec<&bitnet_passes::plan_memory::Buffer> = p.buffers.iter().collect();
    order.sort_by_key(|b| (b.start, b.offset));
    for b in order {
        let op = b
            .values
            .first()
            .and_then(|v| {
                f.and_then(|f| f.def_op(*v))
                    .and_then(|o| f.map(|f| f.op(o).kind.name()))
            })
            .unwrap_or("argument");
        let _ = writeln!(
            out,
            "{:>14} {:>12} {:>5}..{:<5}  {:<16} %{}{}",
            b.offset,
            b.bytes,
            b.start,
            b.end,
            op,
            b.label,
            if b.values.len() > 1 {
                format!(" (+{} in place)", b.values.len() - 1)
            } else {
                String::new()
            }
        );
    }
    out
}
