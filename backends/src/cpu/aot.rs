//! Ahead-of-time compilation: the same kernels as the JIT, defined in a `cranelift_object` module for
//! a chosen target, emitted as an ELF object, linked into a shared library by the system C compiler
//! driver, and packed with the launch plan and the weights into an artifact (`bitnet_runtime::artifact`).
//!
//! Math functions. The kernels call the runtime's math functions by symbol (`bitnet_rt_exp_f64`).
//! In the JIT the symbol is registered with the module; a shared library would need the loading
//! process to export it dynamically (`-rdynamic`), which neither `bitnetc` nor a test binary nor a
//! user's program does by default. So here each math symbol is defined inside the library as a hidden
//! trampoline that calls through an exported, zero-initialized pointer slot (`bitnet_rt_slot_exp_f64`),
//! and the manifest lists the slots (`imports`). The loader writes the runtime's own function into
//! each slot before any kernel runs: the library has no undefined symbols (it is linked with
//! `-nostdlib -Wl,--no-undefined`), needs nothing from the host but the runtime, and computes exactly
//! what JIT code computes (the same Rust `f64::exp`).
//!
//! Targets: `native` (this CPU: every feature Cranelift detects), `x86_64-unknown-linux-gnu`
//! (x86-64-v2: SSE4.2, SSSE3, POPCNT, CMPXCHG16B — the baseline Cranelift needs for round-to-even
//! without libm calls) and `aarch64-unknown-linux-gnu` (ARMv8-A with NEON). Code is position
//! independent. The required CPU features the manifest lists are the ISA flags the code was compiled
//! with, so a `native` artifact runs only on CPUs with every feature of the compiling one.
//!
//! Determinism: no timestamps or paths are recorded; Cranelift's output, the object writer and the
//! linker are deterministic for the same input, and the manifest's keys come out in a fixed order, so
//! the same model, options and toolchain give byte-identical artifacts.

use super::kernels::build_kernel;
use super::lower::ProgramParts;
use crate::BackendError;
use crate::kernel::KernelKind;
use bitnet_runtime::artifact::{
    self, Import, InputFile, KernelEntry, LaunchEntry, Manifest, MemorySummary, ProgramInfo,
    TargetInfo, WeightEntry,
};
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, UserFuncName, types};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{
    DataDescription, DataId, FuncId, Linkage, Module, ModuleDeclarations, ModuleReloc, ModuleResult,
};
use cranelift_object::{ObjectBuilder, ObjectModule};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The targets `compile` accepts.
pub const TARGETS: &[&str] = &[
    "native",
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
];

/// The CPU levels `compile --target-cpu` accepts: `native` (every feature of this CPU; the default
/// for `--target native`), `generic` (the architecture's baseline: x86-64-v2, or ARMv8-A with NEON;
/// the default for a named triple), and the x86-64 levels `x86-64-v3` (AVX2, FMA, BMI) and
/// `x86-64-v4` (AVX-512 F, DQ, VL).
pub const TARGET_CPUS: &[&str] = &["native", "generic", "x86-64-v3", "x86-64-v4"];

/// What can go wrong compiling ahead of time.
#[derive(Debug, thiserror::Error)]
pub enum AotError {
    /// Code generation failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An unknown `--target`.
    #[error("unknown target {0:?}; expected one of: {list}", list = TARGETS.join(", "))]
    UnknownTarget(String),
    /// A `--target-cpu` that is unknown or does not fit the target.
    #[error("--target-cpu {cpu}: {reason}")]
    TargetCpu {
        /// The level asked for.
        cpu: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// No linker: the object can still be written (`--emit obj`).
    #[error(
        "no linker: could not run `{linker}` ({reason}); install a C compiler (e.g. gcc) or name one with --linker, or pass --emit obj to get the object file alone"
    )]
    NoLinker {
        /// The command tried.
        linker: String,
        /// The OS error.
        reason: String,
    },
    /// The linker failed.
    #[error("linking the kernels with `{linker}` failed ({status}):\n{stderr}")]
    Link {
        /// The command.
        linker: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        stderr: String,
    },
    /// A temporary file for the linker could not be written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The artifact could not be encoded.
    #[error("writing the artifact: {0}")]
    Artifact(#[from] artifact::ArtifactProblem),
}

fn codegen_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Codegen {
        kernel: what.to_string(),
        message: e.to_string(),
    }
}

