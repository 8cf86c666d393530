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

#[cfg(test)]
mod tests {
    use crate::cuda;
    use crate::kernel::KernelOp;
    use std::path::Path;

    /// Each op's kernel lives in `<backend>/kernels/<file_stem>.rs` in the CPU backend and, where
    /// the CUDA backend builds it, in the CUDA backend too.
    #[test]
    fn every_op_has_its_file_in_each_backend() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for op in KernelOp::ALL {
            let file = format!("{}.rs", op.file_stem());
            let cpu = src.join("cpu/kernels").join(&file);
            assert!(cpu.is_file(), "{op:?}: {} is missing", cpu.display());
            let cuda = src.join("cuda/kernels").join(&file);
            assert_eq!(
                cuda.is_file(),
                cuda::supports(op),
                "{op:?}: {} exists exactly when the CUDA backend builds the op",
                cuda.display()
            );
        }
    }
}
