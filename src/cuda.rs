//! Compiling a model for CUDA GPUs (`bitnetc compile MODEL --target cuda`): the CPU pipeline and
//! launch plan (`crate::cpu::with_cpu_plan`, `plan_program` with `LowerOptions::cuda()`), the kernels as
//! one PTX module (`bitnet_backends::cuda`), and an artifact in the same container as a CPU one:
//! the `code` section holds the PTX, the target is `nvptx64-nvidia-cuda` (OS `cuda`, the SM
//! architecture as its feature), and every launch carries its grid (`LaunchEntry::cuda`).
//!
//! This needs no GPU and no CUDA installation. A bitnetc built without the `cuda` feature returns
//! `BackendError::NotCompiled { backend: "cuda" }` before it imports anything heavy.

use crate::artifact_inputs::{artifact_chat_template, artifact_tokenizer, input_files};
use crate::cpu::{memory_summary, with_cpu_plan};
use crate::{CpuOptions, Error, Model, cpu_pipeline};
use bitnet_backends::BackendError;
use bitnet_backends::cpu::HeadDtype;
use bitnet_backends::cpu::aot::{ObjectCode, Provenance};
use bitnet_backends::cpu::lower::{LowerOptions, ProgramParts, plan_program};
use bitnet_backends::cuda::{CudaArch, CudaCode};
use bitnet_ir::text;
use bitnet_runtime::artifact::{self, TargetInfo, sha256_hex};
use bitnet_runtime::gpu::{GpuLaunch, GpuProgram};
use std::collections::BTreeMap;

/// How to compile a model for CUDA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// The GPU architecture (`--cuda-arch`).
    pub arch: CudaArch,
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

/// Runs the pipeline on `model` and generates its PTX for `options.arch`; `CudaCompiled::artifact`
/// makes the artifact.
pub fn compile_cuda(model: &mut Model, options: &CudaOptions) -> Result<CudaCompiled, Error> {
    if !cfg!(feature = "cuda") {
        return Err(BackendError::NotCompiled { backend: "cuda" }.into());
    }
    let cpu = CpuOptions {
        head: HeadDtype::F16,
        ..CpuOptions::default()
    };
    let (parts, memory) = with_cpu_plan(model, &cpu, |f, assign, weights, plan| {
        let parts = plan_program(f, assign, weights, &cuda_lowering())?;
        Ok((parts, memory_summary(plan)))
    })?;
    let code = bitnet_backends::cuda::compile(&parts.kinds, options.arch)?;
    let opt_ir = text::print_module(&model.module);
    let inputs = input_files(model.path())?;
    let (tokenizer, tokenizer_special) = artifact_tokenizer(model)?;
    let chat_template = artifact_chat_template(model)?;
    let provenance = Provenance {
        compiler: format!("bitnetc {}", env!("CARGO_PKG_VERSION")),
        passes: cpu_pipeline().split(',').map(str::to_string).collect(),
        inputs,
        ir_sha256: sha256_hex(opt_ir.as_bytes()),
        ir: opt_ir,
        memory,
        tokenizer,
        tokenizer_special,
        chat_template,
    };
    Ok(CudaCompiled {
        parts,
        code,
        provenance,
    })
}

impl CudaCompiled {
    /// The program to run in this process (`bitnet_runtime::gpu`), without writing an artifact:
    /// what loading the artifact would give.
    pub fn gpu_program(&self) -> Result<GpuProgram, Error> {
        let launches = self
            .parts
            .launches
            .iter()
            .map(|l| {
                let grid = self.code.launches.get(l.kernel).copied().ok_or_else(|| {
                    Error::CudaArtifact(format!("launch {:?} names no kernel", l.label))
                })?;
                Ok(GpuLaunch {
                    launch: l.clone(),
                    grid,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(GpuProgram {
            ptx: self.code.ptx.clone(),
            arch: self.code.arch.name().to_string(),
            kernels: self.parts.kinds.iter().map(|k| k.symbol()).collect(),
            launches,
            arena_bytes: self.parts.arena_bytes,
            kv_bytes: self.parts.kv_bytes,
            weights: bitnet_runtime::AlignedBytes::from_slice(self.parts.weights.as_slice()),
            context: self.parts.context,
            vocab: self.parts.vocab,
            tokens: self.parts.tokens,
            logits: self.parts.logits,
        })
    }

    /// The artifact's bytes: the CPU container with the PTX as its code and every launch's grid.
    pub fn artifact(&self) -> Result<Vec<u8>, Error> {
        let flags = BTreeMap::from([
            ("bitnetc_target".to_string(), "cuda".to_string()),
            ("cuda_arch".to_string(), self.code.arch.name().to_string()),
            (
                bitnet_runtime::cuda::CUDA_ABI_FLAG.to_string(),
                bitnet_runtime::cuda::CUDA_ABI.to_string(),
            ),
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
        )
        .map_err(|e| Error::CudaArtifact(e.to_string()))?;
        // Add each launch's grid, then write the container again (new manifest hash, same sections).
        let parsed = artifact::parse(&bytes).map_err(|e| Error::CudaArtifact(e.to_string()))?;
        let mut manifest = parsed.manifest;
        for l in &mut manifest.launches {
            let grid = self.code.launches.get(l.kernel).copied().ok_or_else(|| {
                Error::CudaArtifact(format!("launch {:?} names no kernel", l.label))
            })?;
            l.cuda = Some(grid);
        }
        let mut sections: Vec<(String, &[u8])> = Vec::new();
        for s in &manifest.sections {
            let range = parsed
                .sections
                .get(&s.name)
                .cloned()
                .ok_or_else(|| Error::CudaArtifact(format!("section {} is missing", s.name)))?;
            let data = bytes.get(range).ok_or_else(|| {
                Error::CudaArtifact(format!("section {} is out of bounds", s.name))
            })?;
            sections.push((s.name.clone(), data));
        }
        let refs: Vec<(&str, &[u8])> = sections.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        artifact::encode(&manifest, &refs).map_err(|e| Error::CudaArtifact(e.to_string()))
    }
}
