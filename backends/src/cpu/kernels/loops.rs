//! Code-emission helpers of the embedding, rope, attention and matmul kernels: the kernel scaffold
//! (signature, entry values, definition in the module), counted loops that carry values, and SIMD
//! copies of static byte counts.
//!
//! Addresses and row indices are i64 (the kernels target 64-bit hosts; `define_kernel` refuses
//! others). Loops compare unsigned: every induction value is a non-negative index or an address.

use crate::BackendError;
use crate::cpu::jit::kernel_signature;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};

/// Flags of a load or store of a kernel buffer: may be unaligned, never traps (the runtime checks
/// every buffer's bounds before a launch).
pub(crate) const MEM: MemFlagsData = MemFlagsData::new().with_notrap();

/// Flags of a load from memory that nothing writes while the kernel runs (the launch's `bufs` and
/// `scalars`, weights, the KV cache in `Attention`): Cranelift may move, merge and hoist such loads.
pub(crate) const RO: MemFlagsData = MemFlagsData::new()
    .with_notrap()
    .with_readonly()
    .with_can_move();

// The error and offset helpers are shared with the other kernels' emitter.
pub(crate) use super::emit::{bad_params, codegen_err, imm64, off32};

/// The product `a · b` of static sizes, or an error naming `kernel` on overflow.
pub(crate) fn mul(kernel: &str, a: u64, b: u64) -> Result<u64, BackendError> {
    a.checked_mul(b)
        .ok_or_else(|| bad_params(kernel, "a size overflows u64"))
}

/// The entry values of a kernel.
pub(crate) struct Entry {
    /// `bufs`: the buffer addresses.
    bufs: Value,
    /// `scalars`: `[T, pos]`.
    scalars: Value,
    /// The first row of this call.
    pub row_begin: Value,
    /// One past the last row of this call.
    pub row_end: Value,
}

impl Entry {
    /// Loads the address of buffer `i`.
    pub fn buf(&self, b: &mut FunctionBuilder, i: u8) -> Value {
        b.ins().load(types::I64, RO, self.bufs, i32::from(i) * 8)
    }

    /// Loads T, the number of tokens of this call.
    pub fn tokens(&self, b: &mut FunctionBuilder) -> Value {
        b.ins().load(types::I64, RO, self.scalars, 0)
    }

    /// Loads pos, the position of token 0.
    pub fn pos(&self, b: &mut FunctionBuilder) -> Value {
        b.ins().load(types::I64, RO, self.scalars, 8)
    }
}

/// Declares the kernel named `kernel` (its symbol) with the kernel signature, builds its body with
/// `body` (which gets the module, to import functions, the builder positioned in the entry block, and
/// the entry values) and defines it. The body must leave the builder in an open block; the return
/// is added here.
pub(crate) fn define_kernel(
    module: &mut dyn Module,
    kernel: &str,
    body: impl FnOnce(&mut dyn Module, &mut FunctionBuilder, &Entry) -> Result<(), BackendError>,
) -> Result<FuncId, BackendError> {
    if module.target_config().pointer_type() != types::I64 {
        return Err(BackendError::Unsupported {
            backend: "cpu",
            op: "kernel",
            detail: "the CPU kernels need a 64-bit target".into(),
        });
    }
    let sig = kernel_signature(module);
    let frontend_config = module.target_config();
    let id = module
        .declare_function(kernel, Linkage::Export, &sig)
        .map_err(|e| codegen_err(kernel, e))?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry_block = b.create_block();
        b.append_block_params_for_function_params(entry_block);
        b.switch_to_block(entry_block);
        let params = b.block_params(entry_block).to_vec();
        let [bufs, scalars, row_begin, row_end] = params[..] else {
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
        body(module, &mut b, &entry)?;
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(frontend_config);
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| codegen_err(kernel, format!("{e:?}")))?;
    module.clear_context(&mut ctx);
    Ok(id)
}

