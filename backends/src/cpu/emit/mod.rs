//! The Cranelift emitter of the CPU kernels: the kernel signature (the C ABI of
//! `bitnet_runtime::KernelFn`), the one way to define a kernel (`define_kernel`, or
//! `disassemble_kernel` to list its machine code), the entry values every kernel reads (`Entry`),
//! the memory flags of kernel loads and stores, and the errors of kernel parameters out of range.
//! `loops` holds the loop forms and `simd` the vector building blocks.
//!
//! Addresses, row indices and T are i64: the kernels need a 64-bit target, and `define_kernel`
//! refuses others.

pub(crate) mod loops;
pub(crate) mod simd;

use crate::BackendError;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{
    AbiParam, Endianness, FuncRef, Function, InstBuilder, MemFlagsData, Signature, UserFuncName,
    Value,
};
use cranelift_codegen::isa::{TargetFrontendConfig, TargetIsa};
use cranelift_codegen::{Context, ir};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};

/// Flags of a load or store of a kernel buffer: may be unaligned (the ABI promises no alignment),
/// never traps (the runtime checks every buffer's bounds before a launch). Not `readonly`: an output
/// may be the same buffer as an input (in-place reuse); every kernel reads an element before it
/// writes the element at the same index, so an exact alias is safe.
pub(crate) const MEM: MemFlagsData = MemFlagsData::new().with_notrap();

/// Flags of a load from memory that nothing writes while the kernel runs (weights, the KV cache in
/// `Attention`, the activations of the float matmuls): Cranelift may move, merge and hoist such
/// loads.
pub(crate) const RO: MemFlagsData = MemFlagsData::new()
    .with_notrap()
    .with_readonly()
    .with_can_move();

/// Flags of a bitcast between vector types of different lane counts (Cranelift requires an
/// explicit byte order there; the kernels are little-endian).
pub(crate) const LANES_LE: MemFlagsData = MemFlagsData::new().with_endianness(Endianness::Little);

/// How a kernel loads its launch tables (`bufs` and `scalars`), which nothing writes while it runs.
/// Each kernel keeps the form its code was tuned with: the two give different instruction orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TableLoads {
    /// Read-only loads that stay where they are emitted (the norm, elementwise, ternary and int8
    /// kernels: they load each table entry once, at the top).
    Fixed,
    /// Read-only loads that Cranelift may also move, merge and hoist (`RO`: the embedding, rope,
    /// KV-store, attention and float matmul kernels).
    Movable,
}

impl TableLoads {
    fn flags(self) -> MemFlagsData {
        match self {
            TableLoads::Fixed => MemFlagsData::new().with_notrap().with_readonly(),
            TableLoads::Movable => RO,
        }
    }
}

/// A code-generation error of the kernel whose symbol is `kernel`.
pub(crate) fn codegen_err(kernel: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Codegen {
        kernel: kernel.to_string(),
        message: e.to_string(),
    }
}

/// Kernel parameters out of this backend's range (a compiler bug upstream); `kernel` is the symbol.
pub(crate) fn bad_params(kernel: &str, why: &str) -> BackendError {
    BackendError::Input(format!("cannot build kernel {kernel}: {why}"))
}

/// `x` as an i32 address offset, or an error naming `kernel`.
pub(crate) fn off32(kernel: &str, x: u64) -> Result<i32, BackendError> {
    i32::try_from(x).map_err(|_| bad_params(kernel, "an offset does not fit in i32"))
}

/// `x` as an i64 immediate, or an error naming `kernel`.
pub(crate) fn imm64(kernel: &str, x: u64) -> Result<i64, BackendError> {
    i64::try_from(x).map_err(|_| bad_params(kernel, "a size does not fit in i64"))
}

/// `x` as a usize, or an error naming `kernel`.
pub(crate) fn size(kernel: &str, x: u64) -> Result<usize, BackendError> {
    usize::try_from(x).map_err(|_| bad_params(kernel, "a size does not fit in usize"))
}

/// The product `a · b` of static sizes, or an error naming `kernel` on overflow.
pub(crate) fn mul(kernel: &str, a: u64, b: u64) -> Result<u64, BackendError> {
    a.checked_mul(b)
        .ok_or_else(|| bad_params(kernel, "a size overflows u64"))
}

