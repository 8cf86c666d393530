//! Kernel `Embedding` (see `KernelKind` for its buffers, rows and numerics): each row t copies table
//! row `ids[t]` to output row t with 16-byte vector moves (64 bytes per loop iteration). A copy
//! moves bits, so the result is the interpreter's exactly. The ids are validated by the runtime.

use super::KernelKind;
use super::loops::{MEM, bad_params, define_kernel, emit_copy, emit_loop, imm64, mul};
use crate::BackendError;
use cranelift_codegen::ir::{InstBuilder, types};
use cranelift_module::{FuncId, Module};

/// Defines the kernel `kind` in `module`.
pub fn build(module: &mut dyn Module, kind: &KernelKind) -> Result<FuncId, BackendError> {
    let KernelKind::Embedding { hidden, .. } = *kind else {
        return Err(bad_params(kind, "not an Embedding kernel"));
    };
    let row_bytes = mul(kind, hidden, 4)?;
    let row_imm = imm64(kind, row_bytes)?;
    define_kernel(module, kind, |_, b, e| {
        let table = e.buf(b, 0);
        let ids = e.buf(b, 1);
        let out = e.buf(b, 2);
        emit_loop(b, e.row_begin, e.row_end, 1, &[], false, |b, t, _| {
            let id_at = b.ins().ishl_imm_s(t, 3);
            let id_at = b.ins().iadd(ids, id_at);
            let id = b.ins().load(types::I64, MEM, id_at, 0);
            let src = b.ins().imul_imm_s(id, row_imm);
            let src = b.ins().iadd(table, src);
            let dst = b.ins().imul_imm_s(t, row_imm);
            let dst = b.ins().iadd(out, dst);
            emit_copy(kind, b, src, dst, row_bytes)?;
            Ok(vec![])
        })?;
        Ok(())
    })
}
