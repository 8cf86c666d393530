//! Compiling a model for CUDA GPUs (`bitnetc compile MODEL --target cuda`): the CPU pipeline and
//! launch plan (`crate::with_cpu_plan`, `plan_program` with `LowerOptions::cuda()`), the kernels as
//! one PTX module (`bitnet_backends::cuda`), and an artifact in the same container as a CPU one:
//! the `code` section holds the PTX, the target is `nvptx64-nvidia-cuda` (OS `cuda`, the SM
//! architecture as its feature), and every launch carries its grid (`LaunchEntry::cuda`).
//!
//! This needs no GPU and no CUDA installation. A bitnetc built without the `cuda` feature returns
//! `BackendError::NotCompiled { backend: "cuda" }` before it imports anything heavy.

use crate::{
    CompileError, CpuError, CpuOptions, artifact_tokenizer, cpu_pipeline, input_files,
    with_cpu_plan,
};
use bitnet_backends::BackendError;
use bitnet_backends::cpu::HeadDtype;
use bitnet_backends::cpu::aot::{AotError, ObjectCode, Provenance};
use bitnet_backends::cpu::lower::{LowerOptions, ProgramParts, plan_program};
use bitnet_backends::cuda::{CudaArch, CudaCode};
use bitnet_frontend::model::ImportedModel;
use bitnet_ir::text;
use bitnet_runtime::artifact::{self, ArtifactProblem, MemorySummary, TargetInfo, sha256_hex};
use std::collections::BTreeMap;
use std::path::Path;

/// How to compile a model for CUDA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// The GPU architecture (`--cuda-arch`).
    pub arch: CudaArch,
}

/// Why a model could not be compiled for CUDA.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The shared pipeline (passes, planning, model files) failed.
    #[error(transparent)]
    Pipeline(#[from] CpuError),
    /// Code generation failed, the model uses a kernel without a CUDA form, or this bitnetc was
    /// built without the CUDA backend.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The artifact could not be assembled.
    #[error("writing the CUDA artifact: {0}")]
    Artifact(String),
}

impl From<AotError> for CudaError {
    fn from(e: AotError) -> CudaError {
        CudaError::Artifact(e.to_string())
    }
}

impl From<ArtifactProblem> for CudaError {
    fn from(e: ArtifactProblem) -> CudaError {
        CudaError::Artifact(e.to_string())
    }
}

/// A model compiled for CUDA, ready to be written as an artifact.
pub struct CudaCompiled {
    /// The launch plan, sizes and weights (the CPU backend's, with the lm_head in f16).
    pub parts: ProgramParts,
    /// The PTX and each kernel's grid.
    pub code: CudaCode,
    /// Compiler, passes, input hashes, IR, memory plan, tokenizer.
    pub provenance: Provenance,
}

/// The lowering options of the CUDA backend: the lm_head in f16 (f32 accumulation).
pub fn cuda_lowering() -> LowerOptions {
    LowerOptions::cuda()
}

/// The target an artifact for `arch` records.
pub fn cuda_target(arch: CudaArch) -> TargetInfo {
    TargetInfo {
        arch: bitnet_runtime::cuda::CUDA_ARCH.into(),
        features: vec![arch.name().into()],
        isa_flags: BTreeMap::from([("ptx".to_string(), "8.0".to_string())]),
        os: bitnet_runtime::cuda::CUDA_OS.into(),
        triple: bitnet_runtime::cuda::CUDA_TRIPLE.into(),
    }
}

/// Runs the pipeline on `model` (imported from `path`) and generates its PTX for `options.arch`.
pub fn compile_cuda(
    model: &mut ImportedModel,
    path: &Path,
    options: &CudaOptions,
) -> Result<CudaCompiled, CudaError> {
    if !cfg!(feature = "cuda") {
        return Err(BackendError::NotCompiled { backend: "cuda" }.into());
    }
    let cpu = CpuOptions {
        head: HeadDtype::F16,
        ..CpuOptions::default()
    };
    let (parts, memory) = with_cpu_plan(model, &cpu, |f, assign, weights, plan| {
        let parts = plan_program(f, assign, weights, &cuda_lowering())?;
        let memory = MemorySummary {
            arena_bytes: plan.arena_bytes,
            buffers: plan.buffers.len() as u64,
            constant_bytes: plan.constant_bytes,
            kv_bytes: plan.kv_bytes,
            kv_slots: plan.kv_slots.len() as u64,
            lower_bound_bytes: plan.lower_bound,
            naive_bytes: plan.naive_bytes,
            schedule_length: plan.schedule.len() as u64,
        };
        Ok((parts, memory))
    })?;
    let code = bitnet_backends::cuda::compile(&parts.kinds, options.arch)?;
    let opt_ir = text::print_module(&model.module);
    let inputs = input_files(path)?;
    let (tokenizer, tokenizer_special) = artifact_tokenizer(path)?;
    let provenance = Provenance {
        compiler: format!("bitnetc {}", env!("CARGO_PKG_VERSION")),
        passes: cpu_pipeline().split(',').map(str::to_string).collect(),
        inputs,
        ir_sha256: sha256_hex(opt_ir.as_bytes()),
        ir: opt_ir,
        memory,
        tokenizer,
        tokenizer_special,
    };
    Ok(CudaCompiled {
        parts,
        code,
        provenance,
    })
}

impl CudaCompiled {
    /// The artifact's bytes: the CPU container with the PTX as its code and every launch's grid.
    pub fn artifact(&self) -> Result<Vec<u8>, CudaError> {
        let flags = BTreeMap::from([
            ("bitnetc_target".to_string(), "cuda".to_string()),
            ("cuda_arch".to_string(), self.code.arch.name().to_string()),
        ]);
        let object = ObjectCode {
            object: Vec::new(),
            clif: None,
            asm: None,
            target: cuda_target(self.code.arch),
            flags,
            imports: Vec::new(),
        };
        let bytes = bitnet_backends::cpu::aot::write_artifact(
            &self.parts,
            &object,
            self.code.ptx.as_bytes(),
            &self.provenance,
        )?;
        // Add each launch's grid, then write the container again (new manifest hash, same sections).
        let parsed = artifact::parse(&bytes)?;
        let mut manifest = parsed.manifest;
        for l in &mut manifest.launches {
            let grid = self.code.launches.get(l.kernel).copied().ok_or_else(|| {
                CudaError::Artifact(format!("launch {:?} names no kernel", l.label))
            })?;
            l.cuda = Some(grid);
        }
        let mut sections: Vec<(String, &[u8])> = Vec::new();
        for s in &manifest.sections {
            let range = parsed
                .sections
                .get(&s.name)
                .cloned()
                .ok_or_else(|| CudaError::Artifact(format!("section {} is missing", s.name)))?;
            let data = bytes.get(range).ok_or_else(|| {
                CudaError::Artifact(format!("section {} is out of bounds", s.name))
            })?;
            sections.push((s.name.clone(), data));
        }
        let refs: Vec<(&str, &[u8])> = sections.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        Ok(artifact::encode(&manifest, &refs)?)
    }
}

/// Compiles the model imported from `path` into a CUDA artifact (`.bnx` bytes) for `options.arch`.
pub fn compile_cuda_artifact(
    model: &mut ImportedModel,
    path: &Path,
    options: &CudaOptions,
) -> Result<Vec<u8>, CudaError> {
    compile_cuda(model, path, options)?.artifact()
}

impl From<CompileError> for CudaError {
    fn from(e: CompileError) -> CudaError {
        CudaError::Pipeline(CpuError::Compile(e))
    }
}
