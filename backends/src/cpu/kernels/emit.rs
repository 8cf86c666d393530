//! Code-emission helpers of the ternary, norm and elementwise kernels: building a kernel's function
//! for an ISA, defining it in a module (or disassembling it), loops over `Variable`s, and the SIMD
//! building blocks (i8 dot products, NaN-ignoring maxima, f32 → i8 quantization).
//!
//! Addresses, row indices and T are i64 (the kernels need a 64-bit target). Loops compare signed:
//! every induction value is a non-negative index or an address below 2^63.

use crate::BackendError;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32X4, I8, I8X16, I16X8, I32, I32X4, I64};
use cranelift_codegen::ir::{
    AbiParam, Endianness, Function, InstBuilder, MemFlagsData, Signature, Type, UserFuncName, Value,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::{Context, ir};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module};

/// Flags of a load or store of a kernel buffer: may be unaligned (the ABI promises no alignment),
/// never traps (the runtime checks every buffer's bounds before a launch). Not `readonly`: an output
/// may be the same buffer as an input (in-place reuse); every kernel here reads an element before it
/// writes the element at the same index, so an exact alias is safe.
pub(crate) const MEM: MemFlagsData = MemFlagsData::new().with_notrap();

/// Flags of the loads of the launch tables (`bufs`, `scalars`): never written while a kernel runs.
const TABLE_MEM: MemFlagsData = MemFlagsData::new().with_notrap().with_readonly();

/// Flags of a bitcast between vector types of different lane counts (Cranelift requires an
/// explicit byte order there; the kernels are little-endian).
pub(crate) const LANES_LE: MemFlagsData = MemFlagsData::new().with_endianness(Endianness::Little);

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

/// The entry values of a kernel (see `bitnet_runtime::KernelFn`).
pub(crate) struct Entry {
    bufs: Value,
    scalars: Value,
    /// The first row of this call.
    pub row_begin: Value,
    /// One past the last row of this call.
    pub row_end: Value,
}

impl Entry {
    /// Loads the address of buffer `i`.
    pub fn buf(&self, b: &mut FunctionBuilder, i: u8) -> Value {
        b.ins().load(I64, TABLE_MEM, self.bufs, i32::from(i) * 8)
    }

    /// Loads T, the number of tokens of this call.
    pub fn tokens(&self, b: &mut FunctionBuilder) -> Value {
        b.ins().load(I64, TABLE_MEM, self.scalars, 0)
    }
}

/// The kernel signature (`jit::kernel_signature`) for `isa`.
fn signature(isa: &dyn TargetIsa) -> Signature {
    let mut sig = Signature::new(isa.default_call_conv());
    let ptr = isa.pointer_type();
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(I64));
    sig.params.push(AbiParam::new(I64));
    sig
}

/// Builds the function of the kernel named `kernel` for `isa`: `body` gets the builder positioned in
/// the entry block and must leave it in an open block; the return is added here.
pub(crate) fn build_function(
    isa: &dyn TargetIsa,
    kernel: &str,
    body: impl FnOnce(&mut FunctionBuilder, &Entry) -> Result<(), BackendError>,
) -> Result<Function, BackendError> {
    if isa.pointer_type() != I64 {
        return Err(BackendError::Unsupported {
            backend: "cpu",
            op: "kernel",
            detail: "the CPU kernels need a 64-bit target".into(),
        });
    }
    let mut func = Function::with_name_signature(UserFuncName::default(), signature(isa));
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
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
        row_begin,
        row_end,
    };
    body(&mut b, &entry)?;
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(isa.frontend_config());
    Ok(func)
}

