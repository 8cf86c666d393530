//! `bitnetc export`: write a model bitnetc imports as an HF folder in BitNet's packed form or as a
//! GGUF file with ternary projections (`bitnet_frontend::export`), whole or not at all.

use super::flags::parse_quantize;
use anyhow::{Result, bail};
use bitnet_frontend::export::{self, GgufTernary, Source};
use bitnet_frontend::model::PostQuantize;
use std::path::PathBuf;
use std::process::ExitCode;

/// `tokenizer.json` and `tokenizer_config.json` for an HF folder made from the GGUF file `model`:
/// its vocabulary as the runtime builds it (`Tokenizer::to_json`, which encodes as the GGUF
/// tokenizer does), and the bos/eos tokens, `add_bos_token` and chat template from its metadata.
/// None when the file has no vocabulary.
fn gguf_tokenizer_files(model: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>> {
    let file = bitnet_frontend::gguf::GgufFile::open(model)?;
    let meta = file.tokenizer()?;
    if meta.tokens.is_empty() {
        return Ok(Vec::new());
    }
    let source = model.display().to_string();
    let vocab = bitnetc::tokenizer::gguf_vocab(&meta, &source)?;
    let tokenizer = bitnet_runtime::tokenizer::Tokenizer::from_gguf_vocab(&vocab, &source)?;
    let token = |id: Option<u32>| {
        id.and_then(|i| meta.tokens.get(i as usize))
            .map_or(serde_json::Value::Null, |t| t.clone().into())
    };
    let mut config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token(meta.bos_token_id),
        "eos_token": token(meta.eos_token_id),
        "clean_up_tokenization_spaces": false,
    });
    if let Some(add) = meta.add_bos_token {
        config["add_bos_token"] = add.into();
    }
    if let Some(t) = &meta.chat_template {
        config["chat_template"] = t.clone().into();
    }
    let config = format!("{}\n", serde_json::to_string_pretty(&config)?);
    Ok(vec![
        ("tokenizer.json".into(), tokenizer.to_json()?.into_bytes()),
        ("tokenizer_config.json".into(), config.into_bytes()),
    ])
}

/// The arguments of `bitnetc export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// The model: an HF folder (BitNet in any form, or a BitNet-quantized Llama) or a BitNet GGUF.
    pub model: PathBuf,
    /// Where to write: a folder (`--format hf`) or a file (`--format gguf`); it must not exist
    /// unless --force.
    #[arg(short, long)]
    pub output: PathBuf,
    /// The output format.
    #[arg(long, value_parser = ["hf", "gguf"])]
    pub format: String,
    /// The ggml type of the ternary projections in a GGUF: tq2_0 (γ rounded to f16) or i2_s
    /// (bitnet.cpp; γ in f32).
    #[arg(long, value_parser = ["tq2_0", "i2_s"])]
    pub gguf_type: Option<String>,
    /// Also write the f32 master weights of an online (full-precision) source, for training to go
    /// on elsewhere (`master_weights.safetensors` in the HF folder, under transformers' names).
    #[arg(long)]
    pub with_masters: bool,
    /// Ternarize a dense model's projections first (absmean; lossy), as `--quantize ternary` does
    /// at import.
    #[arg(long, value_parser = parse_quantize)]
    pub quantize: Option<PostQuantize>,
    /// Replace an existing output (only once the new one is complete).
    #[arg(long)]
    pub force: bool,
}

impl ExportArgs {
    /// What the audit log records before the command runs.
    pub fn audit(&self) -> (&'static str, serde_json::Value) {
        (
            "export",
            serde_json::json!({
                "command": "export",
                "model": self.model.display().to_string(),
                "output": self.output.display().to_string(),
                "flags": {
                    "format": self.format,
                    "gguf_type": self.gguf_type,
                    "with_masters": self.with_masters,
                    "quantize": self.quantize.map(PostQuantize::name),
                    "force": self.force,
                },
            }),
        )
    }
}

/// Runs the command.
pub fn run(args: &ExportArgs, audit: &mut serde_json::Value) -> Result<ExitCode> {
    let ExportArgs {
        model,
        output,
        format,
        gguf_type,
        with_masters,
        quantize,
        force,
    } = args;
    let hf = match format.as_str() {
        "hf" => true,
        "gguf" => false,
        other => bail!("--format {other}: expected hf or gguf"),
    };
    if hf && gguf_type.is_some() {
        bail!("--gguf-type applies to --format gguf");
    }
    if !hf && *with_masters {
        bail!(
            "--with-masters applies to --format hf (GGUF readers reject tensors the architecture \
             does not name)"
        );
    }
    if output.exists() && !force {
        let empty_folder = hf
            && std::fs::read_dir(output)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty_folder {
            bail!("{}: exists; --force replaces it", output.display());
        }
    }
    let src = Source::open(model, *quantize)?;
    let (what, summary) = if hf {
        let extra = match src.format {
            bitnet_frontend::detect::ModelFormat::Gguf => gguf_tokenizer_files(model)?,
            _ => Vec::new(),
        };
        let s = export::hf(&src, output, *with_masters, *force, &extra)?;
        ("hf folder".to_string(), s)
    } else {
        let ty = gguf_type
            .as_deref()
            .map_or(Some(GgufTernary::Tq2_0), GgufTernary::parse)
            .ok_or_else(|| anyhow::anyhow!("--gguf-type: expected tq2_0 or i2_s"))?;
        let (bytes, mut s) = export::gguf_file(&src, ty)?;
        super::output::write_atomic(output, &bytes, *force)?;
        s.files.push(output.clone());
        (format!("GGUF, {}", ty.name().to_uppercase()), s)
    };
    println!(
        "wrote {} ({what}): {} ternary projections from {}",
        output.display(),
        summary.projections,
        model.display()
    );
    for f in &summary.files {
        println!("  {}", f.display());
    }
    for n in &summary.notes {
        println!("note: {n}");
    }
    audit["projections"] = summary.projections.into();
    audit["notes"] = summary.notes.clone().into();
    Ok(ExitCode::SUCCESS)
}
