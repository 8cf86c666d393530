//! bitnet-train: quantization-aware training of BitNet b1.58 decoders on bitnetc's own IR.
//!
//! The model a run trains is the decoder the importers describe (`bitnet_frontend::decoder`), with
//! every projection in the `Qat` form: f32 master weights, ternarized by absmean and the activations
//! quantized to int8 per token in the forward pass, with the straight-through estimator of BitNet's
//! recipe written in the graph (`nn.stop_gradient`). `graph` adds the targets and the cross-entropy
//! loss; `bitnet_ir::autodiff` differentiates it through every op's gradient rule; `optim` holds
//! AdamW, clipping and the learning-rate schedule; `data` the tokens and batches; `checkpoint` the
//! folder a run writes (an HF BitNet checkpoint in the online form, plus the optimizer state) and
//! resumes from; `trainer` the loop.
//!
//! The step runs in the reference interpreter (f32 values, f64 gradients): exact and reproducible
//! bit for bit, not fast. A compiled training step is future work.

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod graph;
pub mod init;
pub mod optim;
pub mod params;
pub mod trainer;

pub use error::TrainError;
