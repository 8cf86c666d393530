//! bitnet-frontend: what reads users' files: importers (Hugging Face folders, GGUF, ONNX) that turn a
//! model into IR plus a weight store, the memory-mapped safetensors store, and `.npy` tensors.

pub mod decoder;
pub mod detect;
pub mod error;
pub mod export;
pub mod gguf;
pub mod hf;
mod hf_config;
pub mod hf_packing;
pub mod hf_rope;
mod mapped;
pub mod model;
pub mod npy;
pub mod onnx;
pub mod safetensors_store;
pub mod safetensors_writer;
pub mod staging;
pub mod synth;
pub mod ternarize;

pub use error::FrontendError;
pub use safetensors_store::SafetensorsStore;

use std::path::Path;

/// Imports the model at `path` (a Hugging Face folder, a `.gguf`, an `.onnx` or a `.bir` file),
/// detected by content.
pub fn import_model(
    path: &Path,
    opts: &model::ImportOptions,
) -> Result<model::ImportedModel, FrontendError> {
    match detect::detect(path)? {
        detect::ModelFormat::Hf => hf::import_hf(path, opts),
        detect::ModelFormat::Gguf => gguf::import_gguf(path, opts),
        detect::ModelFormat::Onnx => import_onnx_model(path, opts),
        detect::ModelFormat::Bir => Err(FrontendError::format(
            path,
            "a .bir file is IR, not a model: use `bitnetc eval` (or pass --weights to commands that accept it)",
        )),
    }
}

/// Imports an ONNX model as an `ImportedModel`: `@main` with the graph's inputs and outputs; the
/// context option bounds every symbolic dimension.
fn import_onnx_model(
    path: &Path,
    opts: &model::ImportOptions,
) -> Result<model::ImportedModel, FrontendError> {
    if let Some(q) = opts.quantize {
        return Err(FrontendError::format(
            path,
            format!(
                "--quantize {} applies to decoders (Hugging Face folders and GGUF files), not to ONNX graphs",
                q.name()
            ),
        ));
    }
    let mut onnx_opts = onnx::ImportOptions::default();
    if let Some(c) = opts.context {
        onnx_opts.symbol_max = c;
    }
    let m = onnx::import_onnx_with(path, &onnx_opts)?;
    let tensors = m
        .weights
        .names()
        .into_iter()
        .filter_map(|name| {
            let (elem, shape) = m.weights.layout(&name)?;
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let n: u64 = shape.iter().product();
            Some(model::TensorSummary {
                bytes: n.saturating_mul(elem.bits()) / 8,
                dtype: elem.name().to_uppercase(),
                shape,
                name,
            })
        })
        .collect::<Vec<_>>();
    let parameters = tensors
        .iter()
        .map(|t| t.shape.iter().product::<u64>())
        .sum();
    let mut config = std::collections::BTreeMap::new();
    config.insert("inputs".to_string(), m.inputs.join(", "));
    config.insert("outputs".to_string(), m.outputs.join(", "));
    let summary = model::ModelSummary {
        format: "onnx".into(),
        architecture: "onnx graph".into(),
        config,
        parameters,
        tensors,
    };
    Ok(model::ImportedModel {
        module: m.module,
        weights: Box::new(m.weights),
        summary,
        decoder: None,
    })
}
