//! bitnet-runtime: runs compiled programs. It depends on no compiler crate, so a deployment that only
//! runs artifacts carries no egg, Cranelift or LLVM.
//!
//! `program` describes what a backend produces (kernels with one C ABI, a launch plan, sizes, weights);
//! `executor` runs it: arena and KV cache allocated once, buffers resolved once, rows split across a
//! persistent thread pool, nothing allocated per step; `math` holds the math symbols generated code calls; `aligned` the 64-byte aligned weights buffer;
//! `artifact` writes, checks and loads compiled models (`.bnx`); `gpu` runs a CUDA artifact's launch
//! plan on a device (the CUDA driver behind the `cuda` feature, loaded at run time).

pub mod aligned;
pub mod artifact;
pub mod audit;
pub mod chat;
pub mod cuda;
pub mod error;
pub mod executor;
pub mod generator;
pub mod gpu;
pub mod math;
pub mod native;
pub mod program;
pub mod sampling;
pub mod session;
pub mod tokenizer;

pub use aligned::AlignedBytes;
pub use error::RuntimeError;
pub use executor::{Executor, SeqFeed};
pub use program::{BufRef, KernelFn, Launch, Program, Region, Rows};
