//! The CUDA kernels compiled for this CPU (LLVM's JIT), to check their arithmetic without a GPU.
//!
//! The kernels are built by the same code as the PTX (`super::kernels`), into a module for the
//! host triple: a warp is one lane, a block runs `kernels::host_threads` threads one after another
//! (one for every kernel with barriers), and the thread and block indices are parameters (see
//! `super::emit`). What this checks: each kernel's buffers, index math (rows, tiles, heads, partial
//! blocks, the 2-bit decoding), formulas and roundings. What it cannot: the 32-lane shuffles and
//! multi-warp reductions, `ex2.approx` (the host uses `llvm.exp2`), and the GPU's memory model.
//!
//! `HostDevice` runs the runtime's GPU executor (`bitnet_runtime::gpu`) on these kernels: host
//! memory stands for device memory, a captured graph is the list of its launches, replayed in
//! order. So the executor's plan (addresses, last-token rows, scalars read through memory, graph
//! replay) is tested without a GPU.

use super::kernels;
use crate::BackendError;
use crate::kernel::KernelKind;
use bitnet_runtime::RuntimeError;
use bitnet_runtime::cuda::CudaLaunch;
use bitnet_runtime::gpu::{Device, DevicePtr};
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

/// 64-byte aligned bytes (the kernels load 16-byte vectors).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A recorded launch: kernel, grid, rows, arguments.
type Recorded = (usize, CudaLaunch, u64, Vec<DevicePtr>);

/// A `Device` on the host-built kernels (see the module doc).
pub struct HostDevice<'k> {
    kernels: &'k HostKernels,
    memory: Vec<Box<[Line]>>,
    capturing: Option<Vec<Recorded>>,
    graph: Vec<Recorded>,
    timer: Option<std::time::Instant>,
    /// Launches run (directly or by a replay), for tests.
    pub launches: u64,
    /// Graph replays, for tests.
    pub replays: u64,
}

impl<'k> HostDevice<'k> {
    /// A device running `kernels`.
    pub fn new(kernels: &'k HostKernels) -> HostDevice<'k> {
        HostDevice {
            kernels,
            memory: Vec::new(),
            capturing: None,
            graph: Vec::new(),
            timer: None,
            launches: 0,
            replays: 0,
        }
    }

    fn run(&mut self, r: &Recorded) -> Result<(), RuntimeError> {
        let (kernel, _, rows, args) = r;
        let (&scalars, bufs) = args
            .split_last()
            .ok_or_else(|| RuntimeError::Gpu("a launch without its scalars".into()))?;
        let bufs: Vec<*mut u8> = bufs.iter().map(|&a| a as usize as *mut u8).collect();
        // SAFETY: the scalars pointer is the executor's `[T, pos]` in memory this device allocated.
        let (t, pos) = unsafe {
            let p = scalars as usize as *const i64;
            (p.read(), p.add(1).read())
        };
        // SAFETY: the executor resolved every buffer inside memory this device allocated, sized for
        // the plan (checked when it was made).
        unsafe { self.kernels.launch(*kernel, &bufs, *rows, t, pos) }
            .map_err(|e| RuntimeError::Gpu(e.to_string()))?;
        self.launches += 1;
        Ok(())
    }
}

impl Device for HostDevice<'_> {
    fn name(&self) -> String {
        "host-built CUDA kernels".into()
    }

    fn alloc(&mut self, bytes: u64, _what: &str) -> Result<DevicePtr, RuntimeError> {
        let lines = usize::try_from(bytes.div_ceil(64))
            .map_err(|_| RuntimeError::Gpu(format!("{bytes} bytes")))?;
        let mut block = vec![Line([0; 64]); lines.max(1)].into_boxed_slice();
        let p = block.as_mut_ptr() as usize as DevicePtr;
        self.memory.push(block);
        Ok(p)
    }

    fn upload(&mut self, dst: DevicePtr, src: &[u8]) -> Result<(), RuntimeError> {
        // SAFETY: `dst` lies in an allocation of this device with room for `src` (the executor's
        // checked plan).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as usize as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&mut self, dst: &mut [u8], src: DevicePtr) -> Result<(), RuntimeError> {
        // SAFETY: as in `upload`.
        unsafe {
            std::ptr::copy_nonoverlapping(src as usize as *const u8, dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }

    fn copy(&mut self, dst: DevicePtr, src: DevicePtr, bytes: u64) -> Result<(), RuntimeError> {
        // SAFETY: as in `upload`; the caller's regions do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src as usize as *const u8,
                dst as usize as *mut u8,
                bytes as usize,
            )
        };
        Ok(())
    }

    fn launch(
        &mut self,
        kernel: usize,
        grid: &CudaLaunch,
        rows: u64,
        args: &[DevicePtr],
    ) -> Result<(), RuntimeError> {
        let r = (kernel, *grid, rows, args.to_vec());
        match &mut self.capturing {
            Some(list) => {
                list.push(r);
                Ok(())
            }
            None => self.run(&r),
        }
    }

    fn begin_capture(&mut self) -> Result<(), RuntimeError> {
        self.capturing = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&mut self) -> Result<(), RuntimeError> {
        self.graph = self
            .capturing
            .take()
            .ok_or_else(|| RuntimeError::Gpu("no capture was started".into()))?;
        Ok(())
    }

    fn replay(&mut self) -> Result<(), RuntimeError> {
        let graph = std::mem::take(&mut self.graph);
        let result = graph.iter().try_for_each(|r| self.run(r));
        self.graph = graph;
        self.replays += 1;
        result
    }

    fn start_timer(&mut self) -> Result<(), RuntimeError> {
        self.timer = Some(std::time::Instant::now());
        Ok(())
    }

    fn stop_timer(&mut self) -> Result<f64, RuntimeError> {
        Ok(self.timer.map_or(0.0, |t| t.elapsed().as_secs_f64()))
    }
}
