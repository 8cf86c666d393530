//! Kernels: ternary (see `KernelKind` for each kernel's buffers, rows and numerics).

use super::KernelKind;
use crate::BackendError;
use cranelift_module::{FuncId, Module};

/// Defines the kernel `kind` in `module`.
pub fn build(_module: &mut dyn Module, kind: &KernelKind) -> Result<FuncId, BackendError> {
    Err(BackendError::Unsupported {
        backend: "cpu",
        op: "kernel",
        detail: format!("{kind:?} is not written yet"),
    })
}
