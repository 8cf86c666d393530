//! `bitnetc synth`: write a deterministic random BitNet b1.58 checkpoint in the Hugging Face layout.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc synth`.
#[derive(clap::Args)]
pub struct SynthArgs {
    /// The sizes.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(bitnet_frontend::synth::PRESETS.iter().copied()))]
    pub preset: String,
    /// The folder to create (it must not exist, or be empty).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs the command.
pub fn run(args: &SynthArgs) -> Result<ExitCode> {
    let SynthArgs {
        preset,
        output,
        seed,
    } = args;
    let p = bitnet_frontend::synth::preset(preset)
        .with_context(|| format!("no preset \"{preset}\""))?;
    let s = bitnet_frontend::synth::write_checkpoint(&p, output, *seed)?;
    println!(
        "wrote {} (preset {}, seed {seed}): {} tensors, {} parameters, {} bytes in model.safetensors",
        output.display(),
        p.name,
        s.tensors,
        s.parameters,
        s.bytes
    );
    Ok(ExitCode::SUCCESS)
}
