//! `bitnetc eval FILE.bir`: run a function with the reference interpreter, on `.npy` inputs, and
//! summarize, save or check its results against references.

use super::bir_file::load_or_report;
use anyhow::{Context, Result, bail};
use bitnet_frontend::{SafetensorsStore, npy};
use bitnet_ir::tensor::max_relative_error;
use bitnet_ir::{NoWeights, Tensor, WeightStore, interp};
use std::path::PathBuf;
use std::process::ExitCode;

/// The arguments of `bitnetc eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// The IR file.
    pub file: PathBuf,
    /// The function to run.
    #[arg(long, default_value = "main")]
    pub function: String,
    /// The weights that `nn.weight` ops refer to.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// An input, as NAME=FILE.npy (NAME is the argument without `%`); once per argument.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// Where to write the results (.npy), one per result in order; without it, results are summarized.
    #[arg(long = "output", value_name = "FILE.npy")]
    pub outputs: Vec<PathBuf>,
    /// Reference values for the results (.npy), in order (fewer than the results is fine): prints
    /// max|result - reference| / max|reference| for each and fails above --tolerance.
    #[arg(long = "expect", value_name = "FILE.npy")]
    pub expects: Vec<PathBuf>,
    /// The largest relative error --expect accepts.
    #[arg(long, default_value_t = 1e-5)]
    pub tolerance: f64,
}

/// Runs the command.
pub fn run(args: &EvalArgs) -> Result<ExitCode> {
    let EvalArgs {
        file,
        function,
        weights,
        inputs,
        outputs,
        expects,
        tolerance,
    } = args;
    let tolerance = *tolerance;
    let Some(m) = load_or_report(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let f = m
        .function(function)
        .with_context(|| format!("{}: no function @{function}", file.display()))?;
    let store: Box<dyn WeightStore> = match weights {
        Some(p) => Box::new(SafetensorsStore::open(p)?),
        None => Box::new(NoWeights),
    };
    let tensors = bind_inputs(f, inputs)?;
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
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
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