/// The ISA for `target` (one of `TARGETS`) at CPU level `cpu` (one of `TARGET_CPUS`; `None`: native
/// for `native`, else generic), position independent, optimized for speed.
pub fn target_isa(target: &str, cpu: Option<&str>) -> Result<OwnedTargetIsa, AotError> {
    let mut flags = settings::builder();
    for (k, v) in [("opt_level", "speed"), ("is_pic", "true")] {
        flags.set(k, v).map_err(|e| codegen_err("settings", e))?;
    }
    let flags = settings::Flags::new(flags);
    let host = || cranelift_native::builder().map_err(|e| codegen_err("host ISA", e));
    let triple = match target {
        "native" => host()?.triple().to_string(),
        t if TARGETS.contains(&t) => t.to_string(),
        other => return Err(AotError::UnknownTarget(other.to_string())),
    };
    let cpu = cpu.unwrap_or(if target == "native" {
        "native"
    } else {
        "generic"
    });
    let refuse = |reason: String| AotError::TargetCpu {
        cpu: cpu.to_string(),
        reason,
    };
    let x86 = triple.starts_with("x86_64");
    let builder = match cpu {
        "native" => {
            if !triple.starts_with(std::env::consts::ARCH) {
                return Err(refuse(format!(
                    "this CPU is {}, the target {triple}",
                    std::env::consts::ARCH
                )));
            }
            host()?
        }
        "generic" | "x86-64-v3" | "x86-64-v4" => {
            if cpu != "generic" && !x86 {
                return Err(refuse(format!("an x86-64 level, the target {triple}")));
            }
            let mut b = cranelift_codegen::isa::lookup_by_name(&triple)
                .map_err(|e| codegen_err(&triple, e))?;
            let level = if cpu == "generic" { "x86-64-v2" } else { cpu };
            if x86 {
                b.enable(level).map_err(|e| codegen_err(&triple, e))?;
            }
            // Cranelift's presets leave out what the levels imply: AVX (v3: without it Cranelift
            // calls `fmaf` instead of using FMA) and AVX-512 F (v4).
            let implied: &[&str] = match cpu {
                "x86-64-v3" => &["has_avx"],
                "x86-64-v4" => &["has_avx", "has_avx512f"],
                _ => &[],
            };
            for flag in implied {
                b.enable(flag).map_err(|e| codegen_err(&triple, e))?;
            }
            b
        }
        _ => {
            return Err(refuse(format!(
                "expected one of {}",
                TARGET_CPUS.join(", ")
            )));
        }
    };
    Ok(builder.finish(flags).map_err(|e| codegen_err(target, e))?)
}

/// The CPU feature (as the runtime's feature detection names it) an ISA flag enables, if any.
fn feature_of(isa_name: &str, flag: &str) -> Option<String> {
    let known = match (isa_name, flag) {
        ("x64", "has_sse3") => "sse3",
        ("x64", "has_ssse3") => "ssse3",
        ("x64", "has_cmpxchg16b") => "cmpxchg16b",
        ("x64", "has_sse41") => "sse4.1",
        ("x64", "has_sse42") => "sse4.2",
        ("x64", "has_avx") => "avx",
        ("x64", "has_avx2") => "avx2",
        ("x64", "has_fma") => "fma",
        ("x64", "has_avx_vnni") => "avxvnni",
        ("x64", "has_avx512bitalg") => "avx512bitalg",
        ("x64", "has_avx512dq") => "avx512dq",
        ("x64", "has_avx512vl") => "avx512vl",
        ("x64", "has_avx512vbmi") => "avx512vbmi",
        ("x64", "has_avx512f") => "avx512f",
        ("x64", "has_avx512vnni") => "avx512vnni",
        ("x64", "has_popcnt") => "popcnt",
        ("x64", "has_bmi1") => "bmi1",
        ("x64", "has_bmi2") => "bmi2",
        ("x64", "has_lzcnt") => "lzcnt",
        ("aarch64", "has_lse") => "lse",
        ("aarch64", "has_pauth") => "paca",
        ("aarch64", "has_fp16") => "fp16",
        ("aarch64", "has_dotprod") => "dotprod",
        ("aarch64", "has_i8mm") => "i8mm",
        ("aarch64", "use_bti") => "bti",
        // A feature flag this compiler does not know: recorded under Cranelift's name, which the
        // runtime cannot check, so such an artifact is refused rather than run on a CPU without it.
        (_, f) if f.starts_with("has_") => return Some(format!("cranelift:{f}")),
        _ => return None,
    };
    Some(known.to_string())
}

