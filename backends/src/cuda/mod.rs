//! The CUDA backend: the kernels of a planned program as one PTX module, through LLVM's NVPTX
//! target (inkwell, LLVM 22), and the grid of every launch.
//!
//! The launch plan, the buffers and the weights blob are the CPU backend's (`cpu::lower::
//! plan_program` with `LowerOptions::cuda()`: the lm_head in f16, the embedding in f32): the ternary weights keep the CPU's 2-bit layout,
//! which already suits a warp (`kernels::ternary_matmul`). Each distinct `KernelKind` becomes one
//! `.entry` named `KernelKind::symbol()` (`kernels`), built with the helpers of `emit` and compiled
//! for `--cuda-arch` (`CudaArch`) by `ptx`.
//!
//! Without the `cuda` feature only `CudaArch` and the stub `compile` exist; `compile` then returns
//! `BackendError::NotCompiled { backend: "cuda" }`.

#[cfg(feature = "cuda")]
pub mod emit;
#[cfg(feature = "cuda")]
pub mod host;
#[cfg(feature = "cuda")]
pub mod kernels;
#[cfg(feature = "cuda")]
pub mod ptx;

use crate::BackendError;
use crate::kernel::{KernelKind, KernelOp};

/// Whether the CUDA backend builds kernels of `op` (with the `cuda` feature; `kernels::geometry`
/// refuses the others with a typed error).
pub fn supports(op: KernelOp) -> bool {
    match op {
        KernelOp::Embedding
        | KernelOp::RmsNormQuant
        | KernelOp::ActQuant
        | KernelOp::TernaryMatmul
        | KernelOp::Relu2Mul
        | KernelOp::Add
        | KernelOp::BiasAdd
        | KernelOp::RmsNorm
        | KernelOp::Rope
        | KernelOp::KvStore
        | KernelOp::Attention
        | KernelOp::MatmulNt
        | KernelOp::MatmulNtHalf
        | KernelOp::SiluMul => true,
        KernelOp::MatmulI8 | KernelOp::MatmulQ4 => false,
    }
}

/// The GPU architectures the backend compiles for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CudaArch {
    /// Ampere (A100).
    #[default]
    Sm80,
    /// Ampere (RTX 30xx, A10, A40).
    Sm86,
    /// Ada (RTX 40xx, L4, L40).
    Sm89,
    /// Hopper (H100, H200).
    Sm90,
}

impl CudaArch {
    /// Every architecture, in order.
    pub const ALL: [CudaArch; 4] = [
        CudaArch::Sm80,
        CudaArch::Sm86,
        CudaArch::Sm89,
        CudaArch::Sm90,
    ];

    /// The name `--cuda-arch` and PTX's `.target` spell (`sm_80`).
    pub fn name(self) -> &'static str {
        match self {
            CudaArch::Sm80 => "sm_80",
            CudaArch::Sm86 => "sm_86",
            CudaArch::Sm89 => "sm_89",
            CudaArch::Sm90 => "sm_90",
        }
    }

    /// The architecture named `s`, if any.
    pub fn parse(s: &str) -> Option<CudaArch> {
        CudaArch::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// The kernels of a program as PTX, and each kernel's grid.
#[derive(Clone, Debug)]
pub struct CudaCode {
    /// The PTX module (text), one `.entry` per kernel named `KernelKind::symbol()`.
    pub ptx: String,
    /// The architecture it was compiled for.
    pub arch: CudaArch,
    /// Per kernel (in the order given), how a launch of it maps onto a grid.
    pub launches: Vec<bitnet_runtime::cuda::CudaLaunch>,
}

/// Compiles `kinds` into one PTX module for `arch`.
#[cfg(feature = "cuda")]
pub fn compile(kinds: &[KernelKind], arch: CudaArch) -> Result<CudaCode, BackendError> {
    let launches = kinds
        .iter()
        .map(kernels::geometry)
        .collect::<Result<Vec<_>, _>>()?;
    let ptx = ptx::emit_ptx(kinds, arch)?;
    Ok(CudaCode {
        ptx,
        arch,
        launches,
    })
}

/// Compiles `kinds` into one PTX module for `arch`: this build has no CUDA backend.
#[cfg(not(feature = "cuda"))]
pub fn compile(kinds: &[KernelKind], arch: CudaArch) -> Result<CudaCode, BackendError> {
    let _ = (kinds, arch);
    Err(BackendError::NotCompiled { backend: "cuda" })
}
