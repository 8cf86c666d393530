//! A CUDA artifact (`bitnetc compile --target cuda`) as a `GpuProgram`: the container checked as
//! every artifact is (`artifact::parse`: magic, version, hashes), then its target (a CUDA one), the
//! kernels' calling convention, every launch's grid and the weights section's size. The weights
//! stay in the file mapping until the executor uploads them.

use super::{GpuLaunch, GpuProgram};
use crate::AlignedBytes;
use crate::artifact::{ArtifactProblem, Manifest, parse};
use crate::cuda::{CUDA_ABI, CUDA_ABI_FLAG, is_cuda_target};
use crate::error::{ArtifactError, RuntimeError};
use crate::program::Launch;
use std::path::Path;

/// A loaded CUDA artifact: the program and what else the file carries.
pub struct LoadedGpu {
    /// The manifest.
    pub manifest: Manifest,
    /// The program.
    pub program: GpuProgram,
    /// The `tokenizer.json` it carries, if any.
    pub tokenizer: Option<Vec<u8>>,
    /// Its special ids, if recorded.
    pub tokenizer_special: Option<Vec<u8>>,
    /// The model's chat template section, if it has one.
    pub chat_template: Option<Vec<u8>>,
}

/// Loads the CUDA artifact at `path` (see the module doc). Loads nothing onto a device.
pub fn load_gpu_program(path: &Path) -> Result<LoadedGpu, RuntimeError> {
    let err = |problem: ArtifactProblem| -> RuntimeError {
        ArtifactError {
            path: path.to_path_buf(),
            problem,
        }
        .into()
    };
    let bad = |message: String| err(ArtifactProblem::Manifest(message));
    let file = std::fs::File::open(path).map_err(|e| err(e.into()))?;
    // SAFETY: the map is read only; an artifact must not be modified while it is loaded (the
    // hashes catch a concurrent edit of what was read).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| err(e.into()))?;
    let parsed = parse(&map).map_err(err)?;
    let m = &parsed.manifest;
    if !is_cuda_target(&m.target.os) {
        return Err(err(ArtifactProblem::Target(format!(
            "compiled for {} ({}), not for a CUDA GPU: run it with --backend cpu, or compile the model with --target cuda",
            m.target.triple, m.target.os
        ))));
    }
    match m.flags.get(CUDA_ABI_FLAG) {
        Some(abi) if abi == CUDA_ABI => {}
        other => {
            return Err(err(ArtifactProblem::Target(format!(
                "its kernels use the calling convention {:?}, this runtime calls {CUDA_ABI:?}: recompile it with this bitnetc (--target cuda)",
                other.map_or("T and pos by value (an older bitnetc)", String::as_str)
            ))));
        }
    }
    let arch = m
        .target
        .features
        .first()
        .cloned()
        .ok_or_else(|| bad("the CUDA target names no sm_ architecture".into()))?;
    let section = |name: &str| {
        parsed
            .sections
            .get(name)
            .cloned()
            .ok_or_else(|| bad(format!("no {name} section")))
    };
    let ptx = String::from_utf8(map[section("code")?].to_vec())
        .map_err(|_| bad("the code section is not PTX text (not UTF-8)".into()))?;
    let weights_range = section("weights")?;
    if weights_range.len() as u64 != m.program.weights_bytes {
        return Err(bad(format!(
            "the weights section has {} bytes, the program expects {}",
            weights_range.len(),
            m.program.weights_bytes
        )));
    }
    let mut launches = Vec::with_capacity(m.launches.len());
    for (i, l) in m.launches.iter().enumerate() {
        let grid = l
            .cuda
            .ok_or_else(|| bad(format!("launch {i} ({}) has no CUDA grid", l.label)))?;
        if grid.block == 0 || grid.block > 1024 || grid.rows_per_block == 0 {
            return Err(bad(format!(
                "launch {i} ({}): a grid of {} threads per block and {} rows per block",
                l.label, grid.block, grid.rows_per_block
            )));
        }
        launches.push(GpuLaunch {
            launch: Launch {
                kernel: l.kernel,
                bufs: l.bufs.iter().map(|&b| b.into()).collect(),
                rows: l.rows.into(),
                label: l.label.clone(),
                last_token: l.last_token.clone(),
                per_sequence: l.per_sequence.clone(),
                row_group: l.row_group,
            },
            grid,
        });
    }
    let extra = |name: &str| parsed.sections.get(name).map(|r| map[r.clone()].to_vec());
    let (tokenizer, tokenizer_special, chat_template) = (
        extra("tokenizer"),
        extra("tokenizer_special"),
        extra("chat_template"),
    );
    let kernels = m.kernels.iter().map(|k| k.symbol.clone()).collect();
    let p = m.program.clone();
    let weights = if map[weights_range.clone()].as_ptr().align_offset(64) == 0 {
        AlignedBytes::from_mapped(map, weights_range)
            .ok_or_else(|| bad("the weights section is outside the file".into()))?
    } else {
        AlignedBytes::from_slice(&map[weights_range])
    };
    let program = GpuProgram {
        ptx,
        arch,
        kernels,
        launches,
        arena_bytes: p.arena_bytes,
        kv_bytes: p.kv_bytes,
        weights,
        context: p.context,
        vocab: p.vocab,
        tokens: p.tokens.into(),
        logits: p.logits.into(),
    };
    Ok(LoadedGpu {
        manifest: parsed.manifest,
        program,
        tokenizer,
        tokenizer_special,
        chat_template,
    })
}