/// What the manifest says about `isa`: the target, and the shared code generation flags.
pub fn target_info(isa: &dyn TargetIsa) -> (TargetInfo, BTreeMap<String, String>) {
    let triple = isa.triple();
    // target-lexicon spells these as `std::env::consts::ARCH` does (`x86_64`, `aarch64`).
    let arch = triple.architecture.to_string();
    let os = triple.operating_system.to_string();
    let mut features = Vec::new();
    let mut isa_flags = BTreeMap::new();
    for v in isa.isa_flags() {
        if v.as_bool() == Some(true)
            && let Some(f) = feature_of(isa.name(), v.name)
        {
            features.push(f);
        }
        isa_flags.insert(v.name.to_string(), v.value_string());
    }
    features.sort();
    let flags = isa
        .flags()
        .iter()
        .map(|v| (v.name.to_string(), v.value_string()))
        .collect();
    (
        TargetInfo {
            arch,
            features,
            isa_flags,
            os,
            triple: triple.to_string(),
        },
        flags,
    )
}

/// A `Module` that forwards to an `ObjectModule` and records each function's CLIF (before
/// compilation) and Cranelift's listing of its machine code, when asked.
struct Recording {
    inner: ObjectModule,
    clif: Option<String>,
    asm: Option<String>,
}

impl Module for Recording {
    fn isa(&self) -> &dyn TargetIsa {
        self.inner.isa()
    }

    fn declarations(&self) -> &ModuleDeclarations {
        self.inner.declarations()
    }

    fn declare_function(
        &mut self,
        name: &str,
        linkage: Linkage,
        signature: &cranelift_codegen::ir::Signature,
    ) -> ModuleResult<FuncId> {
        self.inner.declare_function(name, linkage, signature)
    }

    fn declare_anonymous_function(
        &mut self,
        signature: &cranelift_codegen::ir::Signature,
    ) -> ModuleResult<FuncId> {
        self.inner.declare_anonymous_function(signature)
    }

    fn declare_data(
        &mut self,
        name: &str,
        linkage: Linkage,
        writable: bool,
        tls: bool,
    ) -> ModuleResult<DataId> {
        self.inner.declare_data(name, linkage, writable, tls)
    }

    fn declare_anonymous_data(&mut self, writable: bool, tls: bool) -> ModuleResult<DataId> {
        self.inner.declare_anonymous_data(writable, tls)
    }

    fn define_function_with_control_plane(
        &mut self,
        func: FuncId,
        ctx: &mut cranelift_codegen::Context,
        ctrl_plane: &mut ControlPlane,
    ) -> ModuleResult<()> {
        use std::fmt::Write;
        let name = self
            .inner
            .declarations()
            .get_function_decl(func)
            .linkage_name(func)
            .into_owned();
        if let Some(clif) = &mut self.clif {
            let _ = writeln!(clif, "; {name}\n{}", ctx.func.display());
        }
        if self.asm.is_some() {
            ctx.set_disasm(true);
        }
        self.inner
            .define_function_with_control_plane(func, ctx, ctrl_plane)?;
        if let Some(asm) = &mut self.asm {
            let code = ctx
                .compiled_code()
                .and_then(|c| c.vcode.as_deref())
                .unwrap_or("");
            let _ = writeln!(asm, "{name}:\n{code}");
        }
        Ok(())
    }

    fn define_function_bytes(
        &mut self,
        func_id: FuncId,
        alignment: u64,
        bytes: &[u8],
        relocs: &[ModuleReloc],
    ) -> ModuleResult<()> {
        self.inner
            .define_function_bytes(func_id, alignment, bytes, relocs)
    }

    fn define_data(&mut self, data_id: DataId, data: &DataDescription) -> ModuleResult<()> {
        self.inner.define_data(data_id, data)
    }
}

/// The slot symbol of the math symbol `symbol`.
pub fn slot_name(symbol: &str) -> String {
    format!(
        "bitnet_rt_slot_{}",
        symbol.strip_prefix("bitnet_rt_").unwrap_or(symbol)
    )
}

