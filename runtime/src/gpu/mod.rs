//! Running a CUDA artifact's launch plan on a GPU: the program (`GpuProgram`: the PTX, the
//! launches with their grids, sizes and weights), what a device must do (`Device`: allocate, copy,
//! launch, capture and replay a graph, time), and the executor (`GpuExecutor`), which allocates
//! the arena, the KV cache and the weights on the device once and runs one step per call.
//!
//! The CUDA driver (`driver::CudaDevice`, behind the `cuda` feature) is loaded at run time
//! (cudarc's dynamic loading), so a build with the feature still needs no CUDA library, and a
//! machine without a driver gets an error, not a crash. Tests drive the same executor with the
//! host-built kernels (`bitnet_backends::cuda::host::HostDevice`).
//!
//! Scalars live in device memory: every kernel reads `[T, pos]` through a pointer (`crate::cuda`'s
//! ABI), so the decode step (one token) is captured once as a CUDA graph and replayed for every
//! token with the same arguments, while the executor rewrites the token id and the scalars before
//! each replay.

pub mod executor;
pub mod load;

#[cfg(feature = "cuda")]
pub mod driver;

use crate::AlignedBytes;
use crate::cuda::CudaLaunch;
use crate::error::RuntimeError;
use crate::program::{BufRef, Launch};

pub use executor::{DeviceStep, GpuExecutor};

/// A device address.
pub type DevicePtr = u64;

/// One launch of a GPU program: the CPU plan's launch and its grid.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuLaunch {
    /// Kernel, buffers, rows, label, last-token and per-sequence strides.
    pub launch: Launch,
    /// How its rows map onto a grid.
    pub grid: CudaLaunch,
}

/// A compiled model for a GPU: the kernels as one PTX module, the launch plan with grids, sizes
/// and weights.
pub struct GpuProgram {
    /// The PTX module (text).
    pub ptx: String,
    /// The architecture it targets (`sm_80`).
    pub arch: String,
    /// The kernels' entry names, by index.
    pub kernels: Vec<String>,
    /// The launches, in order.
    pub launches: Vec<GpuLaunch>,
    /// Arena size in bytes.
    pub arena_bytes: u64,
    /// KV-cache size in bytes.
    pub kv_bytes: u64,
    /// The weights, as the launches expect them.
    pub weights: AlignedBytes,
    /// The largest T (the context length).
    pub context: u64,
    /// Vocabulary size.
    pub vocab: u64,
    /// Where the token ids go (i64 `[T]`, in the arena).
    pub tokens: BufRef,
    /// Where the logits come from (f32 `[T, vocab]`, in the arena).
    pub logits: BufRef,
}

/// What the executor needs from a GPU. Every operation is ordered after the ones before it (one
/// stream); `download` and `stop_timer` wait for them.
pub trait Device {
    /// The device's name, for reports (`NVIDIA H200, sm_90`).
    fn name(&self) -> String;
    /// Allocates `bytes` of zeroed device memory for `what` (named in errors); it lives as long as
    /// the device.
    fn alloc(&mut self, bytes: u64, what: &str) -> Result<DevicePtr, RuntimeError>;
    /// Copies `src` to device address `dst`.
    fn upload(&mut self, dst: DevicePtr, src: &[u8]) -> Result<(), RuntimeError>;
    /// Copies device bytes at `src` into `dst`, after everything queued before.
    fn download(&mut self, dst: &mut [u8], src: DevicePtr) -> Result<(), RuntimeError>;
    /// Copies `bytes` from device address `src` to `dst` on the device.
    fn copy(&mut self, dst: DevicePtr, src: DevicePtr, bytes: u64) -> Result<(), RuntimeError>;
    /// Launches kernel `kernel` over `rows` rows (`grid.grid(rows)` blocks) with `args`: its
    /// buffers' addresses, then the address of its `[T, pos]`.
    fn launch(
        &mut self,
        kernel: usize,
        grid: &CudaLaunch,
        rows: u64,
        args: &[DevicePtr],
    ) -> Result<(), RuntimeError>;
    /// Starts recording launches into a graph instead of running them.
    fn begin_capture(&mut self) -> Result<(), RuntimeError>;
    /// Ends the recording; the graph replaces any earlier one.
    fn end_capture(&mut self) -> Result<(), RuntimeError>;
    /// Runs the recorded graph.
    fn replay(&mut self) -> Result<(), RuntimeError>;
    /// Marks the start of a timed region.
    fn start_timer(&mut self) -> Result<(), RuntimeError>;
    /// Waits for everything queued and returns the seconds since `start_timer`, as the device
    /// measured them.
    fn stop_timer(&mut self) -> Result<f64, RuntimeError>;
}
