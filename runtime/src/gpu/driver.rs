//! `CudaDevice`: a `Device` on the CUDA driver API, through cudarc's thin `result` layer with the
//! driver library loaded at run time (`libcuda.so`; nothing CUDA is needed to build). One device's
//! primary context, one non-blocking stream for everything, the program's PTX loaded by the
//! driver's JIT (its error log goes into the error), one graph at a time (stream capture), and two
//! events for timing.
//!
//! The context is made current at the start of every call, so the device may move between
//! threads (a session's generation thread, say).

use super::{Device, DevicePtr};
use crate::cuda::CudaLaunch;
use crate::error::RuntimeError;
use cudarc::driver::result;
use cudarc::driver::sys;
use std::ffi::{CString, c_void};

/// A CUDA device with a program's kernels loaded.
pub struct CudaDevice {
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    module: sys::CUmodule,
    functions: Vec<sys::CUfunction>,
    allocations: Vec<sys::CUdeviceptr>,
    graph: Option<(sys::CUgraph, sys::CUgraphExec)>,
    timer: (sys::CUevent, sys::CUevent),
    name: String,
    capability: (i32, i32),
    /// A launch's argument values and the pointers to them the driver reads (reused: a step
    /// allocates nothing).
    arg_values: Vec<DevicePtr>,
    arg_ptrs: Vec<*mut c_void>,
}

// SAFETY: the handles are the driver's, valid on any thread once the context is current, which
// every method makes it before using them; `&mut self` keeps calls on one device one at a time.
unsafe impl Send for CudaDevice {}

fn err(what: &str, e: result::DriverError) -> RuntimeError {
    RuntimeError::Gpu(format!("{what}: {e}"))
}

/// Whether the CUDA driver library can be loaded here.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library by its usual names.
    unsafe { sys::is_culib_present() }
}

/// The sm_ number of an architecture name (`sm_90` → 90).
fn sm_number(arch: &str) -> Option<i32> {
    arch.strip_prefix("sm_")?.parse().ok()
}

/// Initializes the driver and returns device `ordinal`'s handle and name.
fn device(ordinal: usize) -> Result<(sys::CUdevice, String), RuntimeError> {
    if !driver_present() {
        return Err(RuntimeError::Gpu(
            "no CUDA driver: libcuda.so could not be loaded (is an NVIDIA driver installed? if only libcuda.so.1 exists, link libcuda.so to it in a folder on LD_LIBRARY_PATH)".into(),
        ));
    }
    result::init().map_err(|e| err("initializing the driver", e))?;
    let count = result::device::get_count().map_err(|e| err("counting devices", e))?;
    if ordinal >= count.max(0) as usize {
        return Err(RuntimeError::Gpu(format!(
            "device {ordinal} does not exist: the driver sees {count} CUDA device(s)"
        )));
    }
    let dev = result::device::get(ordinal as i32).map_err(|e| err("opening the device", e))?;
    let name = result::device::get_name(dev).map_err(|e| err("reading its name", e))?;
    Ok((dev, name))
}

fn device_capability(dev: sys::CUdevice) -> Result<(i32, i32), RuntimeError> {
    let attr = |a| {
        // SAFETY: `dev` is a valid device handle.
        unsafe { result::device::get_attribute(dev, a) }
            .map_err(|e| err("reading its compute capability", e))
    };
    Ok((
        attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
        attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
    ))
}

/// Device `ordinal`'s compute capability (major, minor), to compile for it.
pub fn capability(ordinal: usize) -> Result<(i32, i32), RuntimeError> {
    device_capability(device(ordinal)?.0)
}