/// Defines `symbol` (f64 → f64, or a micro-kernel's signature: `math::micro_kernel_params`) as a
/// hidden trampoline through the exported slot `slot_name(symbol)`.
fn define_math_trampoline(module: &mut dyn Module, symbol: &str) -> Result<Import, BackendError> {
    let slot = slot_name(symbol);
    let err = |e: cranelift_module::ModuleError| codegen_err(symbol, e);
    let sig = match bitnet_runtime::math::micro_kernel_params(symbol) {
        Some(params) => crate::cpu::emit::micro_kernel_signature(module.isa(), params),
        None => {
            let mut sig = module.make_signature();
            sig.params.push(AbiParam::new(types::F64));
            sig.returns.push(AbiParam::new(types::F64));
            sig
        }
    };
    let fid = module
        .declare_function(symbol, Linkage::Hidden, &sig)
        .map_err(err)?;
    let did = module
        .declare_data(&slot, Linkage::Export, true, false)
        .map_err(err)?;
    let ptr = module.target_config().pointer_type();
    let mut data = DataDescription::new();
    data.define_zeroinit(ptr.bytes() as usize);
    data.set_align(u64::from(ptr.bytes()));
    module.define_data(did, &data).map_err(err)?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig.clone();
    ctx.func.name = UserFuncName::user(0, fid.as_u32());
    let mut fbc = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
        let gv = module.declare_data_in_func(did, b.func);
        let sig_ref = b.import_signature(sig);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        b.seal_block(block);
        let args = b.block_params(block).to_vec();
        let addr = b.ins().symbol_value(ptr, gv);
        let f = b.ins().load(ptr, MemFlagsData::trusted(), addr, 0);
        let call = b.ins().call_indirect(sig_ref, f, &args);
        let results = b.inst_results(call).to_vec();
        b.ins().return_(&results);
        b.finalize(module.target_config());
    }
    module.define_function(fid, &mut ctx).map_err(err)?;
    Ok(Import {
        slot,
        symbol: symbol.to_string(),
    })
}

/// An object file with every kernel, and what the manifest needs to know about it.
#[derive(Clone, Debug)]
pub struct ObjectCode {
    /// The ELF relocatable object.
    pub object: Vec<u8>,
    /// Each function's CLIF, when asked for.
    pub clif: Option<String>,
    /// Each function's machine code as Cranelift lists it, when asked for.
    pub asm: Option<String>,
    /// The target.
    pub target: TargetInfo,
    /// The shared code generation flags.
    pub flags: BTreeMap<String, String>,
    /// The math slots the loader must fill.
    pub imports: Vec<Import>,
}

/// Compiles `kinds` for `target` (one of `TARGETS`) at CPU level `cpu` (see `target_isa`) into an
/// object file; `clif` and `asm` also record the CLIF and the machine code listing of every
/// function.
pub fn compile_object(
    kinds: &[KernelKind],
    target: &str,
    cpu: Option<&str>,
    clif: bool,
    asm: bool,
) -> Result<ObjectCode, AotError> {
    let isa = target_isa(target, cpu)?;
    let (mut target_info, mut flags) = target_info(&*isa);
    flags.insert("bitnetc_target".into(), target.to_string());
    if let Some(cpu) = cpu {
        flags.insert("bitnetc_target_cpu".into(), cpu.to_string());
    }
    if target == "native" {
        target_info.triple = isa.triple().to_string();
    }
    let builder = ObjectBuilder::new(
        isa,
        b"bitnet_kernels".to_vec(),
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| codegen_err("object module", e))?;
    let mut module = Recording {
        inner: ObjectModule::new(builder),
        clif: clif.then(String::new),
        asm: asm.then(String::new),
    };
    // The trampolines first, so the kernels' imports of the same symbols bind to them.
    let mut imports = Vec::new();
    for (symbol, _) in bitnet_runtime::math::symbols() {
        imports.push(define_math_trampoline(&mut module, symbol)?);
    }
    for kind in kinds {
        build_kernel(&mut module, kind)?;
    }
    let Recording { inner, clif, asm } = module;
    // Every function the kernels call must be defined here (the math trampolines); anything else
    // would be an undefined symbol the library cannot resolve (the linker's --no-undefined also
    // catches Cranelift's own libcalls).
    let undefined: Vec<String> = inner
        .declarations()
        .get_functions()
        .filter(|(_, d)| d.linkage == Linkage::Import)
        .map(|(id, d)| d.linkage_name(id).into_owned())
        .collect();
    if !undefined.is_empty() {
        return Err(codegen_err(
            "object",
            format!(
                "the kernels call external symbols ({}), which an artifact cannot carry",
                undefined.join(", ")
            ),
        )
        .into());
    }
    let product = inner.finish();
    let object = product.emit().map_err(|e| codegen_err("object file", e))?;
    Ok(ObjectCode {
        object,
        clif,
        asm,
        target: target_info,
        flags,
        imports,
    })
}

/// The C compiler driver that links for `triple` by default: `cc` for this machine's architecture,
/// `<arch>-linux-gnu-gcc` for another.
pub fn default_linker(target: &TargetInfo) -> String {
    if target.arch == std::env::consts::ARCH {
        "cc".to_string()
    } else {
        format!("{}-linux-gnu-gcc", target.arch)
    }
}

