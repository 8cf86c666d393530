//! bitnet-frontend: what reads users' files. Today: a memory-mapped safetensors weight store and
//! `.npy` tensor files; the HF, GGUF and ONNX importers land with the Frontends issue.

pub mod error;
pub mod npy;
pub mod safetensors_store;

pub use error::FrontendError;
pub use safetensors_store::SafetensorsStore;