/// Declares the kernel named `kernel` (its symbol) in `module` and defines it as `func` (built for
/// the module's ISA by `build_function`).
pub(crate) fn define(
    module: &mut dyn Module,
    kernel: &str,
    func: Function,
) -> Result<FuncId, BackendError> {
    let sig = super::super::jit::kernel_signature(module);
    if sig != func.signature {
        return Err(codegen_err(kernel, "the kernel was built for another ISA"));
    }
    let id = module
        .declare_function(kernel, Linkage::Export, &sig)
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

/// Compiles `func` for `isa` and returns Cranelift's listing of the machine code (VCode after
/// register allocation: one line per machine instruction).
pub(crate) fn disassemble(
    isa: &dyn TargetIsa,
    kernel: &str,
    func: Function,
) -> Result<String, BackendError> {
    let mut ctx = Context::for_function(func);
    ctx.set_disasm(true);
    let code = ctx
        .compile(isa, &mut ControlPlane::default())
        .map_err(|e| codegen_err(kernel, format!("{:?}", e.inner)))?;
    code.vcode
        .clone()
        .ok_or_else(|| codegen_err(kernel, "Cranelift returned no disassembly"))
}

/// A fresh variable of type `ty` holding `init`.
pub(crate) fn var(b: &mut FunctionBuilder, ty: Type, init: Value) -> Variable {
    let v = b.declare_var(ty);
    b.def_var(v, init);
    v
}

/// Emits `while cond { body }` as a bottom-tested loop (the test is emitted before the loop and at
/// the end of each iteration). Loop-carried values live in `Variable`s.
pub(crate) fn emit_while(
    b: &mut FunctionBuilder,
    mut cond: impl FnMut(&mut FunctionBuilder) -> Value,
    body: impl FnOnce(&mut FunctionBuilder) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let body_block = b.create_block();
    let exit = b.create_block();
    let c = cond(b);
    b.ins().brif(c, body_block, &[], exit, &[]);
    b.switch_to_block(body_block);
    body(b)?;
    let c = cond(b);
    b.ins().brif(c, body_block, &[], exit, &[]);
    b.switch_to_block(exit);
    Ok(())
}

/// Emits `for i in (start..end).step_by(step)` (signed `i < end`); `body` gets the index.
pub(crate) fn emit_for(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    body: impl FnOnce(&mut FunctionBuilder, Value) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let i = var(b, I64, start);
    emit_while(
        b,
        |b| {
            let iv = b.use_var(i);
            b.ins().icmp(IntCC::SignedLessThan, iv, end)
        },
        |b| {
            let iv = b.use_var(i);
            body(b, iv)?;
            let next = b.ins().iadd_imm_s(iv, step);
            b.def_var(i, next);
            Ok(())
        },
    )
}

/// Emits `count` (static) iterations of `body`, which gets a byte offset that starts at 0 and grows
/// by `stride` per iteration: straight-line code for one iteration, a loop otherwise.
pub(crate) fn emit_static_loop(
    b: &mut FunctionBuilder,
    kernel: &str,
    count: u64,
    stride: u64,
    body: impl FnOnce(&mut FunctionBuilder, Value) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    match count {
        0 => Ok(()),
        1 => {
            let zero = b.ins().iconst(I64, 0);
            body(b, zero)
        }
        _ => {
            let zero = b.ins().iconst(I64, 0);
            let end = b
                .ins()
                .iconst(I64, imm64(kernel, count.saturating_mul(stride))?);
            emit_for(b, zero, end, imm64(kernel, stride)?, body)
        }
    }
}

/// `acc + dot(x, c)` per i32 lane, where each lane sums the four products of its bytes, `x` taken as
/// i8 and `c` as u8 (`c_unsigned`) or i8. Written as the exact widening tree that Cranelift folds
/// into one `vpdpbusd` (x86 AVX-VNNI / AVX512-VNNI) or `sdot` (aarch64 DotProd, with signed `c`);
/// elsewhere it lowers to widening multiplies and pairwise adds, with the same exact result.
pub(crate) fn dot_i8(
    b: &mut FunctionBuilder,
    acc: Value,
    x: Value,
    c: Value,
    c_unsigned: bool,
) -> Value {
    let xl = b.ins().swiden_low(x);
    let cl = if c_unsigned {
        b.ins().uwiden_low(c)
    } else {
        b.ins().swiden_low(c)
    };
    let lo = b.ins().imul(xl, cl);
    let xh = b.ins().swiden_high(x);
    let ch = if c_unsigned {
        b.ins().uwiden_high(c)
    } else {
        b.ins().swiden_high(c)
    };
    let hi = b.ins().imul(xh, ch);
    let lo_l = b.ins().swiden_low(lo);
    let lo_h = b.ins().swiden_high(lo);
    let lo32 = b.ins().iadd_pairwise(lo_l, lo_h);
    let hi_l = b.ins().swiden_low(hi);
    let hi_h = b.ins().swiden_high(hi);
    let hi32 = b.ins().iadd_pairwise(hi_l, hi_h);
    let s = b.ins().iadd_pairwise(lo32, hi32);
    b.ins().iadd(s, acc)
}

/// The i16x8 `v` summed pairwise into i32x4 (`pmaddwd` with ones on x86).
pub(crate) fn widen_pairs_i16(b: &mut FunctionBuilder, v: Value) -> Value {
    let l = b.ins().swiden_low(v);
    let h = b.ins().swiden_high(v);
    b.ins().iadd_pairwise(l, h)
}

/// The wrapping sum of the four i32 lanes of `v`.
pub(crate) fn hsum_i32x4(b: &mut FunctionBuilder, v: Value) -> Value {
    let lanes: Vec<Value> = (0u8..4).map(|l| b.ins().extractlane(v, l)).collect();
    let a = b.ins().iadd(lanes[0], lanes[1]);
    let c = b.ins().iadd(lanes[2], lanes[3]);
    b.ins().iadd(a, c)
}

/// `max(m, a)` ignoring a NaN `a` (Rust's `f32::max` when `m` is never NaN), lane-wise for `F32X4`
/// or scalar for `F32`: `a > m ? a : m`.
pub(crate) fn max_ignore_nan(b: &mut FunctionBuilder, m: Value, a: Value) -> Value {
    let gt = b.ins().fcmp(FloatCC::GreaterThan, a, m);
    if b.func.dfg.value_type(m) == F32X4 {
        let mask = b.ins().bitcast(F32X4, MemFlagsData::new(), gt);
        b.ins().bitselect(mask, a, m)
    } else {
        b.ins().select(gt, a, m)
    }
}

/// The quantizer's store of 16 values: `clamp(round_half_even(y·s), -128, 127)` as i8 (NaN → 0) for
/// the four f32x4 `ys`, stored as 16 bytes at `dst + off`. Rounding then saturating conversion to
/// i32 then two saturating narrowings is the clamp-then-convert of the reference (NaN converts to 0,
/// ±inf and out-of-range values saturate).
pub(crate) fn quantize_store_16(
    b: &mut FunctionBuilder,
    ys: [Value; 4],
    s: Value,
    dst: Value,
    off: i32,
) {
    let q: Vec<Value> = ys
        .iter()
        .map(|&y| {
            let v = b.ins().fmul(y, s);
            let r = b.ins().nearest(v);
            b.ins().fcvt_to_sint_sat(I32X4, r)
        })
        .collect();
    let lo = b.ins().snarrow(q[0], q[1]);
    let hi = b.ins().snarrow(q[2], q[3]);
    let bytes = b.ins().snarrow(lo, hi);
    b.ins().store(MEM, bytes, dst, off);
}

/// The scalar form of `quantize_store_16`: one value `y`, scale `s` (both f32), stored at
/// `dst + off`.
pub(crate) fn quantize_store_1(b: &mut FunctionBuilder, y: Value, s: Value, dst: Value, off: i32) {
    let v = b.ins().fmul(y, s);
    let r = b.ins().nearest(v);
    let i = b.ins().fcvt_to_sint_sat(I32, r);
    let lo = b.ins().iconst(I32, -128);
    let hi = b.ins().iconst(I32, 127);
    let i = b.ins().smax(i, lo);
    let i = b.ins().smin(i, hi);
    let q = b.ins().ireduce(I8, i);
    b.ins().store(MEM, q, dst, off);
}

/// A splat of the byte `v` over `I8X16`.
pub(crate) fn splat_i8(b: &mut FunctionBuilder, v: i64) -> Value {
    let c = b.ins().iconst(I8, v);
    b.ins().splat(I8X16, c)
}

/// A zero `I32X4`.
pub(crate) fn zero_i32x4(b: &mut FunctionBuilder) -> Value {
    let c = b.ins().iconst(I32, 0);
    b.ins().splat(I32X4, c)
}

/// A zero `I16X8`.
pub(crate) fn zero_i16x8(b: &mut FunctionBuilder) -> Value {
    let c = b.ins().iconst(ir::types::I16, 0);
    b.ins().splat(I16X8, c)
}