/// Links `object` into a shared library with the C compiler driver `linker`, without the C runtime
/// and with every symbol resolved inside the library; returns the library's bytes.
pub fn link_shared(object: &[u8], linker: &str) -> Result<Vec<u8>, AotError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bitnetc-link-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AotError::Io { path, source }
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(io(&dir))?;
    let result = (|| {
        let obj = dir.join("kernels.o");
        std::fs::write(&obj, object).map_err(io(&obj))?;
        let out = std::process::Command::new(linker)
            .current_dir(&dir)
            .args([
                "-shared",
                "-nostdlib",
                "-Wl,--no-undefined",
                "-Wl,-z,noexecstack",
                "-Wl,-Bsymbolic",
                "-o",
                "kernels.so",
                "kernels.o",
            ])
            .output()
            .map_err(|e| AotError::NoLinker {
                linker: linker.to_string(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(AotError::Link {
                linker: linker.to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let lib = dir.join("kernels.so");
        std::fs::read(&lib).map_err(io(&lib))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// What the manifest records beyond the program: provenance and the memory plan.
#[derive(Clone, Debug, Default)]
pub struct Provenance {
    /// The compiler and its version.
    pub compiler: String,
    /// The pass pipeline.
    pub passes: Vec<String>,
    /// The model files and their hashes.
    pub inputs: Vec<InputFile>,
    /// The optimized IR (printed) that was compiled: the artifact's `ir` section.
    pub ir: String,
    /// sha256 of the optimized IR.
    pub ir_sha256: String,
    /// The memory plan's summary.
    pub memory: MemorySummary,
    /// The model's `tokenizer.json`, if any.
    pub tokenizer: Option<Vec<u8>>,
    /// The tokenizer's special ids, `{"bos": id|null, "eos": [ids]}` (JSON), which a bare
    /// `tokenizer.json` does not record.
    pub tokenizer_special: Option<Vec<u8>>,
    /// The model's chat template as the `chat_template` section (JSON), if it has one.
    pub chat_template: Option<Vec<u8>>,
}

/// Packs `parts`, the linked `library` of `code`, and `provenance` into an artifact.
pub fn write_artifact(
    parts: &ProgramParts,
    code: &ObjectCode,
    library: &[u8],
    provenance: &Provenance,
) -> Result<Vec<u8>, AotError> {
    let mut out = Vec::new();
    write_artifact_to(parts, code, library, provenance, &mut out)?;
    Ok(out)
}

/// `write_artifact` written to `w` as it goes, so the weights are not copied into a buffer holding
/// the whole file; returns the bytes written.
pub fn write_artifact_to(
    parts: &ProgramParts,
    code: &ObjectCode,
    library: &[u8],
    provenance: &Provenance,
    w: &mut dyn std::io::Write,
) -> Result<u64, AotError> {
    let manifest = Manifest {
        compiler: provenance.compiler.clone(),
        flags: code.flags.clone(),
        format_version: artifact::FORMAT_VERSION,
        imports: code.imports.clone(),
        inputs: provenance.inputs.clone(),
        ir_sha256: provenance.ir_sha256.clone(),
        kernels: parts
            .kinds
            .iter()
            .map(|k| KernelEntry {
                kind: k.describe(),
                symbol: k.symbol(),
            })
            .collect(),
        launches: parts.launches.iter().map(LaunchEntry::from).collect(),
        memory: provenance.memory.clone(),
        passes: provenance.passes.clone(),
        program: ProgramInfo {
            arena_bytes: parts.arena_bytes,
            batchable: parts.batchable,
            context: parts.context,
            kv_bytes: parts.kv_bytes,
            logits: parts.logits.into(),
            tokens: parts.tokens.into(),
            vocab: parts.vocab,
            weights_bytes: parts.weights.len() as u64,
        },
        sections: Vec::new(),
        target: code.target.clone(),
        weights: parts
            .weight_index
            .iter()
            .map(|(name, w)| {
                (
                    name.clone(),
                    WeightEntry {
                        bytes: w.buf.bytes,
                        elem: w.elem.name().to_string(),
                        offset: w.buf.offset,
                        shape: w.shape.clone(),
                        layout: w
                            .paired
                            .then(|| bitnet_runtime::artifact::PAIRED_LAYOUT.to_string()),
                    },
                )
            })
            .collect(),
    };
    let mut sections: Vec<(&str, &[u8])> = vec![("code", library), ("weights", &parts.weights)];
    if let Some(t) = &provenance.tokenizer {
        sections.push(("tokenizer", t));
    }
    if let Some(t) = &provenance.tokenizer_special {
        sections.push(("tokenizer_special", t));
    }
    if let Some(t) = &provenance.chat_template {
        sections.push(("chat_template", t));
    }
    sections.push(("ir", provenance.ir.as_bytes()));
    Ok(artifact::encode_to(&manifest, &sections, w)?)
}
