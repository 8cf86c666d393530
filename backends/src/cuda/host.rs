//! The CUDA kernels compiled for this CPU (LLVM's JIT), to check their arithmetic without a GPU.
//!
//! The kernels are built by the same code as the PTX (`super::kernels`), into a module for the
//! host triple: a warp is one lane, a block runs `kernels::host_threads` threads one after another
//! (one for every kernel with barriers), and the thread and block indices are parameters (see
//! `super::emit`). What this checks: each kernel's buffers, index math (rows, tiles, heads, partial
//! blocks, the 2-bit decoding), formulas and roundings. What it cannot: the 32-lane shuffles and
//! multi-warp reductions, `ex2.approx` (the host uses `llvm.exp2`), and the GPU's memory model.

use super::kernels;
use crate::BackendError;
use crate::kernel::KernelKind;
use bitnet_runtime::cuda::CudaLaunch;
use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::targets::{InitializationConfig, Target, TargetMachine};

/// A host-compiled kernel: `(bufs, T, pos, block, thread)`.
pub type HostKernelFn = unsafe extern "C" fn(*const *mut u8, i64, i64, i64, i64);

/// The kernels of a program, compiled for the host.
pub struct HostKernels {
    fns: Vec<HostKernelFn>,
    threads: Vec<u64>,
    grids: Vec<CudaLaunch>,
}

fn err(message: impl Into<String>) -> BackendError {
    BackendError::Codegen {
        kernel: "host module".into(),
        message: message.into(),
    }
}

impl HostKernels {
    /// Runs kernel `kernel` over `rows` rows as a CUDA launch would: every block of its grid, every
    /// thread of each block in turn.
    ///
    /// # Safety
    /// `bufs` must hold the kernel's buffers (as its `KernelKind` lists them), each valid for the
    /// bytes the kernel touches at `t` tokens and position `pos`.
    pub unsafe fn launch(
        &self,
        kernel: usize,
        bufs: &[*mut u8],
        rows: u64,
        t: i64,
        pos: i64,
    ) -> Result<(), BackendError> {
        let (Some(f), Some(threads), Some(grid)) = (
            self.fns.get(kernel),
            self.threads.get(kernel),
            self.grids.get(kernel),
        ) else {
            return Err(err(format!("no kernel {kernel}")));
        };
        for block in 0..grid.grid(rows) {
            for thread in 0..*threads {
                // SAFETY: the caller vouches for the buffers; the kernel was compiled for this CPU.
                unsafe { f(bufs.as_ptr(), t, pos, block as i64, thread as i64) };
            }
        }
        Ok(())
    }
}

/// Compiles `kinds` for the host and calls `k` with them (the JIT lives for the call).
pub fn with_host_kernels<T>(
    kinds: &[KernelKind],
    k: impl FnOnce(&HostKernels) -> T,
) -> Result<T, BackendError> {
    Target::initialize_native(&InitializationConfig::default()).map_err(err)?;
    let cx = Context::create();
    let m = cx.create_module("bitnet_host");
    m.set_triple(&TargetMachine::get_default_triple());
    for kind in kinds {
        kernels::build(&cx, &m, kind)?;
    }
    m.verify()
        .map_err(|e| err(format!("invalid LLVM IR: {e}")))?;
    let engine = m
        .create_jit_execution_engine(OptimizationLevel::Default)
        .map_err(|e| err(e.to_string()))?;
    let mut fns = Vec::with_capacity(kinds.len());
    let mut threads = Vec::with_capacity(kinds.len());
    let mut grids = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let addr = engine
            .get_function_address(&kind.symbol())
            .map_err(|e| err(format!("{}: {e}", kind.symbol())))?;
        if addr == 0 {
            return Err(err(format!("{}: no address", kind.symbol())));
        }
        // SAFETY: the function was built by `Kb::kernel` for the host with exactly this signature.
        fns.push(unsafe { std::mem::transmute::<usize, HostKernelFn>(addr) });
        threads.push(kernels::host_threads(kind));
        grids.push(kernels::geometry(kind)?);
    }
    Ok(k(&HostKernels {
        fns,
        threads,
        grids,
    }))
}
