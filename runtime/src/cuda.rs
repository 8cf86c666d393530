//! What the runtime knows about CUDA artifacts: how a launch maps onto a CUDA grid, and how an
//! artifact says it holds PTX rather than host code.
//!
//! A CUDA artifact (`bitnetc compile --target cuda`) uses the same container as a CPU one
//! (`crate::artifact`): its `code` section is PTX text (one module holding every kernel), its
//! `target` is `nvptx64-nvidia-cuda` with OS `cuda` and the SM architecture as its one feature, and
//! every launch carries a `CudaLaunch` (`LaunchEntry::cuda`). The CPU loader refuses such an artifact
//! with an error that names the target.
//!
//! Kernel ABI: one `.entry` per kernel, taking one global pointer per buffer (in the launch's order,
//! each already advanced to the buffer's offset in its region) then one global pointer to the
//! step's scalars `[T, pos]` (two i64, read at the kernel's entry), so that a captured CUDA graph
//! runs every step with the same arguments while the runtime rewrites the scalars (`crate::gpu`).
//! A launch of `rows` rows (`Rows::count(T)`) runs `ceil(rows / rows_per_block)` blocks of `block`
//! threads with `shared_bytes` of dynamic shared memory.

use serde::{Deserialize, Serialize};

/// The OS name a CUDA artifact's target records.
pub const CUDA_OS: &str = "cuda";
/// The architecture name a CUDA artifact's target records.
pub const CUDA_ARCH: &str = "nvptx64";
/// The triple a CUDA artifact's target records.
pub const CUDA_TRIPLE: &str = "nvptx64-nvidia-cuda";
/// The manifest flag naming the kernels' calling convention.
pub const CUDA_ABI_FLAG: &str = "cuda_abi";
/// The calling convention of this runtime's kernels: buffers, then a pointer to `[T, pos]`.
pub const CUDA_ABI: &str = "buffers+scalars-pointer";

/// How one launch maps onto a CUDA grid (fields in alphabetical order: the manifest's JSON keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CudaLaunch {
    /// Threads per block.
    pub block: u32,
    /// Rows each block computes (the grid has `ceil(rows / rows_per_block)` blocks).
    pub rows_per_block: u64,
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
}

impl CudaLaunch {
    /// The number of blocks for `rows` rows (at least 1 when `rows` is positive).
    pub fn grid(&self, rows: u64) -> u64 {
        rows.div_ceil(self.rows_per_block.max(1))
    }
}

/// True if an artifact's target (its OS as recorded in the manifest) is a CUDA GPU.
pub fn is_cuda_target(os: &str) -> bool {
    os == CUDA_OS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_every_row() {
        let l = CudaLaunch {
            block: 128,
            rows_per_block: 4,
            shared_bytes: 0,
        };
        assert_eq!(l.grid(0), 0);
        assert_eq!(l.grid(1), 1);
        assert_eq!(l.grid(4), 1);
        assert_eq!(l.grid(5), 2);
        assert_eq!(l.grid(2560), 640);
    }
}
