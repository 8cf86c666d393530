//! bitnet-backends: code generators that turn a planned module into a `Program`.
//!
//! `cpu`: Cranelift. Each distinct (op, shapes, parameters) becomes one kernel with the C ABI of
//! `bitnet_runtime::program::KernelFn`; `cpu::compile` lowers a planned function into kernels plus a
//! launch plan, and JIT-compiles the kernels. The CUDA backend (LLVM NVPTX) comes later, behind a feature.

pub mod cpu;
pub mod error;

pub use error::BackendError;