/// The signature every kernel has on `isa` (see `bitnet_runtime::KernelFn`):
/// `(bufs: *const *mut u8, scalars: *const i64, row_begin: i64, row_end: i64)`.
pub fn kernel_signature(isa: &dyn TargetIsa) -> Signature {
    let mut sig = Signature::new(isa.default_call_conv());
    let ptr = isa.pointer_type();
    sig.params.push(AbiParam::new(ptr)); // bufs
    sig.params.push(AbiParam::new(ptr)); // scalars
    sig.params.push(AbiParam::new(I64)); // row_begin
    sig.params.push(AbiParam::new(I64)); // row_end
    sig
}

/// Defines kernel `kernel` in `module` as one call of the runtime's micro-kernel `symbol`
/// (`bitnet_runtime::native`) with the kernel's own arguments followed by `params`.
pub(crate) fn define_micro_kernel_call(
    module: &mut dyn Module,
    kernel: &str,
    symbol: &str,
    params: &[i64],
) -> Result<FuncId, BackendError> {
    let sig = micro_kernel_signature(module.isa(), params.len());
    let id = module
        .declare_function(symbol, Linkage::Import, &sig)
        .map_err(|e| codegen_err(kernel, e))?;
    define_kernel(module, kernel, TableLoads::Fixed, &[id], |b, entry| {
        let f = entry.import(kernel, 0)?;
        let mut args = vec![entry.bufs, entry.scalars, entry.row_begin, entry.row_end];
        args.extend(params.iter().map(|&v| b.ins().iconst(I64, v)));
        b.ins().call(f, &args);
        Ok(())
    })
}

/// The signature of a micro-kernel symbol with `params` static parameters (see
/// `bitnet_runtime::native`): the kernel signature, then `params` i64.
pub fn micro_kernel_signature(isa: &dyn TargetIsa, params: usize) -> Signature {
    let mut sig = kernel_signature(isa);
    sig.params
        .extend(std::iter::repeat_n(AbiParam::new(I64), params));
    sig
}

/// Whether the float kernels on `isa` call the runtime's micro-kernels (`bitnet_runtime::native`:
/// the 16-bit float lm_head and attention, each with AVX-512 and AVX2 + FMA variants that give the
/// same bits) instead of code generated here: x86-64 with AVX2 and FMA (x86-64-v3 and up; every
/// such CPU also has F16C, which the 16-bit matmul checks itself, falling back to portable code with
/// the same results). Below it, and on AArch64, the generated 128-bit code is used.
pub fn uses_float_micro_kernels(isa: &dyn TargetIsa) -> bool {
    isa.name() == "x64" && has_flag(isa, "has_avx2") && has_flag(isa, "has_fma")
}

/// Whether the integer matmuls on `isa` (the ternary matmul and the int8 lm_head) call the
/// runtime's micro-kernels, which have AVX2, AVX-VNNI, AVX-512 and AMX variants on x86-64 and NEON
/// ones on AArch64 and pick the best the running CPU has: x86-64 with AVX2 (x86-64-v3 and up), and
/// AArch64. Below AVX2 the generated 128-bit code is used.
pub fn uses_integer_micro_kernels(isa: &dyn TargetIsa) -> bool {
    match isa.name() {
        "x64" => has_flag(isa, "has_avx2"),
        "aarch64" => true,
        _ => false,
    }
}

/// Whether the ISA flag `name` is on.
fn has_flag(isa: &dyn TargetIsa, name: &str) -> bool {
    isa.isa_flags()
        .iter()
        .any(|v| v.name == name && v.as_bool() == Some(true))
}

/// The entry values of a kernel.
pub(crate) struct Entry {
    /// `bufs`: the buffer addresses.
    bufs: Value,
    /// `scalars`: `[T, pos]`.
    scalars: Value,
    /// How `bufs` and `scalars` are loaded.
    tables: MemFlagsData,
    /// The functions the kernel calls, in the order `define_kernel` was given them.
    imports: Vec<FuncRef>,
    /// The first row of this call.
    pub row_begin: Value,
    /// One past the last row of this call.
    pub row_end: Value,
}

impl Entry {
    /// Loads the address of buffer `i`.
    pub fn buf(&self, b: &mut FunctionBuilder, i: u8) -> Value {
        b.ins().load(I64, self.tables, self.bufs, i32::from(i) * 8)
    }

    /// Loads T, the number of tokens of this call.
    pub fn tokens(&self, b: &mut FunctionBuilder) -> Value {
        b.ins().load(I64, self.tables, self.scalars, 0)
    }

