//! The CPU kernels: one Cranelift function per distinct `KernelKind` (`crate::kernel`, which states
//! the contract: buffers, rows, numerics), one file per kind named as in `cuda/kernels/`
//! (`KernelOp::file_stem`). `build_kernel` is the one place that looks at the variant; each file's
//! `build` receives its params struct.
//!
//! On this backend a kernel has the C ABI `bitnet_runtime::program::KernelFn` and computes exactly
//! its rows `row_begin..row_end`. Transcendental functions the kernels need (`exp` in f64) are
//! called through the runtime's math symbols (`bitnet_runtime::math`), so JIT and AOT code use the
//! same implementation as the interpreter.

pub mod add;
pub mod attention;
pub mod bias_add;
pub mod embedding;
pub mod kv_store;
pub mod matmul;
pub mod matmul_half;
pub mod matmul_i8;
pub mod matmul_q4;
pub mod norm;
pub mod relu2_mul;
pub mod rope;
pub mod silu_mul;
pub mod ternary_matmul;

use crate::BackendError;
use crate::kernel::KernelKind;
use cranelift_module::{FuncId, Module};

/// Defines the kernel `kind` in `module` under `kind.symbol()` and returns its id.
pub fn build_kernel(module: &mut dyn Module, kind: &KernelKind) -> Result<FuncId, BackendError> {
    match kind {
        KernelKind::Embedding(p) => embedding::build(module, p),
        KernelKind::RmsNormQuant(p) => norm::build_rms_norm_quant(module, p),
        KernelKind::ActQuant(p) => norm::build_act_quant(module, p),
        KernelKind::RmsNorm(p) => norm::build_rms_norm(module, p),
        KernelKind::TernaryMatmul(p) => ternary_matmul::build(module, p),
        KernelKind::Relu2Mul(p) => relu2_mul::build(module, p),
        KernelKind::Add(p) => add::build(module, p),
        KernelKind::Rope(p) => rope::build(module, p),
        KernelKind::KvStore(p) => kv_store::build(module, p),
        KernelKind::Attention(p) => attention::build(module, p),
        KernelKind::MatmulNt(p) => matmul::build(module, p),
        KernelKind::MatmulNtHalf(p) => matmul_half::build(module, p),
        KernelKind::MatmulI8(p) => matmul_i8::build(module, p),
        KernelKind::SiluMul(p) => silu_mul::build(module, p),
        KernelKind::BiasAdd(p) => bias_add::build(module, p),
        KernelKind::MatmulQ4(p) => matmul_q4::build(module, p),
    }
}