fn block_args(first: Option<Value>, rest: &[Value]) -> Vec<BlockArg> {
    first
        .into_iter()
        .chain(rest.iter().copied())
        .map(BlockArg::Value)
        .collect()
}

/// Emits `for i in (start..end).step_by(step)` (unsigned `i < end`), threading the values `init`
/// through the iterations: `body(b, i, carried)` emits one iteration and returns the values for the
/// next one (same count and types as `init`). Returns the values after the last iteration (`init`
/// when the loop runs zero times). With `nonempty` the caller guarantees `start < end` and the entry
/// test is left out. The loop is a bottom-tested one: one branch per iteration.
pub(crate) fn emit_loop<F>(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    step: i64,
    init: &[Value],
    nonempty: bool,
    body: F,
) -> Result<Vec<Value>, BackendError>
where
    F: FnOnce(&mut FunctionBuilder, Value, &[Value]) -> Result<Vec<Value>, BackendError>,
{
    let body_block = b.create_block();
    let exit = b.create_block();
    let ity = b.func.dfg.value_type(start);
    let i = b.append_block_param(body_block, ity);
    let mut carried = Vec::with_capacity(init.len());
    let mut results = Vec::with_capacity(init.len());
    for &v in init {
        let ty = b.func.dfg.value_type(v);
        carried.push(b.append_block_param(body_block, ty));
        results.push(b.append_block_param(exit, ty));
    }
    if nonempty {
        b.ins().jump(body_block, &block_args(Some(start), init));
    } else {
        let go = b.ins().icmp(IntCC::UnsignedLessThan, start, end);
        b.ins().brif(
            go,
            body_block,
            &block_args(Some(start), init),
            exit,
            &block_args(None, init),
        );
    }
    b.switch_to_block(body_block);
    let next = body(b, i, &carried)?;
    if next.len() != init.len() {
        return Err(BackendError::Input(
            "internal: a loop body returned the wrong number of carried values".into(),
        ));
    }
    let i2 = b.ins().iadd_imm_s(i, step);
    let again = b.ins().icmp(IntCC::UnsignedLessThan, i2, end);
    b.ins().brif(
        again,
        body_block,
        &block_args(Some(i2), &next),
        exit,
        &block_args(None, &next),
    );
    b.switch_to_block(exit);
    Ok(results)
}

/// Copies `bytes` bytes (a static count, a multiple of 4) from `src` to `dst`: 64-byte blocks in a
/// loop (four 16-byte vector moves each), then 16-, 8- and 4-byte moves. The ranges must not overlap.
pub(crate) fn emit_copy(
    kernel: &str,
    b: &mut FunctionBuilder,
    src: Value,
    dst: Value,
    bytes: u64,
) -> Result<(), BackendError> {
    let blocks = bytes / 64;
    if blocks > 0 {
        let zero = b.ins().iconst(types::I64, 0);
        let end = b.ins().iconst(types::I64, imm64(kernel, blocks * 64)?);
        emit_loop(b, zero, end, 64, &[], true, |b, o, _| {
            let s = b.ins().iadd(src, o);
            let d = b.ins().iadd(dst, o);
            let parts: Vec<Value> = (0..4)
                .map(|c| b.ins().load(types::I8X16, MEM, s, c * 16))
                .collect();
            for (c, v) in (0i32..).zip(parts) {
                b.ins().store(MEM, v, d, c * 16);
            }
            Ok(vec![])
        })?;
    }
    let mut at = blocks * 64;
    for (width, ty) in [(16, types::I8X16), (8, types::I64), (4, types::I32)] {
        while bytes - at >= width {
            let o = off32(kernel, at)?;
            let v = b.ins().load(ty, MEM, src, o);
            b.ins().store(MEM, v, dst, o);
            at += width;
        }
    }
    if at != bytes {
        return Err(bad_params(kernel, "a copy is not a multiple of 4 bytes"));
    }
    Ok(())
}
