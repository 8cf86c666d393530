//! bitnetc: a compiler for ternary (BitNet b1.58) neural networks.
//!
//! This is the library facade: `compile` a model (or load an artifact) and run it through a `Session`
//! (see `jit`); the stages are re-exported, and the functions below read `.bir` files with diagnostics
//! rendered for people, run prompts through the reference interpreter, and compile for the CPU.

pub use bitnet_backends as backends;
pub use bitnet_frontend as frontend;
pub use bitnet_ir as ir;
pub use bitnet_passes as passes;
pub use bitnet_runtime as runtime;

pub mod cuda;
pub mod jit;
pub mod machine;
pub use bitnet_runtime::sampling::SamplingParams;
pub use bitnet_runtime::session::{GenerateParams, Generation, Session, StopReason};
pub use jit::{Error, Model, Options, Origin, compile};

pub mod tokenizer;

use bitnet_ir::diagnostic::render_all;
use bitnet_ir::{Module, text, verify};
use std::path::{Path, PathBuf};

/// Why a `.bir` file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BirError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not parse or verify; `rendered` holds every diagnostic as
    /// `file:line:col: error: message` with the offending line.
    #[error("{rendered}")]
    Invalid {
        /// The number of errors.
        count: usize,
        /// The diagnostics, ready to print.
        rendered: String,
    },
}

