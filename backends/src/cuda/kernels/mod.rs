//! The CUDA kernels: one NVPTX `.entry` per distinct `KernelKind` (`crate::kernel`, which states the
//! contract: buffers, rows, numerics per backend), with the same launch plan as the CPU, and the grid
//! each kind runs on. One file per kind, named as in `cpu/kernels/` (`KernelOp::file_stem`); `build`
//! is the one place that looks at the variant, and each file's `build` receives its params struct.
//!
//! Every kernel takes one global pointer per buffer, then a pointer to `[T, pos]` (two i64). A launch of `rows`
//! rows runs `ceil(rows / rows_per_block)` blocks (`Geometry`); a kernel computes exactly the rows
//! of its block and writes nothing else. Numerics per kernel are in each file's header: integer
//! parts are exact; element-wise f32 parts round as the interpreter does (no contraction); sums run
//! in a fixed tree order (deterministic from run to run, but not the interpreter's index order).

pub mod add;
pub mod attention;
pub mod bias_add;
pub mod embedding;
pub mod kv_store;
pub mod matmul;
pub mod matmul_half;
pub mod norm;
pub mod relu2_mul;
pub mod rope;
pub mod silu_mul;
pub mod ternary_matmul;

use super::emit::{Cg, Kb};
use crate::BackendError;
use crate::kernel::{EmbeddingParams, KernelKind};
use bitnet_runtime::cuda::CudaLaunch;
use inkwell::context::Context;
use inkwell::module::Module;

/// Threads per block of the row-per-block kernels (norms, element-wise, copies).
pub const ROW_THREADS: u32 = 256;
/// Warps per block of the warp-per-row kernels (ternary matmul, lm_head).
pub const ROWS_PER_WARP_BLOCK: u64 = 4;
/// Threads per block of the attention kernel (one block per token and head).
pub const ATTENTION_THREADS: u32 = 128;

/// The grid of kernel `kind`, or why it has no CUDA kernel.
pub fn geometry(kind: &KernelKind) -> Result<CudaLaunch, BackendError> {
    let row = |block: u32| CudaLaunch {
        block,
        rows_per_block: 1,
        shared_bytes: 0,
    };
    let warps = CudaLaunch {
        block: (ROWS_PER_WARP_BLOCK * super::emit::WARP) as u32,
        rows_per_block: ROWS_PER_WARP_BLOCK,
        shared_bytes: 0,
    };
    Ok(match kind {
        KernelKind::Embedding(EmbeddingParams {
            half: Some(format), ..
        }) => {
            return Err(unsupported(
                kind,
                &format!(
                    "a {} table (the CUDA kernel reads an f32 table; the CUDA lowering keeps the embedding f32)",
                    format.name()
                ),
            ));
        }
        KernelKind::Embedding(_)
        | KernelKind::Relu2Mul(_)
        | KernelKind::SiluMul(_)
        | KernelKind::Add(_)
        | KernelKind::BiasAdd(_)
        | KernelKind::Rope(_)
        | KernelKind::KvStore(_) => row(ROW_THREADS),
        KernelKind::RmsNormQuant(p) => row(norm::threads(kind, p.k)?),
        KernelKind::ActQuant(p) => row(norm::threads(kind, p.k)?),
        KernelKind::RmsNorm(p) => row(norm::threads(kind, p.k)?),
        KernelKind::TernaryMatmul(_) | KernelKind::MatmulNt(_) | KernelKind::MatmulNtHalf(_) => {
            warps
        }
        KernelKind::Attention(p) => {
            let bytes = p
                .context
                .checked_mul(4)
                .and_then(|b| u32::try_from(b).ok())
                .filter(|&b| b <= attention::MAX_SHARED_BYTES)
                .ok_or_else(|| unsupported(kind, "a context longer than 12288 tokens"))?;
            CudaLaunch {
                block: ATTENTION_THREADS,
                rows_per_block: 1,
                shared_bytes: bytes,
            }
        }
        KernelKind::MatmulI8(_) => {
            return Err(unsupported(
                kind,
                "the int8 lm_head (the CUDA backend stores the lm_head in f16)",
            ));
        }
        KernelKind::MatmulQ4(_) => {
            return Err(unsupported(
                kind,
                "the 4-bit lm_head (the CUDA backend stores the lm_head in f16)",
            ));
        }
    })
}

