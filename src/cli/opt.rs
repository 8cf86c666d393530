//! `bitnetc opt INPUT`: run a pass pipeline on IR (a `.bir` file) or on an imported model and print
//! the result, with the pass manager's timing, IR dumps and the passes' notes on stderr.

use super::bir_file::load_or_report;
use super::output::{write_new, write_or_print};
use anyhow::{Context, Result};
use bitnet_frontend::SafetensorsStore;
use bitnet_ir::WeightStore;
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc opt`.
#[derive(clap::Args)]
pub struct OptArgs {
    /// A .bir file or a model (HF folder, .gguf, .onnx).
    pub input: PathBuf,
    /// The pipeline: comma-separated pass names (default: the -O pipeline).
    #[arg(short = 'p', long = "passes")]
    pub pipeline: Option<String>,
    /// Weights for a .bir input (passes that look at weight values need them).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Write the IR here instead of stdout (an existing file is not overwritten).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print each pass's time.
    #[arg(long)]
    pub time_passes: bool,
    /// Print the IR after the named pass (repeatable).
    #[arg(long = "print-after", value_name = "PASS")]
    pub print_after: Vec<String>,
    /// Print the IR after every pass.
    #[arg(long)]
    pub print_after_all: bool,
    /// Write the IR after every pass into DIR as numbered files (DIR must not exist yet).
    #[arg(long, value_name = "DIR")]
    pub dump_phases: Option<PathBuf>,
    /// Print, for each lowered layer, the rewrite rules that fired.
    #[arg(long)]
    pub explain: bool,
    /// The layout `pack-weights` packs into: i2s-128 (the default), low-first-row or i2s-32.
    #[arg(long, value_name = "NAME")]
    pub pack_layout: Option<String>,
}

/// Runs the command.
pub fn run(args: &OptArgs) -> Result<ExitCode> {
    let format = bitnet_frontend::detect::detect(&args.input)?;
    let (mut module, store): (bitnet_ir::Module, Option<Box<dyn WeightStore>>) =
        if format == bitnet_frontend::detect::ModelFormat::Bir {
            let Some(m) = load_or_report(&args.input)? else {
                return Ok(ExitCode::FAILURE);
            };
            let store: Option<Box<dyn WeightStore>> = match &args.weights {
                Some(p) => Some(Box::new(SafetensorsStore::open(p)?)),
                None => None,
            };
            (m, store)
        } else {
            let m = bitnetc::OpenOptions::default().open_as(&args.input, format)?;
            (m.module, Some(m.weights))
        };
    let spec = args
        .pipeline
        .clone()
        .unwrap_or_else(|| bitnet_passes::DEFAULT_PIPELINE.to_string());
    let mut pm = bitnet_passes::PassManager::new(bitnet_passes::parse_pipeline(&spec)?);
    pm.verify_each = true;
    pm.print_after = if args.print_after_all || args.dump_phases.is_some() {
        bitnet_passes::PrintAfter::All
    } else if args.print_after.is_empty() {
        bitnet_passes::PrintAfter::None
    } else {
        bitnet_passes::PrintAfter::Passes(args.print_after.clone())
    };
    let mut cx = bitnet_passes::PassContext::new(store.as_deref());
    cx.explain = args.explain;
    if let Some(name) = &args.pack_layout {
        use bitnet_passes::pack_weights::PackLayout;
        cx.pack_layout = PackLayout::by_name(name).with_context(|| {
            let known: Vec<&str> = PackLayout::ALL.iter().map(|l| l.name).collect();
            format!("unknown pack layout {name:?}; known: {}", known.join(", "))
        })?;
    }
    let runs = pm.run(&mut module, &mut cx)?;
    if let Some(dir) = &args.dump_phases {
        std::fs::create_dir(dir)
            .with_context(|| format!("{}: cannot create (it must not exist yet)", dir.display()))?;
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
    if args.time_passes {
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
    let text = bitnet_ir::text::print_module(&module);
    write_or_print(args.output.as_deref(), &text)?;
    Ok(ExitCode::SUCCESS)
}
