//! JIT compilation of kernels with cranelift-jit, for the host CPU.

use super::kernels::build_kernel;
use crate::BackendError;
use crate::kernel::KernelKind;
use bitnet_runtime::KernelFn;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};

fn codegen_err(kernel: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Codegen {
        kernel: kernel.to_string(),
        message: e.to_string(),
    }
}

/// A JIT module for the host, with the runtime's math symbols registered.
pub fn new_module() -> Result<JITModule, BackendError> {
    module_with(&[])
}

/// A JIT module for the host with the ISA flags `disabled` turned off.
fn module_with(disabled: &[&str]) -> Result<JITModule, BackendError> {
    let mut flags = settings::builder();
    flags
        .set("opt_level", "speed")
        .map_err(|e| codegen_err("settings", e))?;
    flags
        .set("is_pic", "false")
        .map_err(|e| codegen_err("settings", e))?;
    let mut isa = cranelift_native::builder().map_err(|e| codegen_err("host ISA", e))?;
    for flag in disabled {
        isa.set(flag, "false")
            .map_err(|e| codegen_err("host ISA", e))?;
    }
    let isa = isa
        .finish(settings::Flags::new(flags))
        .map_err(|e| codegen_err("host ISA", e))?;
    let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for (name, ptr) in bitnet_runtime::math::symbols() {
        builder.symbol(name, ptr);
    }
    Ok(JITModule::new(builder))
}

/// JIT-compiles `kinds`; returns the module (which must outlive the functions) and one entry point
/// per kind, in order.
pub fn compile_kernels(kinds: &[KernelKind]) -> Result<(JITModule, Vec<KernelFn>), BackendError> {
    compile_in(new_module()?, kinds)
}

/// `compile_kernels` with every kernel generated here, none calling the runtime's micro-kernels
/// (on x86-64 the host without AVX2 and AVX-512, as on a CPU that lacks them): how the generated
/// versions of the kernels that micro-kernels replace are tested on a machine that has them. On
/// AArch64 the integer matmuls still call their NEON micro-kernels.
pub fn compile_generated_kernels(
    kinds: &[KernelKind],
) -> Result<(JITModule, Vec<KernelFn>), BackendError> {
    let module = if cfg!(target_arch = "x86_64") {
        module_with(&["has_avx512f", "has_avx2"])?
    } else {
        new_module()?
    };
    compile_in(module, kinds)
}

fn compile_in(
    mut module: JITModule,
    kinds: &[KernelKind],
) -> Result<(JITModule, Vec<KernelFn>), BackendError> {
    let mut ids = Vec::with_capacity(kinds.len());
    for kind in kinds {
        ids.push(build_kernel(&mut module, kind)?);
    }
    module
        .finalize_definitions()
        .map_err(|e| codegen_err("finalize", e))?;
    let fns = ids
        .into_iter()
        .map(|id| {
            let ptr = module.get_finalized_function(id);
            // SAFETY: every kernel is defined with `emit::kernel_signature`, the C ABI of `KernelFn`.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) }
        })
        .collect();
    Ok((module, fns))
}