/// Reads, parses and verifies a `.bir` file.
pub fn load_bir(path: &Path) -> Result<Module, BirError> {
    let src = std::fs::read_to_string(path).map_err(|source| BirError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bir(&src, &path.display().to_string())
}

/// Parses and verifies IR text; `file` is the name diagnostics show.
pub fn parse_bir(src: &str, file: &str) -> Result<Module, BirError> {
    let module = text::parse(src, file).map_err(|d| BirError::Invalid {
        count: 1,
        rendered: d.render(file, Some(src)),
    })?;
    let diags = verify::verify_module(&module);
    if diags.is_empty() {
        Ok(module)
    } else {
        Err(BirError::Invalid {
            count: diags.len(),
            rendered: render_all(&diags, file, Some(src)),
        })
    }
}

use bitnet_frontend::model::ImportedModel;
use bitnet_ir::{Data, ElemType, IrError, Tensor, interp};

/// Why a model could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A pass failed.
    #[error(transparent)]
    Pass(#[from] bitnet_passes::PassError),
}

/// The outcome of running a pass pipeline on an imported model.
pub struct Optimized {
    /// The pass runs (names, timing, whether each changed the module).
    pub runs: Vec<bitnet_passes::PassRun>,
    /// Notes from the passes (e-graph stop reasons, lowering counts, `--explain` lines).
    pub notes: Vec<String>,
    /// Weights the passes derived; the module refers to them by name.
    pub derived: bitnet_ir::MemoryWeights,
    /// Memory plans, when the pipeline ran `plan-memory`.
    pub plans: Vec<bitnet_passes::plan_memory::MemoryPlan>,
}

/// Runs `pipeline` (comma-separated pass names) on `model.module` in place, verifying after each pass.
pub fn optimize(
    model: &mut ImportedModel,
    pipeline: &str,
    explain: bool,
) -> Result<Optimized, CompileError> {
    let pm = {
        let mut pm = bitnet_passes::PassManager::new(bitnet_passes::parse_pipeline(pipeline)?);
        pm.verify_each = true;
        pm
    };
    let mut cx = bitnet_passes::PassContext::new(Some(model.weights.as_ref()));
    cx.explain = explain;
    let runs = pm.run(&mut model.module, &mut cx)?;
    Ok(Optimized {
        runs,
        notes: cx.notes,
        derived: cx.derived,
        plans: cx.plans,
    })
}

/// Why a prompt could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The model's function does not look like a language model step.
    #[error("{0}")]
    Signature(String),
    /// The interpreter failed.
    #[error(transparent)]
    Ir(#[from] IrError),
    /// An artifact could not be read.
    #[error(transparent)]
    Artifact(#[from] bitnet_runtime::RuntimeError),
}

/// The weights of an artifact, read through its weight index (`bitnet_runtime::artifact::read_ir`).
pub struct ArtifactWeights {
    /// The artifact, for diagnostics.
    pub path: PathBuf,
    /// Weight name → where its bytes are in `bytes`.
    pub index: bitnet_runtime::artifact::WeightIndex,
    /// The weights section.
    pub bytes: Vec<u8>,
}

impl bitnet_ir::WeightStore for ArtifactWeights {
    fn describe(&self) -> String {
        format!("{} (weights section)", self.path.display())
    }

    fn load(
        &self,
        name: &str,
        elem: ElemType,
        shape: &[usize],
    ) -> Result<Tensor, bitnet_ir::WeightError> {
        let read = |reason: String| bitnet_ir::WeightError::Read {
            name: name.to_string(),
            store: self.describe(),
            reason,
        };
        let w = self
            .index
            .get(name)
            .ok_or_else(|| bitnet_ir::WeightError::Missing {
                name: name.to_string(),
                store: self.describe(),
            })?;
        let stored = ElemType::from_name(&w.elem)
            .ok_or_else(|| read(format!("unknown element type {:?}", w.elem)))?;
        let range = usize::try_from(w.offset)
            .ok()
            .zip(usize::try_from(w.offset.saturating_add(w.bytes)).ok())
            .and_then(|(start, end)| self.bytes.get(start..end))
            .ok_or_else(|| read("outside the weights section".into()))?;
        let unpaired;
        let range = match w.layout.as_deref() {
            None => range,
            Some(bitnet_runtime::artifact::PAIRED_LAYOUT) => {
                let k = w.shape.last().map_or(1, |&k| k.max(1) as usize);
                unpaired = unpair_rows(range, k, stored.bits().div_ceil(8).max(1) as usize)
                    .ok_or_else(|| read("paired rows are not whole rows".into()))?;
                &unpaired[..]
            }
            Some(other) => return Err(read(format!("unknown layout {other:?}"))),
        };
        let data = Data::from_le_bytes(stored, range)
            .ok_or_else(|| read(format!("{} bytes are not whole {stored} elements", w.bytes)))?;
        let stored_shape: Vec<usize> = w.shape.iter().map(|&d| d as usize).collect();
        let tensor = Tensor::new(stored_shape, data)
            .ok_or_else(|| read(format!("{} bytes do not hold shape {:?}", w.bytes, w.shape)))?;
        bitnet_ir::weights::finish_load(self, name, tensor, elem, shape)
    }
}

/// Rows of `k` elements of `size` bytes from `matmul_half::layout` order (per group of eight,
/// elements l and 4 + l side by side, then the last `k mod 8` in order) back to index order.
fn unpair_rows(bytes: &[u8], k: usize, size: usize) -> Option<Vec<u8>> {
    let row = k.checked_mul(size)?;
    if row == 0 || !bytes.len().is_multiple_of(row) {
        return None;
    }
    let mut out = vec![0u8; bytes.len()];
    for (src, dst) in bytes.chunks_exact(row).zip(out.chunks_exact_mut(row)) {
        for g in 0..k / 8 {
            for i in 0..8 {
                // Stored position i of the group holds element i / 2 (even i) or 4 + i / 2.
                let e = if i % 2 == 0 { i / 2 } else { 4 + i / 2 };
                let (s, d) = ((g * 8 + i) * size, (g * 8 + e) * size);
                dst.get_mut(d..d + size)?
                    .copy_from_slice(src.get(s..s + size)?);
            }
        }
        let tail = k / 8 * 8 * size;
        dst.get_mut(tail..)?.copy_from_slice(src.get(tail..)?);
    }
    Some(out)
}

/// Runs a whole prompt through the compiled IR an artifact carries, with the reference interpreter
/// reading the artifact's weights (`prompt_logits_with`); the logits are `[1, T, vocab]`.
pub fn artifact_prompt_logits(path: &Path, tokens: &[i64]) -> Result<Tensor, RunError> {
    let (ir, index, bytes) = bitnet_runtime::artifact::read_ir(path)?;
    let module = bitnet_ir::parse_and_verify(&ir, &format!("{}:ir", path.display()))?;
    if let Some(f) = module.functions.first()
        && let Some(s) = f.symbols.first()
        && tokens.len() as u64 > s.max
    {
        return Err(bitnet_runtime::RuntimeError::ContextOverflow {
            pos: 0,
            tokens: tokens.len(),
            context: s.max,
        }
        .into());
    }
    let weights = ArtifactWeights {
        path: path.to_path_buf(),
        index,
        bytes,
    };
    prompt_logits_with(&module, &weights, tokens)
}

/// Runs a whole prompt through a decoder-style function (`@forward`, or else the module's only
/// function) with the reference interpreter and returns the logits as `[1, T, vocab]`.
///
/// The first argument takes the token ids (`[T]` or `[1, T]`, i64); a scalar i64 argument is the
/// position (0); every other argument (the KV caches) starts as zeros.
pub fn prompt_logits(model: &ImportedModel, tokens: &[i64]) -> Result<Tensor, RunError> {
    prompt_logits_with(&model.module, model.weights.as_ref(), tokens)
}

/// `prompt_logits` on any module and weights (for example after passes, with their derived weights).
pub fn prompt_logits_with(
    m: &bitnet_ir::Module,
    weights: &dyn bitnet_ir::WeightStore,
    tokens: &[i64],
) -> Result<Tensor, RunError> {
    let f = m
        .function("forward")
        .or_else(|| {
            if m.functions.len() == 1 {
                m.functions.first()
            } else {
                None
            }
        })
        .ok_or_else(|| RunError::Signature("the model has no @forward function".into()))?;
    let mut inputs = Vec::with_capacity(f.args.len());
    for (i, &arg) in f.args.iter().enumerate() {
        let ty = f.ty(arg);
        let t = if i == 0 {
            let shape = match ty.rank() {
                1 => vec![tokens.len()],
                2 => vec![1, tokens.len()],
                _ => {
                    return Err(RunError::Signature(format!(
                        "the token argument has type {ty}"
                    )));
                }
            };
            Tensor::new(shape, Data::I64(tokens.to_vec()))
        } else if ty.elem == ElemType::I64 && ty.rank() == 0 {
            Tensor::new(Vec::new(), Data::I64(vec![0]))
        } else {
            let shape: Vec<usize> = ty
                .static_shape()
                .ok_or_else(|| {
                    RunError::Signature(format!("argument {i} has a symbolic type {ty}"))
                })?
                .into_iter()
                .map(|d| d as usize)
                .collect();
            let n = shape.iter().product();
            Tensor::new(shape, Data::from_f64(ty.elem, vec![0.0; n]))
        };
        inputs.push(t.ok_or_else(|| RunError::Signature(format!("cannot build argument {i}")))?);
    }
    let results = interp::run_function(f, &inputs, weights)?;
    let logits = results
        .into_iter()
        .next()
        .ok_or_else(|| RunError::Signature("no results".into()))?;
    let mut shape = logits.shape.clone();
    if shape.len() == 2 {
        shape.insert(0, 1);
    }
    Tensor::new(shape, logits.data).ok_or_else(|| RunError::Signature("bad logits shape".into()))
}

/// Why a model could not be compiled for the CPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A pass failed.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Code generation failed or the model uses an op without a CPU kernel.
    #[error(transparent)]
    Backend(#[from] bitnet_backends::BackendError),
    /// The program could not be prepared to run.
    #[error(transparent)]
    Runtime(#[from] bitnet_runtime::RuntimeError),
    /// Ahead-of-time compilation or linking failed.
    #[error(transparent)]
    Aot(#[from] bitnet_backends::cpu::aot::AotError),
    /// The model's tokenizer could not be read or written.
    #[error("{0}")]
    Tokenizer(String),
    /// A model file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The packing layout the CPU backend reads (see `bitnet_backends::cpu`).
pub fn cpu_pack_layout() -> bitnet_passes::pack_weights::PackLayout {
    bitnet_passes::pack_weights::PackLayout {
        name: "cpu-i2s-64",
        block: bitnet_passes::pack_weights::PackBlock::Fixed(bitnet_backends::cpu::PACK_BLOCK),
        order: bitnet_backends::cpu::PACK_ORDER,
        rowsum: None,
    }
}

/// The pipeline the CPU backend compiles with: `-O`, packing into its layout, memory planning.
pub fn cpu_pipeline() -> String {
    format!(
        "{},pack-weights,plan-memory",
        bitnet_passes::DEFAULT_PIPELINE
    )
}

/// How to compile a model for the CPU.
#[derive(Clone, Debug)]
pub struct CpuOptions {
    /// Threads the executor runs on (at least 1).
    pub threads: usize,
    /// Compile the full-precision baseline instead: the ternary projections become dense matmuls
    /// on dequantized weights with unquantized activations (`bitnet_passes::DENSE_BASELINE_PIPELINE`).
    /// For benchmarks only; its numerics are not BitNet's.
    pub full_precision: bool,
    /// How the lm_head stores its weights (`auto`: bf16 when exactly bf16, else f32; `f16`; `i8`).
    pub head: bitnet_backends::cpu::HeadDtype,
}

impl Default for CpuOptions {
    fn default() -> CpuOptions {
        CpuOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            full_precision: false,
            head: bitnet_backends::cpu::HeadDtype::Auto,
        }
    }
}

impl CpuOptions {
    /// The lowering options these options compile with.
    fn lowering(&self) -> bitnet_backends::cpu::lower::LowerOptions {
        bitnet_backends::cpu::lower::LowerOptions::cpu(self.head)
    }
}

impl CpuOptions {
    /// The pass pipeline these options compile with.
    pub fn pipeline(&self) -> String {
        if self.full_precision {
            format!("{},plan-memory", bitnet_passes::DENSE_BASELINE_PIPELINE)
        } else {
            cpu_pipeline()
        }
    }
}

/// Compiles an imported model for this CPU (JIT) and prepares it to run on `threads` threads.
pub fn compile_cpu(
    model: &mut ImportedModel,
    threads: usize,
) -> Result<bitnet_runtime::Executor, CpuError> {
    compile_cpu_with(
        model,
        &CpuOptions {
            threads,
            ..CpuOptions::default()
        },
    )
}

/// Compiles an imported model for this CPU (JIT) with `options`.
pub fn compile_cpu_with(
    model: &mut ImportedModel,
    options: &CpuOptions,
) -> Result<bitnet_runtime::Executor, CpuError> {
    let program = with_cpu_plan(model, options, |f, assign, weights, _| {
        Ok(bitnet_backends::cpu::lower::lower(
            f,
            assign,
            weights,
            &options.lowering(),
        )?)
    })?;
    Ok(bitnet_runtime::Executor::new(program, options.threads)?)
}

/// Runs the CPU pipeline on `model` and calls `k` with the planned function, its buffer assignment,
/// the weights (the model's and the derived ones) and the memory plan.
fn with_cpu_plan<T>(
    model: &mut ImportedModel,
    options: &CpuOptions,
    k: impl FnOnce(
        &bitnet_ir::Function,
        &bitnet_backends::cpu::lower::Assignment,
        &dyn bitnet_ir::WeightStore,
        &bitnet_passes::plan_memory::MemoryPlan,
    ) -> Result<T, CpuError>,
) -> Result<T, CpuError> {
    let pm = {
        let mut pm = bitnet_passes::PassManager::new(
            bitnet_passes::parse_pipeline(&options.pipeline()).map_err(CompileError::from)?,
        );
        pm.verify_each = cfg!(debug_assertions);
        pm
    };
    let mut cx = bitnet_passes::PassContext::new(Some(model.weights.as_ref()));
    cx.pack_layout = cpu_pack_layout();
    pm.run(&mut model.module, &mut cx)
        .map_err(CompileError::from)?;
    let f =
        model.module.functions.first().ok_or_else(|| {
            bitnet_backends::BackendError::Input("the model has no function".into())
        })?;
    let plan = cx
        .plans
        .first()
        .ok_or_else(|| bitnet_backends::BackendError::Input("plan-memory made no plan".into()))?;
    let mut assign = bitnet_backends::cpu::lower::Assignment {
        arena_bytes: plan.arena_bytes,
        kv_bytes: plan.kv_bytes,
        ..Default::default()
    };
    for (v, &b) in &plan.buffer_of {
        if let Some(buf) = plan.buffers.get(b) {
            let bytes =
                bitnet_passes::plan_memory::bytes_of(f, f.ty(*v)).map_err(CompileError::from)?;
            assign.arena.insert(*v, (buf.offset, bytes));
        }
    }
    for slot in &plan.kv_slots {
        assign.kv.insert(slot.arg, (slot.offset, slot.bytes));
    }
    // The attention results that alias each cache argument share its slot.
    for id in f.op_order() {
        let op = f.op(id);
        if op.kind == bitnet_ir::OpKind::Attention {
            for (operand, result) in [(3usize, 1usize), (4, 2)] {
                if let (Some(c), Some(r)) = (op.operands.get(operand), op.results.get(result))
                    && let Some(&slot) = assign.kv.get(c)
                {
                    assign.kv.insert(*r, slot);
                }
            }
        }
    }
    // Derived weights the final function no longer names (ternarized masters replaced by their
    // packed form) are dropped before the backend copies the rest into its blob.
    let named: std::collections::BTreeSet<&str> = f
        .op_order()
        .map(|id| f.op(id))
        .filter(|op| op.kind == bitnet_ir::OpKind::Weight)
        .filter_map(|op| op.attrs.str("name"))
        .collect();
    cx.derived
        .tensors
        .retain(|name, _| named.contains(name.as_str()));
    let plan = cx
        .plans
        .first()
        .ok_or_else(|| bitnet_backends::BackendError::Input("plan-memory made no plan".into()))?;
    let weights = cx.weights_after();
    k(f, &assign, &weights, plan)
}

/// What `compile_cpu_object` should produce besides the object.
#[derive(Clone, Debug)]
pub struct ArtifactOptions {
    /// `native`, or a triple from `bitnet_backends::cpu::aot::TARGETS`.
    pub target: String,
    /// Keep the imported IR as text.
    pub ir: bool,
    /// Keep each kernel's CLIF.
    pub clif: bool,
    /// Keep each kernel's machine code listing.
    pub asm: bool,
}

impl Default for ArtifactOptions {
    fn default() -> ArtifactOptions {
        ArtifactOptions {
            target: "native".into(),
            ir: false,
            clif: false,
            asm: false,
        }
    }
}

/// A model compiled ahead of time into an object file, ready to link into an artifact.
pub struct CompiledObject {
    /// The launch plan, sizes and weights.
    pub parts: bitnet_backends::cpu::lower::ProgramParts,
    /// The object file and what the manifest says about its code.
    pub code: bitnet_backends::cpu::aot::ObjectCode,
    /// Compiler, passes, input hashes, IR hash, memory plan, tokenizer.
    pub provenance: bitnet_backends::cpu::aot::Provenance,
    /// The imported IR, when asked for.
    pub ir: Option<String>,
    /// The optimized IR that was compiled.
    pub opt_ir: String,
}

impl CompiledObject {
    /// Links the object with `linker` (default: `cc`, or `<arch>-linux-gnu-gcc` for another
    /// architecture) and returns the artifact's bytes.
    pub fn link(&self, linker: Option<&str>) -> Result<Vec<u8>, CpuError> {
        use bitnet_backends::cpu::aot;
        let linker = linker.map_or_else(|| aot::default_linker(&self.code.target), str::to_string);
        let library = aot::link_shared(&self.code.object, &linker)?;
        Ok(aot::write_artifact(
            &self.parts,
            &self.code,
            &library,
            &self.provenance,
        )?)
    }
}

/// Compiles the model imported from `path` ahead of time: the CPU pipeline, the launch plan, and an
/// object file with every kernel for `options.target`. `CompiledObject::link` makes the artifact.
pub fn compile_cpu_object(
    model: &mut ImportedModel,
    path: &Path,
    options: &ArtifactOptions,
) -> Result<CompiledObject, CpuError> {
    compile_cpu_object_with(model, path, options, &CpuOptions::default())
}

/// `compile_cpu_object` with the code-generation choices of `cpu` (its `head`; `threads` is the
/// loader's choice and is not recorded). The lm_head's storage is part of the kernels and the
/// weights, so the artifact runs with it.
pub fn compile_cpu_object_with(
    model: &mut ImportedModel,
    path: &Path,
    options: &ArtifactOptions,
    cpu: &CpuOptions,
) -> Result<CompiledObject, CpuError> {
    use bitnet_backends::cpu::aot;
    use bitnet_runtime::artifact::{MemorySummary, sha256_hex};
    let ir = options.ir.then(|| text::print_module(&model.module));
    let lowering = cpu.lowering();
    let (parts, memory) = with_cpu_plan(model, cpu, |f, assign, weights, plan| {
        let parts = bitnet_backends::cpu::lower::plan_program(f, assign, weights, &lowering)?;
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
    let opt_ir = text::print_module(&model.module);
    let code = aot::compile_object(&parts.kinds, &options.target, options.clif, options.asm)?;
    let inputs = input_files(path)?;
    let (tokenizer, tokenizer_special) = artifact_tokenizer(path)?;
    let provenance = aot::Provenance {
        compiler: format!("bitnetc {}", env!("CARGO_PKG_VERSION")),
        passes: cpu_pipeline().split(',').map(str::to_string).collect(),
        inputs,
        ir: opt_ir.clone(),
        ir_sha256: sha256_hex(opt_ir.as_bytes()),
        memory,
        tokenizer,
        tokenizer_special,
    };
    Ok(CompiledObject {
        parts,
        code,
        provenance,
        ir,
        opt_ir,
    })
}

/// Compiles the model imported from `path` into an artifact (`.bnx` bytes) for `target`, linking
/// with the system C compiler driver.
pub fn compile_cpu_artifact(
    model: &mut ImportedModel,
    path: &Path,
    target: &str,
) -> Result<Vec<u8>, CpuError> {
    let options = ArtifactOptions {
        target: target.to_string(),
        ..ArtifactOptions::default()
    };
    compile_cpu_object(model, path, &options)?.link(None)
}

/// The model files an artifact records, with their hashes: the file itself, or the files of a
/// Hugging Face folder the importer reads (config, weights, index) and the tokenizer files.
fn input_files(path: &Path) -> Result<Vec<bitnet_runtime::artifact::InputFile>, CpuError> {
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| CpuError::Io { path, source }
    };
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if path.is_dir() {
        const NAMED: [&str; 5] = [
            "config.json",
            "generation_config.json",
            "model.safetensors.index.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ];
        for entry in std::fs::read_dir(path).map_err(io(path))? {
            let entry = entry.map_err(io(path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if NAMED.contains(&name.as_str()) || name.ends_with(".safetensors") {
                files.push((name, entry.path()));
            }
        }
    } else {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        files.push((name, path.to_path_buf()));
    }
    files.sort();
    let mut inputs = Vec::with_capacity(files.len());
    for (name, p) in files {
        let (bytes, sha256) = bitnet_runtime::artifact::sha256_file(&p).map_err(io(&p))?;
        inputs.push(bitnet_runtime::artifact::InputFile {
            bytes,
            name,
            sha256,
        });
    }
    Ok(inputs)
}

/// The `tokenizer` and `tokenizer_special` sections of an artifact, when the model has a tokenizer.
type ArtifactTokenizer = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The tokenizer an artifact carries: a Hugging Face folder's `tokenizer.json` as it is, or the one
/// built from a GGUF vocabulary (`Tokenizer::to_json`); and its special ids as JSON
/// (`{"bos": id|null, "eos": [ids]}`), which `tokenizer.json` does not record.
fn artifact_tokenizer(path: &Path) -> Result<ArtifactTokenizer, CpuError> {
    let tokenizer =
        tokenizer::model_tokenizer(path).map_err(|e| CpuError::Tokenizer(e.to_string()))?;
    let Some(t) = tokenizer else {
        return Ok((None, None));
    };
    let hf = path.join("tokenizer.json");
    let json = if path.is_dir() && hf.is_file() {
        std::fs::read(&hf).map_err(|source| CpuError::Io { path: hf, source })?
    } else {
        t.to_json()
            .map_err(|e| CpuError::Tokenizer(e.to_string()))?
            .into_bytes()
    };
    let special = serde_json::json!({"bos": t.bos(), "eos": t.eos()});
    Ok((Some(json), Some(special.to_string().into_bytes())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    /// `unpair_rows` undoes the CPU backend's paired row order, for row lengths around 8.
    #[test]
    fn unpair_rows_inverts_the_paired_layout() {
        for k in [1usize, 7, 8, 9, 16, 21] {
            let w: Vec<f32> = (0..3 * k)
                .map(|i| f32::from_bits((i as u32 + 1) << 16))
                .collect();
            let paired =
                bitnet_backends::cpu::kernels::matmul_half::bf16_layout_exact(&w, k).unwrap();
            let bytes: Vec<u8> = paired.iter().flat_map(|h| h.to_le_bytes()).collect();
            let back = super::unpair_rows(&bytes, k, 2).unwrap();
            let want: Vec<u8> = w
                .iter()
                .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
                .collect();
            assert_eq!(back, want, "k {k}");
        }
    }
}