    /// Loads pos, the position of token 0.
    pub fn pos(&self, b: &mut FunctionBuilder) -> Value {
        b.ins().load(I64, self.tables, self.scalars, 8)
    }

    /// Import `i` of the kernel (see `define_kernel`), or an error naming `kernel`.
    pub fn import(&self, kernel: &str, i: usize) -> Result<FuncRef, BackendError> {
        self.imports
            .get(i)
            .copied()
            .ok_or_else(|| codegen_err(kernel, format!("the kernel has no import {i}")))
    }
}

/// Defines the kernel named `kernel` (its symbol) in `module`, exported, with the kernel signature,
/// and returns its id. `body` gets the builder positioned in the entry block and the entry values,
/// and must leave the builder in an open block; the return is added here. `imports` are functions
/// already declared in `module` that the kernel calls (`Entry::import`).
pub(crate) fn define_kernel(
    module: &mut dyn Module,
    kernel: &str,
    tables: TableLoads,
    imports: &[FuncId],
    body: impl FnOnce(&mut FunctionBuilder, &Entry) -> Result<(), BackendError>,
) -> Result<FuncId, BackendError> {
    let mut func = Function::with_name_signature(
        UserFuncName::default(),
        kernel_signature(check_64_bit(module.isa())?),
    );
    let refs = imports
        .iter()
        .map(|&id| module.declare_func_in_func(id, &mut func))
        .collect();
    build_body(
        &mut func,
        module.target_config(),
        kernel,
        tables,
        refs,
        body,
    )?;
    let id = module
        .declare_function(kernel, Linkage::Export, &func.signature)
        .map_err(|e| codegen_err(kernel, e))?;
    let mut ctx = module.make_context();
    ctx.func = func;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    module
        .define_function(id, &mut ctx)
        .map_err(|e| codegen_err(kernel, format!("{e:?}")))?;
    module.clear_context(&mut ctx);
    Ok(id)
}

/// Builds the kernel named `kernel` for `isa` as `define_kernel` would (without imports), compiles
/// it, and returns Cranelift's listing of the machine code (VCode after register allocation: one
/// line per machine instruction), for review snapshots.
pub(crate) fn disassemble_kernel(
    isa: &dyn TargetIsa,
    kernel: &str,
    tables: TableLoads,
    body: impl FnOnce(&mut FunctionBuilder, &Entry) -> Result<(), BackendError>,
) -> Result<String, BackendError> {
    let mut func = Function::with_name_signature(
        UserFuncName::default(),
        kernel_signature(check_64_bit(isa)?),
    );
    build_body(
        &mut func,
        isa.frontend_config(),
        kernel,
        tables,
        Vec::new(),
        body,
    )?;
    let mut ctx = Context::for_function(func);
    ctx.set_disasm(true);
    let code = ctx
        .compile(isa, &mut ControlPlane::default())
        .map_err(|e| codegen_err(kernel, format!("{:?}", e.inner)))?;
    code.vcode
        .clone()
        .ok_or_else(|| codegen_err(kernel, "Cranelift returned no disassembly"))
}

/// `isa`, or an error when it is not a 64-bit target.
fn check_64_bit(isa: &dyn TargetIsa) -> Result<&dyn TargetIsa, BackendError> {
    if isa.pointer_type() != I64 {
        return Err(BackendError::Unsupported {
            backend: "cpu",
            op: "kernel",
            detail: "the CPU kernels need a 64-bit target".into(),
        });
    }
    Ok(isa)
}

/// Emits the entry block, `body` and the return into `func` (which has the kernel signature).
fn build_body(
    func: &mut ir::Function,
    frontend: TargetFrontendConfig,
    kernel: &str,
    tables: TableLoads,
    imports: Vec<FuncRef>,
    body: impl FnOnce(&mut FunctionBuilder, &Entry) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(func, &mut fctx);
    let entry_block = b.create_block();
    b.append_block_params_for_function_params(entry_block);
    b.switch_to_block(entry_block);
    let [bufs, scalars, row_begin, row_end] = b.block_params(entry_block)[..] else {
        return Err(codegen_err(
            kernel,
            "the kernel signature has not 4 parameters",
        ));
    };
    let entry = Entry {
        bufs,
        scalars,
        tables: tables.flags(),
        imports,
        row_begin,
        row_end,
    };
    body(&mut b, &entry)?;
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(frontend);
    Ok(())
}