/// Threads per block of kernel `kind` built for the host (`super::host`): one warp of one lane per
/// row for the warp-per-row kernels, else a single thread (the host runs a block's threads one after
/// the other, so only kernels without barriers may have several).
pub fn host_threads(kind: &KernelKind) -> u64 {
    match kind {
        KernelKind::TernaryMatmul(_) | KernelKind::MatmulNt(_) | KernelKind::MatmulNtHalf(_) => {
            ROWS_PER_WARP_BLOCK
        }
        KernelKind::Embedding(_)
        | KernelKind::RmsNormQuant(_)
        | KernelKind::ActQuant(_)
        | KernelKind::RmsNorm(_)
        | KernelKind::Relu2Mul(_)
        | KernelKind::SiluMul(_)
        | KernelKind::Add(_)
        | KernelKind::BiasAdd(_)
        | KernelKind::Rope(_)
        | KernelKind::KvStore(_)
        | KernelKind::Attention(_)
        | KernelKind::MatmulI8(_)
        | KernelKind::MatmulQ4(_) => 1,
    }
}

/// Defines kernel `kind` (named `kind.symbol()`) in `m` (NVPTX, or the host per `super::host`).
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    kind: &KernelKind,
) -> Result<(), BackendError> {
    let name = kind.symbol();
    let host = !m
        .get_triple()
        .as_str()
        .to_string_lossy()
        .starts_with("nvptx");
    let threads = if host {
        host_threads(kind)
    } else {
        u64::from(geometry(kind)?.block)
    };
    let built = match kind {
        KernelKind::Embedding(p) => embedding::build(cx, m, &name, p, threads),
        KernelKind::RmsNormQuant(p) => norm::build_rms_norm_quant(cx, m, &name, p, threads),
        KernelKind::ActQuant(p) => norm::build_act_quant(cx, m, &name, p, threads),
        KernelKind::RmsNorm(p) => norm::build_rms_norm(cx, m, &name, p, threads),
        KernelKind::TernaryMatmul(p) => ternary_matmul::build(cx, m, &name, p),
        KernelKind::Relu2Mul(p) => relu2_mul::build(cx, m, &name, p, threads),
        KernelKind::SiluMul(p) => silu_mul::build(cx, m, &name, p, threads),
        KernelKind::Add(p) => add::build(cx, m, &name, p, threads),
        KernelKind::BiasAdd(p) => bias_add::build(cx, m, &name, p, threads),
        KernelKind::Rope(p) => rope::build(cx, m, &name, p, threads),
        KernelKind::KvStore(p) => kv_store::build(cx, m, &name, p, threads),
        KernelKind::Attention(p) => attention::build(cx, m, &name, p, threads),
        KernelKind::MatmulNt(p) => matmul::build(cx, m, &name, p),
        KernelKind::MatmulNtHalf(p) => matmul_half::build(cx, m, &name, p),
        KernelKind::MatmulI8(_) => return Err(unsupported(kind, "the int8 lm_head")),
        KernelKind::MatmulQ4(_) => return Err(unsupported(kind, "the 4-bit lm_head")),
    };
    built.map_err(|Cg(message)| BackendError::Codegen {
        kernel: name,
        message,
    })
}

/// `kind` has no CUDA kernel for `why`.
pub fn unsupported(kind: &KernelKind, why: &str) -> BackendError {
    BackendError::Unsupported {
        backend: "cuda",
        op: "kernel",
        detail: format!("{}: {why}", kind.symbol()),
    }
}

/// A static size as i64, or a codegen error.
pub fn imm(x: u64) -> Result<i64, Cg> {
    i64::try_from(x).map_err(|_| Cg(format!("size {x} does not fit in i64")))
}

/// Starts a row-per-block kernel: the kernel and its row (the block index).
pub fn row_kernel<'a, 'ctx>(
    cx: &'ctx Context,
    m: &'a Module<'ctx>,
    name: &str,
    bufs: u32,
) -> Result<Kb<'a, 'ctx>, Cg> {
    Kb::kernel(cx, m, name, bufs)
}
