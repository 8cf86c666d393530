//! One LLVM module per program: every kernel of `kernels`, optimized (`default<O3>`) and emitted as
//! PTX text by the NVPTX target machine for the chosen SM architecture (PTX ISA 8.0, which every
//! supported architecture accepts and CUDA 12 drivers load).

use super::CudaArch;
use super::kernels;
use crate::BackendError;
use crate::kernel::KernelKind;
use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};

/// The triple of every CUDA module.
pub const TRIPLE: &str = "nvptx64-nvidia-cuda";
/// The PTX ISA version the modules declare (as an LLVM feature).
pub const PTX_FEATURE: &str = "+ptx80";

fn err(message: impl Into<String>) -> BackendError {
    BackendError::Codegen {
        kernel: "PTX module".into(),
        message: message.into(),
    }
}

/// The NVPTX target machine for `arch`.
pub fn target_machine(arch: CudaArch) -> Result<TargetMachine, BackendError> {
    Target::initialize_nvptx(&InitializationConfig::default());
    let triple = TargetTriple::create(TRIPLE);
    let target = Target::from_triple(&triple).map_err(|e| err(e.to_string()))?;
    target
        .create_target_machine(
            &triple,
            arch.name(),
            PTX_FEATURE,
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or_else(|| {
            err(format!(
                "LLVM has no NVPTX target machine for {}",
                arch.name()
            ))
        })
}

/// The PTX text of one module holding every kernel of `kinds`.
pub fn emit_ptx(kinds: &[KernelKind], arch: CudaArch) -> Result<String, BackendError> {
    let tm = target_machine(arch)?;
    let cx = Context::create();
    let m = cx.create_module("bitnet");
    m.set_triple(&tm.get_triple());
    m.set_data_layout(&tm.get_target_data().get_data_layout());
    for kind in kinds {
        kernels::build(&cx, &m, kind)?;
    }
    m.verify()
        .map_err(|e| err(format!("invalid LLVM IR: {e}")))?;
    m.run_passes("default<O3>", &tm, PassBuilderOptions::create())
        .map_err(|e| err(format!("optimizing: {e}")))?;
    let buf = tm
        .write_to_memory_buffer(&m, FileType::Assembly)
        .map_err(|e| err(format!("emitting PTX: {e}")))?;
    String::from_utf8(buf.as_slice().to_vec()).map_err(|_| err("the PTX is not UTF-8"))
}

/// The LLVM IR of the module `emit_ptx` compiles (before optimization), for inspection.
pub fn emit_llvm_ir(kinds: &[KernelKind], arch: CudaArch) -> Result<String, BackendError> {
    let tm = target_machine(arch)?;
    let cx = Context::create();
    let m = cx.create_module("bitnet");
    m.set_triple(&tm.get_triple());
    m.set_data_layout(&tm.get_target_data().get_data_layout());
    for kind in kinds {
        kernels::build(&cx, &m, kind)?;
    }
    Ok(m.print_to_string().to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::emit_ptx;
    use crate::cuda::CudaArch;
    use crate::kernel::{KernelKind, SiluMulParams};

    /// `SiluMul` compiles to PTX with no call out (its `exp` is inline f64 arithmetic).
    #[test]
    fn silu_mul_is_self_contained_ptx() {
        let kind = KernelKind::SiluMul(SiluMulParams { n: 37 });
        let ptx = emit_ptx(std::slice::from_ref(&kind), CudaArch::Sm80).unwrap();
        assert!(ptx.contains(&format!(".entry {}", kind.symbol())), "{ptx}");
        assert!(!ptx.contains("call"), "{ptx}");
        assert!(!ptx.contains(".extern"), "{ptx}");
    }
}
