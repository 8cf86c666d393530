//! bitnet-backends: code generators that turn a planned module into a `Program`.
//!
//! `kernel`: the kernel layer both backends implement: `KernelKind` (each variant a typed params
//! struct) and its contract (buffers, rows, numerics per backend), and the weight layouts.
//!
//! `cpu`: Cranelift. Each distinct (op, shapes, parameters) becomes one kernel with the C ABI of
//! `bitnet_runtime::program::KernelFn`; `cpu::compile` lowers a planned function into kernels plus a
//! launch plan, and JIT-compiles the kernels.
//!
//! `cuda`: LLVM NVPTX (inkwell), behind the `cuda` feature; the same launch plan, the kernels as one
//! PTX module. Without the feature, `cuda::compile` returns `BackendError::NotCompiled`.

pub mod cpu;
pub mod cuda;
pub mod error;
pub mod kernel;

pub use error::BackendError;
