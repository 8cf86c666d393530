//! Kernel `KvStore` (see `KernelKind::KvStore` for its buffers, rows and numerics): row t copies
//! `k[t]` and `v[t]` into cache row `pos + t` of the CPU's head-major caches (`[kv_heads, C, d]`):
//! head g's `d` values go to `(g·C + pos + t)·d`, with 16-byte vector moves (`emit_copy`): exact.
//! The runtime checks `pos + T <= C` before the launch.

use crate::BackendError;
use crate::cpu::emit::loops::emit_for_unsigned;
use crate::cpu::emit::simd::emit_copy;
use crate::cpu::emit::{TableLoads, bad_params, define_kernel, imm64, mul};
use crate::kernel::KvStoreParams;
use cranelift_codegen::ir::{InstBuilder, types};
use cranelift_module::{FuncId, Module};

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &KvStoreParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let KvStoreParams {
        kvw,
        head_dim,
        context,
    } = *p;
    let kv_heads = p.kv_heads().filter(|_| context > 0).ok_or_else(|| {
        bad_params(
            name,
            "the row width must be a positive multiple of the head size, and the context positive",
        )
    })?;
    let row_imm = imm64(name, mul(name, kvw, 4)?)?;
    let d_bytes = mul(name, head_dim, 4)?;
    let d_imm = imm64(name, d_bytes)?;
    let head_imm = imm64(name, mul(name, context, d_bytes)?)?;
    let kv_heads = imm64(name, kv_heads)?;
    define_kernel(module, name, TableLoads::Movable, &[], |b, e| {
        let k = e.buf(b, 0);
        let v = e.buf(b, 1);
        let kc = e.buf(b, 2);
        let vc = e.buf(b, 3);
        let pos = e.pos(b);
        let zero = b.ins().iconst(types::I64, 0);
        let heads = b.ins().iconst(types::I64, kv_heads);
        emit_for_unsigned(b, e.row_begin, e.row_end, 1, &[], false, |b, t, _| {
            let src_row = b.ins().imul_imm_s(t, row_imm);
            let cache_row = b.ins().iadd(pos, t);
            let dst_row = b.ins().imul_imm_s(cache_row, d_imm);
            emit_for_unsigned(b, zero, heads, 1, &[], false, |b, g, _| {
                let src_off = b.ins().imul_imm_s(g, d_imm);
                let src_off = b.ins().iadd(src_row, src_off);
                let dst_off = b.ins().imul_imm_s(g, head_imm);
                let dst_off = b.ins().iadd(dst_row, dst_off);
                for (src, dst) in [(k, kc), (v, vc)] {
                    let s = b.ins().iadd(src, src_off);
                    let d = b.ins().iadd(dst, dst_off);
                    emit_copy(name, b, s, d, d_bytes)?;
                }
                Ok(vec![])
            })?;
            Ok(vec![])
        })?;
        Ok(())
    })
}
