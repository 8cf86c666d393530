//! The loop forms of the CPU kernels. Two counted loops exist because they compile differently and
//! each kernel was tuned with one: `emit_for_signed` keeps its index in a `Variable` and compares
//! signed (the norm, elementwise, ternary and int8 kernels, with `emit_while` and
//! `emit_static_loop`); `emit_for_unsigned` threads its index and any carried values through block
//! parameters and compares unsigned (the embedding, rope, KV-store, attention and float matmul
//! kernels). Either compare is exact here: every index is a non-negative value or an address below
//! 2^63.

use super::imm64;
use crate::BackendError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{BlockArg, InstBuilder, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};

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

/// Emits `for i in (start..end).step_by(step)` with a signed `i < end`, the index in a `Variable`
/// (`emit_while`); `body` gets the index.
pub(crate) fn emit_for_signed(
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
/// by `stride` per iteration: straight-line code for one iteration, an `emit_for_signed` loop
/// otherwise.
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
            emit_for_signed(b, zero, end, imm64(kernel, stride)?, body)
        }
    }
}

fn block_args(first: Option<Value>, rest: &[Value]) -> Vec<BlockArg> {
    first
        .into_iter()
        .chain(rest.iter().copied())
        .map(BlockArg::Value)
        .collect()
}

/// Emits `for i in (start..end).step_by(step)` with an unsigned `i < end`, threading the values `init`
/// through the iterations: `body(b, i, carried)` emits one iteration and returns the values for the
/// next one (same count and types as `init`). Returns the values after the last iteration (`init`
/// when the loop runs zero times). With `nonempty` the caller guarantees `start < end` and the entry
/// test is left out. The loop is a bottom-tested one: one branch per iteration.
pub(crate) fn emit_for_unsigned<F>(
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
