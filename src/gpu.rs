//! Running a model on a CUDA GPU (`--backend cuda`, feature `cuda-runtime`): a CUDA artifact
//! (`bitnetc compile --target cuda`) is loaded as it is; a model is compiled in this process for
//! the device's own architecture first (feature `cuda`, which brings the LLVM backend). Either way
//! the program goes onto the device through the runtime's GPU executor
//! (`bitnet_runtime::gpu::GpuExecutor` on `CudaDevice`), and a `Session` runs it as it runs a CPU
//! model: the same generation, sampling and stops.

use crate::Error;
use crate::jit::{Options, Origin};
use crate::tokenizer::LazyTokenizer;
use bitnet_runtime::chat::{ChatError, ChatTemplate};
use bitnet_runtime::gpu::driver::CudaDevice;
use bitnet_runtime::gpu::load::load_gpu_program;
use bitnet_runtime::gpu::{GpuExecutor, GpuProgram};
use bitnet_runtime::session::Session;
use bitnet_runtime::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A model on a GPU, ready to start a session.
pub struct GpuModel {
    /// The executor (to measure single launches and the device: `bitnetc bench --backend cuda`).
    pub executor: GpuExecutor<CudaDevice>,
    tokenizer: LazyTokenizer,
    chat_template: Result<Option<ChatTemplate>, ChatError>,
    /// The file or folder it came from.
    pub source: PathBuf,
    /// Compiled here or loaded.
    pub origin: Origin,
    /// Time to import (or map and check the artifact).
    pub import_time: Duration,
    /// Time to run the passes and generate the PTX (zero for an artifact).
    pub compile_time: Duration,
    /// Time to load the PTX, allocate and upload the weights.
    pub load_time: Duration,
}

impl GpuModel {
    /// A session on this model; the tokenizer is built now (an unreadable one is this call's error).
    pub fn session(self) -> Result<Session, Error> {
        let tokenizer = self.tokenizer.into_tokenizer()?;
        Ok(Session::on_device(Box::new(self.executor), tokenizer))
    }

    /// A session on token ids alone (no tokenizer is built).
    pub fn token_session(self) -> Session {
        Session::on_device(Box::new(self.executor), None)
    }

    /// The tokenizer, built on first use; `None` if the model carries none.
    pub fn tokenizer(&self) -> Result<Option<&Tokenizer>, Error> {
        self.tokenizer.get()
    }

    /// The model's chat template, if it has one.
    pub fn chat_template(&self) -> Result<Option<&ChatTemplate>, Error> {
        match &self.chat_template {
            Ok(t) => Ok(t.as_ref()),
            Err(e) => Err(e.clone().into()),
        }
    }
}

/// Opens the model or CUDA artifact at `path` on CUDA device `ordinal` (see the module doc).
/// `options.context` bounds a compiled model's context; `options.cpu` is not used.
pub fn open_gpu(path: &Path, options: &Options, ordinal: usize) -> Result<GpuModel, Error> {
    let stage = |name: &str| {
        if let Some(f) = &options.on_stage {
            f(name);
        }
    };
    if bitnet_runtime::artifact::is_artifact(path) {
        stage("load");
        let start = Instant::now();
        let loaded = load_gpu_program(path)?;
        let import_time = start.elapsed();
        let (tokenizer, chat_template) = crate::jit::artifact_text(
            path,
            loaded.tokenizer,
            loaded.tokenizer_special,
            loaded.chat_template,
        );
        let start = Instant::now();
        let executor = on_device(loaded.program, ordinal)?;
        return Ok(GpuModel {
            executor,
            tokenizer,
            chat_template,
            source: path.to_path_buf(),
            origin: Origin::Artifact,
            import_time,
            compile_time: Duration::ZERO,
            load_time: start.elapsed(),
        });
    }
    compile_model(path, options, ordinal, &stage)
}

/// Puts `program` on device `ordinal`.
fn on_device(program: GpuProgram, ordinal: usize) -> Result<GpuExecutor<CudaDevice>, Error> {
    let device = CudaDevice::open(ordinal, &program.arch, &program.ptx, &program.kernels)?;
    Ok(GpuExecutor::new(program, device)?)
}

#[cfg(feature = "cuda")]
fn compile_model(
    path: &Path,
    options: &Options,
    ordinal: usize,
    stage: &dyn Fn(&str),
) -> Result<GpuModel, Error> {
    use crate::OpenOptions;
    use crate::cuda::{CudaOptions, compile_cuda};
    use bitnet_backends::cuda::CudaArch;
    let (major, minor) = bitnet_runtime::gpu::driver::capability(ordinal)?;
    let sm = major * 10 + minor;
    // The newest architecture the backend builds that the device runs (PTX runs on later ones).
    let arch = CudaArch::ALL
        .into_iter()
        .rev()
        .find(|a| a.name()[3..].parse::<i32>().is_ok_and(|n| n <= sm))
        .ok_or_else(|| {
            Error::Runtime(bitnet_runtime::RuntimeError::Gpu(format!(
                "the device is sm_{sm}; the CUDA backend builds for sm_80 and later"
            )))
        })?;
    stage("import");
    let start = Instant::now();
    let mut model = OpenOptions {
        context: options.context,
        quantize: options.quantize,
    }
    .open(path)?;
    let import_time = start.elapsed();
    stage("compile");
    let start = Instant::now();
    let compiled = compile_cuda(&mut model, &CudaOptions { arch })?;
    let program = compiled.gpu_program()?;
    drop(compiled);
    let compile_time = start.elapsed();
    let (chat_template, tokenizer) = model.into_text();
    stage("load");
    let start = Instant::now();
    let executor = on_device(program, ordinal)?;
    Ok(GpuModel {
        executor,
        tokenizer,
        chat_template,
        source: path.to_path_buf(),
        origin: Origin::Jit,
        import_time,
        compile_time,
        load_time: start.elapsed(),
    })
}

#[cfg(not(feature = "cuda"))]
fn compile_model(
    path: &Path,
    _options: &Options,
    _ordinal: usize,
    _stage: &dyn Fn(&str),
) -> Result<GpuModel, Error> {
    Err(Error::Runtime(bitnet_runtime::RuntimeError::Gpu(format!(
        "{}: this bitnetc runs CUDA artifacts only (built without the CUDA backend): compile the model with `bitnetc compile --target cuda` where it has one, or build with --features cuda",
        path.display()
    ))))
}