impl CudaDevice {
    /// Opens device `ordinal`, checks that it can run code for `arch` (`sm_80`: PTX runs on that
    /// architecture and later ones) and loads `ptx` with its kernels `kernels` (entry names).
    pub fn open(
        ordinal: usize,
        arch: &str,
        ptx: &str,
        kernels: &[String],
    ) -> Result<CudaDevice, RuntimeError> {
        let (dev, name) = device(ordinal)?;
        let capability = device_capability(dev)?;
        let sm = capability.0 * 10 + capability.1;
        let want = sm_number(arch).ok_or_else(|| {
            RuntimeError::Gpu(format!("the artifact's architecture {arch:?} is not sm_NN"))
        })?;
        if want > sm {
            return Err(RuntimeError::Gpu(format!(
                "the artifact is compiled for {arch}, but {name} is sm_{sm}: recompile it with --cuda-arch sm_{sm}"
            )));
        }
        // SAFETY: `dev` is valid; the context is released in `Drop`.
        let ctx = unsafe { result::primary_ctx::retain(dev) }
            .map_err(|e| err("creating the context", e))?;
        // SAFETY: `ctx` was just retained.
        unsafe { result::ctx::set_current(ctx) }.map_err(|e| err("using the context", e))?;
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| err("creating a stream", e))?;
        let start = result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(|e| err("creating an event", e))?;
        let stop = result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(|e| err("creating an event", e))?;
        let mut device = CudaDevice {
            dev,
            ctx,
            stream,
            module: std::ptr::null_mut(),
            functions: Vec::with_capacity(kernels.len()),
            allocations: Vec::new(),
            graph: None,
            timer: (start, stop),
            name: format!("{name}, sm_{sm}"),
            capability,
            arg_values: Vec::new(),
            arg_ptrs: Vec::new(),
        };
        device.module = load_ptx(ptx)?;
        for k in kernels {
            let c = CString::new(k.as_str())
                .map_err(|_| RuntimeError::Gpu(format!("kernel name {k:?} holds a NUL")))?;
            // SAFETY: the module was loaded above and is unloaded only in `Drop`.
            let f = unsafe { result::module::get_function(device.module, c) }
                .map_err(|e| err(&format!("finding kernel {k} in the PTX"), e))?;
            device.functions.push(f);
        }
        Ok(device)
    }

    /// The compute capability (major, minor).
    pub fn capability(&self) -> (i32, i32) {
        self.capability
    }

    fn current(&self) -> Result<(), RuntimeError> {
        // SAFETY: the context is retained until `Drop`.
        unsafe { result::ctx::set_current(self.ctx) }.map_err(|e| err("using the context", e))
    }

    fn drop_graph(&mut self) {
        if let Some((graph, exec)) = self.graph.take() {
            // SAFETY: both were made by `end_capture` and are destroyed once.
            unsafe {
                let _ = result::graph::exec_destroy(exec);
                let _ = result::graph::destroy(graph);
            }
        }
    }
}

/// Loads a PTX module with the driver's JIT, keeping its error log for the error.
fn load_ptx(ptx: &str) -> Result<sys::CUmodule, RuntimeError> {
    let image =
        CString::new(ptx).map_err(|_| RuntimeError::Gpu("the PTX holds a NUL byte".into()))?;
    let mut log = vec![0u8; 16 * 1024];
    let mut options = [
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ];
    let mut values: [*mut c_void; 2] = [log.as_mut_ptr().cast(), log.len() as *mut c_void];
    let mut module = std::ptr::null_mut();
    // SAFETY: the image is NUL-terminated text; the options point at a buffer of the size given,
    // alive for the call.
    let status = unsafe {
        sys::cuModuleLoadDataEx(
            &mut module,
            image.as_ptr().cast(),
            options.len() as u32,
            options.as_mut_ptr(),
            values.as_mut_ptr(),
        )
    };
    if status != sys::CUresult::CUDA_SUCCESS {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        return Err(RuntimeError::Gpu(format!(
            "the driver's JIT refused the PTX ({status:?}): {}",
            text.trim()
        )));
    }
    Ok(module)
}

impl Device for CudaDevice {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn alloc(&mut self, bytes: u64, what: &str) -> Result<DevicePtr, RuntimeError> {
        self.current()?;
        let n = usize::try_from(bytes)
            .map_err(|_| RuntimeError::Gpu(format!("{bytes} bytes of {what}: too many")))?;
        // SAFETY: a plain device allocation, freed in `Drop`.
        let p = unsafe { result::malloc_sync(n) }.map_err(|e| {
            err(
                &format!("allocating {bytes} bytes for the {what} on {}", self.name),
                e,
            )
        })?;
        self.allocations.push(p);
        // SAFETY: `p` holds `n` bytes.
        unsafe { result::memset_d8_sync(p, 0, n) }
            .map_err(|e| err(&format!("zeroing the {what}"), e))?;
        Ok(p)
    }

    fn upload(&mut self, dst: DevicePtr, src: &[u8]) -> Result<(), RuntimeError> {
        self.current()?;
        // SAFETY: the caller's `dst` holds `src.len()` bytes (the executor checked its plan); the
        // stream is synchronized before `src` may go away.
        unsafe {
            result::memcpy_htod_async(dst, src, self.stream).map_err(|e| err("uploading", e))?;
            result::stream::synchronize(self.stream).map_err(|e| err("uploading", e))
        }
    }

    fn download(&mut self, dst: &mut [u8], src: DevicePtr) -> Result<(), RuntimeError> {
        self.current()?;
        // SAFETY: `src` holds `dst.len()` bytes; the stream is synchronized before `dst` is read.
        unsafe {
            result::memcpy_dtoh_async(dst, src, self.stream).map_err(|e| err("downloading", e))?;
            result::stream::synchronize(self.stream).map_err(|e| err("running the step", e))
        }
    }

