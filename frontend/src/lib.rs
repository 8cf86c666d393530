//! bitnet-frontend: what reads users' files: importers (Hugging Face folders, GGUF, ONNX) that turn a
//! model into IR plus a weight store, the memory-mapped safetensors store, and `.npy` tensors.

pub mod decoder;
pub mod detect;
pub mod error;
pub mod gguf;
pub mod hf;
pub mod hf_packing;
pub mod model;
pub mod npy;
pub mod safetensors_store;

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
        detect::ModelFormat::Onnx => Err(FrontendError::format(
            path,
            "ONNX import is not wired in yet",
        )),
        detect::ModelFormat::Bir => Err(FrontendError::format(
            path,
            "a .bir file is IR, not a model: use `bitnetc eval` (or pass --weights to commands that accept it)",
        )),
    }
}
