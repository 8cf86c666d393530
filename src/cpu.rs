//! Compiling a model for the CPU: the pipeline (`-O`, packing into the backend's layout, memory
//! planning), then either an in-memory program ready to run (`compile_cpu`, JIT) or object code for
//! an artifact (`compile_cpu_object`, then `CompiledObject::link`).

use crate::artifact_inputs::{artifact_chat_template, artifact_tokenizer, input_files};
use crate::{Error, Model};
use bitnet_backends::cpu::HeadDtype;
use bitnet_backends::cpu::lower::{Assignment, LowerOptions};
use bitnet_ir::text;
use bitnet_passes::plan_memory::MemoryPlan;
use bitnet_runtime::artifact::MemorySummary;

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
    /// How the lm_head stores its weights (`auto`: bf16 or f16 when exact, else f32; `f16`; `i8`).
    pub head: HeadDtype,
    /// How every other dense projection stores its weights (`auto`: as they are; `bf16`, `f16`;
    /// `i8`: per-row scale with activations quantized per token).
    pub dense: HeadDtype,
}

impl Default for CpuOptions {
    fn default() -> CpuOptions {
        CpuOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            full_precision: false,
            head: HeadDtype::Auto,
            dense: HeadDtype::Auto,
        }
    }
}

impl CpuOptions {
    /// The default options on `threads` threads.
    pub fn with_threads(threads: usize) -> CpuOptions {
        CpuOptions {
            threads,
            ..CpuOptions::default()
        }
    }

    /// The pass pipeline these options compile with.
    pub fn pipeline(&self) -> String {
        if self.full_precision {
            format!("{},plan-memory", bitnet_passes::DENSE_BASELINE_PIPELINE)
        } else {
            cpu_pipeline()
        }
    }

    /// The lowering options these options compile with.
    fn lowering(&self) -> LowerOptions {
        LowerOptions::cpu(self.head).with_dense(self.dense)
    }
}

