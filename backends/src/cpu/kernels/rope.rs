//! Kernel `Rope` (see `KernelKind::Rope` for its buffers, rows and numerics), and `rope_table`, the
//! cos|sin table it reads.
//!
//! Row t (position `p = pos + t`) reads table row p; for each head, the pairs `(i, i + d/2)` are
//! rotated four at a time with f32x4 operations (then one at a time for `d/2 mod 4`):
//! `y[i] = x[i]·c − x[i+d/2]·s` and `y[i+d/2] = x[i+d/2]·c + x[i]·s`, each product rounded to f32
//! and then added (no fused multiply-add), which is the interpreter's arithmetic lane by lane. Both
//! inputs of a pair are loaded before either output is stored, so `out` may alias `x`.

use crate::BackendError;
use crate::cpu::emit::loops::emit_for_unsigned;
use crate::cpu::emit::{MEM, TableLoads, bad_params, define_kernel, imm64, mul, off32};
use crate::kernel::RopeParams;
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

/// The `[context, head_dim]` table of `Rope` for the frequencies `inv_freq` (`head_dim/2` of them):
/// row p holds `cos(p·inv_freq[i])` for `i < d/2`, then `sin(p·inv_freq[i])`, computed exactly as
/// `nn.rope`'s reference `eval`: `a = (p as f32)·inv_freq[i]` in f32. Pass the op's frequencies as
/// `bitnet_ir::ops::rope::inv_freq` gives them (from `theta`, or its `inv_freq` attribute).
pub fn rope_table(context: usize, inv_freq: &[f32]) -> Vec<f32> {
    let half = inv_freq.len();
    let d = 2 * half;
    let mut table = vec![0f32; context.saturating_mul(d)];
    for (p, row) in table.chunks_exact_mut(d.max(1)).enumerate() {
        let pf = p as f32;
        for (i, &f) in inv_freq.iter().enumerate() {
            let a = pf * f;
            let (s, c) = (a.sin(), a.cos());
            row[i] = c;
            row[half + i] = s;
        }
    }
    table
}

/// One group of lanes: loads x0, x1, c, s at byte offset `at` of the head, the table row, and writes
/// the two rotated values.
fn rotate(
    b: &mut FunctionBuilder,
    ty: Type,
    xh: Value,
    oh: Value,
    cos: Value,
    at: i32,
    half_bytes: i32,
) {
    let x0 = b.ins().load(ty, MEM, xh, at);
    let x1 = b.ins().load(ty, MEM, xh, at + half_bytes);
    let c = b.ins().load(ty, MEM, cos, at);
    let s = b.ins().load(ty, MEM, cos, at + half_bytes);
    let x0c = b.ins().fmul(x0, c);
    let x1s = b.ins().fmul(x1, s);
    let y0 = b.ins().fsub(x0c, x1s);
    let x1c = b.ins().fmul(x1, c);
    let x0s = b.ins().fmul(x0, s);
    let y1 = b.ins().fadd(x1c, x0s);
    b.ins().store(MEM, y0, oh, at);
    b.ins().store(MEM, y1, oh, at + half_bytes);
}

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &RopeParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let RopeParams { width, head_dim } = *p;
    if head_dim == 0 || !head_dim.is_multiple_of(2) || !width.is_multiple_of(head_dim) {
        return Err(bad_params(
            name,
            "head_dim must be even, positive and divide the width",
        ));
    }
    let half = head_dim / 2;
    let row_bytes = imm64(name, mul(name, width, 4)?)?;
    let head_bytes = imm64(name, mul(name, head_dim, 4)?)?;
    let half_bytes = off32(name, half * 4)?;
    let quads = half / 4;
    define_kernel(module, name, TableLoads::Movable, &[], |b, e| {
        let x = e.buf(b, 0);
        let table = e.buf(b, 1);
        let out = e.buf(b, 2);
        let pos = e.pos(b);
        let zero = b.ins().iconst(types::I64, 0);
        let row_end_bytes = b.ins().iconst(types::I64, row_bytes);
        let quad_end = b.ins().iconst(types::I64, imm64(name, quads * 16)?);
        emit_for_unsigned(b, e.row_begin, e.row_end, 1, &[], false, |b, t, _| {
            let p = b.ins().iadd(pos, t);
            let cos = b.ins().imul_imm_s(p, head_bytes);
            let cos = b.ins().iadd(table, cos);
            let row = b.ins().imul_imm_s(t, row_bytes);
            let xrow = b.ins().iadd(x, row);
            let orow = b.ins().iadd(out, row);
            // Heads: `h` is the byte offset of the head in the row.
            emit_for_unsigned(
                b,
                zero,
                row_end_bytes,
                head_bytes,
                &[],
                width > 0,
                |b, h, _| {
                    let xh = b.ins().iadd(xrow, h);
                    let oh = b.ins().iadd(orow, h);
                    if quads > 0 {
                        emit_for_unsigned(b, zero, quad_end, 16, &[], true, |b, i, _| {
                            let xi = b.ins().iadd(xh, i);
                            let oi = b.ins().iadd(oh, i);
                            let ci = b.ins().iadd(cos, i);
                            rotate(b, types::F32X4, xi, oi, ci, 0, half_bytes);
                            Ok(vec![])
                        })?;
                    }
                    for i in quads * 4..half {
                        rotate(b, types::F32, xh, oh, cos, off32(name, i * 4)?, half_bytes);
                    }
                    Ok(vec![])
                },
            )?;
            Ok(vec![])
        })?;
        Ok(())
    })
}
