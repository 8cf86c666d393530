//! Kernel `KvStore` (see `KernelKind::KvStore` for its buffers, rows and numerics): row t copies
//! `k[t]` and `v[t]` to cache row `pos + t` with 16-byte vector moves (`emit_copy`): exact. The
//! runtime checks `pos + T <= C` before the launch.

use crate::BackendError;
use crate::cpu::emit::loops::emit_for_unsigned;
use crate::cpu::emit::simd::emit_copy;
use crate::cpu::emit::{TableLoads, define_kernel, imm64, mul};
use crate::kernel::KvStoreParams;
use cranelift_codegen::ir::InstBuilder;
use cranelift_module::{FuncId, Module};

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &KvStoreParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let kvw = p.kvw;
    let row_bytes = mul(name, kvw, 4)?;
    let row_imm = imm64(name, row_bytes)?;
    define_kernel(module, name, TableLoads::Movable, &[], |b, e| {
        let k = e.buf(b, 0);
        let v = e.buf(b, 1);
        let kc = e.buf(b, 2);
        let vc = e.buf(b, 3);
        let pos = e.pos(b);
        emit_for_unsigned(b, e.row_begin, e.row_end, 1, &[], false, |b, t, _| {
            let src_off = b.ins().imul_imm_s(t, row_imm);
            let cache_row = b.ins().iadd(pos, t);
            let dst_off = b.ins().imul_imm_s(cache_row, row_imm);
            for (src, dst) in [(k, kc), (v, vc)] {
                let s = b.ins().iadd(src, src_off);
                let d = b.ins().iadd(dst, dst_off);
                emit_copy(name, b, s, d, row_bytes)?;
            }
            Ok(vec![])
        })?;
        Ok(())
    })
}