/// Compiles a model for this CPU (JIT) with `options` and prepares it to run on
/// `options.threads` threads.
pub fn compile_cpu(
    model: &mut Model,
    options: &CpuOptions,
) -> Result<bitnet_runtime::Executor, Error> {
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
pub(crate) fn with_cpu_plan<T>(
    model: &mut Model,
    options: &CpuOptions,
    k: impl FnOnce(
        &bitnet_ir::Function,
        &Assignment,
        &dyn bitnet_ir::WeightStore,
        &MemoryPlan,
    ) -> Result<T, Error>,
) -> Result<T, Error> {
    let pm = {
        let mut pm =
            bitnet_passes::PassManager::new(bitnet_passes::parse_pipeline(&options.pipeline())?);
        pm.verify_each = cfg!(debug_assertions);
        pm
    };
    let mut cx = bitnet_passes::PassContext::new(Some(model.weights.as_ref()));
    cx.pack_layout = cpu_pack_layout();
    pm.run(&mut model.module, &mut cx)?;
    let f =
        model.module.functions.first().ok_or_else(|| {
            bitnet_backends::BackendError::Input("the model has no function".into())
        })?;
    let plan = cx
        .plans
        .first()
        .ok_or_else(|| bitnet_backends::BackendError::Input("plan-memory made no plan".into()))?;
    let mut assign = Assignment {
        arena_bytes: plan.arena_bytes,
        kv_bytes: plan.kv_bytes,
        ..Default::default()
    };
    for (v, &b) in &plan.buffer_of {
        if let Some(buf) = plan.buffers.get(b) {
            let bytes = bitnet_passes::plan_memory::bytes_of(f, f.ty(*v))?;
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
            for (result, operand) in bitnet_ir::ops::attention::cache_aliases() {
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
    cx.derived
        .lazy
        .retain(|name, _| named.contains(name.as_str()));
    let plan = cx
        .plans
        .first()
        .ok_or_else(|| bitnet_backends::BackendError::Input("plan-memory made no plan".into()))?;
    let weights = cx.weights_after();
    k(f, &assign, &weights, plan)
}

/// What the memory plan records in an artifact's manifest.
pub(crate) fn memory_summary(plan: &MemoryPlan) -> MemorySummary {
    MemorySummary {
        arena_bytes: plan.arena_bytes,
        buffers: plan.buffers.len() as u64,
        constant_bytes: plan.constant_bytes,
        kv_bytes: plan.kv_bytes,
        kv_slots: plan.kv_slots.len() as u64,
        lower_bound_bytes: plan.lower_bound,
        naive_bytes: plan.naive_bytes,
        schedule_length: plan.schedule.len() as u64,
    }
}

/// How to compile a model ahead of time, and what to keep besides the object.
#[derive(Clone, Debug)]
pub struct ArtifactOptions {
    /// `native`, or a triple from `bitnet_backends::cpu::aot::TARGETS`.
    pub target: String,
    /// The CPU level (`bitnet_backends::cpu::aot::TARGET_CPUS`; `None`: native for `native`, else
    /// generic). The artifact requires its features.
    pub target_cpu: Option<String>,
    /// The code-generation choices (its `head`; `threads` is the loader's choice and is not
    /// recorded). The lm_head's storage is part of the kernels and the weights, so the artifact
    /// runs with it.
    pub cpu: CpuOptions,
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
            target_cpu: None,
            cpu: CpuOptions::default(),
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
    pub fn link(&self, linker: Option<&str>) -> Result<Vec<u8>, Error> {
        let library = self.shared_library(linker)?;
        let mut out = Vec::new();
        self.write_artifact(&library, &mut out)?;
        Ok(out)
    }

    /// The kernels linked into a shared library by `linker` (the C compiler driver; default: the
    /// target's), the first half of `link`.
    pub fn shared_library(&self, linker: Option<&str>) -> Result<Vec<u8>, Error> {
        use bitnet_backends::cpu::aot;
        let linker = linker.map_or_else(|| aot::default_linker(&self.code.target), str::to_string);
        Ok(aot::link_shared(&self.code.object, &linker)?)
    }

    /// The artifact, with `library` (from `shared_library`) as its code, written to `w` as it
    /// goes: the second half of `link`, which does not hold the whole file in memory. Returns the
    /// bytes written.
    pub fn write_artifact(&self, library: &[u8], w: &mut dyn std::io::Write) -> Result<u64, Error> {
        Ok(bitnet_backends::cpu::aot::write_artifact_to(
            &self.parts,
            &self.code,
            library,
            &self.provenance,
            w,
        )?)
    }
}

/// Compiles a model ahead of time: the CPU pipeline, the launch plan, and an object file with every
/// kernel for `options.target`, with what the artifact records about the model (its input files and
/// tokenizer). `CompiledObject::link` makes the artifact.
pub fn compile_cpu_object(
    model: &mut Model,
    options: &ArtifactOptions,
) -> Result<CompiledObject, Error> {
    use bitnet_backends::cpu::aot;
    use bitnet_runtime::artifact::sha256_hex;
    let ir = options.ir.then(|| text::print_module(&model.module));
    let lowering = options.cpu.lowering();
    let (parts, memory) = with_cpu_plan(model, &options.cpu, |f, assign, weights, plan| {
        let parts = bitnet_backends::cpu::lower::plan_program(f, assign, weights, &lowering)?;
        Ok((parts, memory_summary(plan)))
    })?;
    let opt_ir = text::print_module(&model.module);
    let code = aot::compile_object(
        &parts.kinds,
        &options.target,
        options.target_cpu.as_deref(),
        options.clif,
        options.asm,
    )?;
    let inputs = input_files(model.path())?;
    let (tokenizer, tokenizer_special) = artifact_tokenizer(model)?;
    let chat_template = artifact_chat_template(model)?;
    let provenance = aot::Provenance {
        compiler: format!("bitnetc {}", env!("CARGO_PKG_VERSION")),
        passes: cpu_pipeline().split(',').map(str::to_string).collect(),
        inputs,
        ir: opt_ir.clone(),
        ir_sha256: sha256_hex(opt_ir.as_bytes()),
        memory,
        tokenizer,
        tokenizer_special,
        chat_template,
    };
    Ok(CompiledObject {
        parts,
        code,
        provenance,
        ir,
        opt_ir,
    })
}
