//! bitnetc: a compiler for ternary (BitNet b1.58) neural networks.
//!
//! This is the library facade. [`Model::open`] reads a model once (its IR, weights, description,
//! chat template, and a tokenizer built when text is used); [`compile`] makes a model (or a `.bnx`
//! artifact) ready to run through a [`Session`]. The stages are re-exported, and the functions
//! below read `.bir` files with diagnostics rendered for people, run prompts through the reference
//! interpreter, and compile for the CPU (JIT or ahead of time). Every fallible call returns
//! [`Error`].

pub use bitnet_backends as backends;
pub use bitnet_frontend as frontend;
pub use bitnet_ir as ir;
pub use bitnet_passes as passes;
pub use bitnet_runtime as runtime;

pub mod alloc_count;
mod artifact_inputs;
pub mod artifact_weights;
mod bir;
pub mod compliance;
mod cpu;
pub mod cuda;
mod error;
#[cfg(feature = "cuda-runtime")]
pub mod gpu;
pub mod head_choice;
pub mod heap;
pub mod jit;
pub mod machine;
mod model;
mod optimize;
pub mod profile;
mod prompt_logits;
pub mod speed;
pub mod tokenizer;
pub mod validate;

pub use bir::{load_bir, parse_bir};
pub use bitnet_runtime::sampling::SamplingParams;
pub use bitnet_runtime::session::{Cancel, GenerateParams, Generation, Session, StopReason};
pub use cpu::{
    ArtifactOptions, CompiledObject, CpuOptions, compile_cpu, compile_cpu_object, cpu_pack_layout,
    cpu_pipeline,
};
pub use error::Error;
pub use head_choice::{HeadChoice, choose_head};
pub use jit::{Compiled, Options, Origin, compile};
pub use model::{Model, OpenOptions};
pub use optimize::{OptimizeOptions, Optimized, optimize};
pub use prompt_logits::{artifact_prompt_logits, prompt_logits};