    fn copy(&mut self, dst: DevicePtr, src: DevicePtr, bytes: u64) -> Result<(), RuntimeError> {
        self.current()?;
        // SAFETY: both hold `bytes` bytes (the caller's allocations).
        unsafe { result::memcpy_dtod_async(dst, src, bytes as usize, self.stream) }
            .map_err(|e| err("copying on the device", e))
    }

    fn launch(
        &mut self,
        kernel: usize,
        grid: &CudaLaunch,
        rows: u64,
        args: &[DevicePtr],
    ) -> Result<(), RuntimeError> {
        let f = *self
            .functions
            .get(kernel)
            .ok_or_else(|| RuntimeError::Gpu(format!("no kernel {kernel}")))?;
        let blocks = u32::try_from(grid.grid(rows))
            .map_err(|_| RuntimeError::Gpu(format!("{rows} rows: too many blocks")))?;
        self.arg_values.clear();
        self.arg_values.extend_from_slice(args);
        self.arg_ptrs.clear();
        let values = &mut self.arg_values;
        self.arg_ptrs.extend(
            values
                .iter_mut()
                .map(|v| (v as *mut DevicePtr).cast::<c_void>()),
        );
        self.current()?;
        // SAFETY: the kernel takes exactly these pointers (the artifact's ABI, checked at load);
        // the driver copies the parameter values before returning.
        unsafe {
            result::launch_kernel(
                f,
                (blocks, 1, 1),
                (grid.block, 1, 1),
                grid.shared_bytes,
                self.stream,
                &mut self.arg_ptrs,
            )
        }
        .map_err(|e| err("launching", e))
    }

    fn begin_capture(&mut self) -> Result<(), RuntimeError> {
        self.current()?;
        // SAFETY: the stream is valid.
        unsafe {
            result::stream::begin_capture(
                self.stream,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        }
        .map_err(|e| err("starting a graph capture", e))
    }

    fn end_capture(&mut self) -> Result<(), RuntimeError> {
        self.current()?;
        // SAFETY: the stream is capturing (begin_capture).
        let graph = unsafe { result::stream::end_capture(self.stream) }
            .map_err(|e| err("ending the graph capture", e))?;
        // SAFETY: `graph` was just captured.
        let exec = unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) }
            .map_err(|e| {
            // SAFETY: `graph` is destroyed once.
            unsafe {
                let _ = result::graph::destroy(graph);
            }
            err("instantiating the graph", e)
        })?;
        self.drop_graph();
        self.graph = Some((graph, exec));
        Ok(())
    }

    fn replay(&mut self) -> Result<(), RuntimeError> {
        self.current()?;
        let (_, exec) = self
            .graph
            .ok_or_else(|| RuntimeError::Gpu("no graph was captured".into()))?;
        // SAFETY: `exec` is alive until replaced or dropped.
        unsafe { result::graph::launch(exec, self.stream) }
            .map_err(|e| err("replaying the graph", e))
    }

    fn start_timer(&mut self) -> Result<(), RuntimeError> {
        self.current()?;
        // SAFETY: the event and the stream are valid.
        unsafe { result::event::record(self.timer.0, self.stream) }
            .map_err(|e| err("recording an event", e))
    }

    fn stop_timer(&mut self) -> Result<f64, RuntimeError> {
        self.current()?;
        // SAFETY: the events and the stream are valid; both events were recorded on the stream.
        unsafe {
            result::event::record(self.timer.1, self.stream)
                .map_err(|e| err("recording an event", e))?;
            result::event::synchronize(self.timer.1)
                .map_err(|e| err("running the timed work", e))?;
            let ms = result::event::elapsed(self.timer.0, self.timer.1)
                .map_err(|e| err("reading the timer", e))?;
            Ok(f64::from(ms) / 1e3)
        }
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        if self.current().is_err() {
            return;
        }
        self.drop_graph();
        // SAFETY: every handle was made by this device and is released once, after the stream's
        // work is done.
        unsafe {
            let _ = result::stream::synchronize(self.stream);
            for &p in &self.allocations {
                let _ = result::free_sync(p);
            }
            if !self.module.is_null() {
                let _ = result::module::unload(self.module);
            }
            let _ = result::event::destroy(self.timer.0);
            let _ = result::event::destroy(self.timer.1);
            let _ = result::stream::destroy(self.stream);
            let _ = result::primary_ctx::release(self.dev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_numbers() {
        assert_eq!(sm_number("sm_90"), Some(90));
        assert_eq!(sm_number("sm_80"), Some(80));
        assert_eq!(sm_number("compute_90"), None);
    }

    #[test]
    fn a_machine_without_a_driver_gets_an_error_not_a_crash() {
        if driver_present() {
            return;
        }
        let e = CudaDevice::open(0, "sm_80", "", &[])
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|m| m.contains("no CUDA driver")),
            "{e:?}"
        );
    }
}
