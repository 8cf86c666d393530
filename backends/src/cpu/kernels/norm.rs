//! The norm kernels: `RmsNormQuant`, `ActQuant` and `RmsNorm` (see `KernelKind` for buffers, rows
//! and numerics). One row (token) per iteration, bit-identical to the reference:
//!
//! - the mean of squares: `f64(x_k)²` (exact) summed in f64 strictly in index order (scalar: the
//!   order of the additions is what the reference rounds), divided by K in f64, rounded to f32;
//!   `inv = 1 / √(ms + eps_norm)` in f32;
//! - `y_k = (x_k · inv) · w_k` in f32, four lanes at a time (lane-wise IEEE operations, the same
//!   roundings);
//! - `m = max_k |y_k|` ignoring NaN (as `f32::max`), four lanes at a time: every candidate is ≥ +0
//!   and not NaN, so the maximum does not depend on the order;
//! - `s = 127 / max(m, eps)` (or `(1 / max(m, eps)) · 127` for the `reciprocal` kinds), then `y` is
//!   recomputed and `q = clamp(round_half_even(y·s), -128, 127)` (NaN → 0), sixteen at a time.

use crate::BackendError;
use crate::cpu::emit::loops::{emit_for_signed, emit_static_loop, var};
use crate::cpu::emit::simd::{max_ignore_nan, quantize_store_1, quantize_store_16};
use crate::cpu::emit::{MEM, TableLoads, bad_params, define_kernel, off32, size};
use crate::kernel::{ActQuantParams, RmsNormParams, RmsNormQuantParams};
use cranelift_codegen::ir::types::{F32, F32X4, F64, I64};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

/// Defines the kernel `p` (`KernelKind::RmsNormQuant`) in `module`.
pub fn build_rms_norm_quant(
    module: &mut dyn Module,
    p: &RmsNormQuantParams,
) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let shape = Shape {
        k: size(name, p.k)?,
        norm: Some(f32::from_bits(p.eps_norm_bits)),
        quant: Some(f32::from_bits(p.eps_bits)),
        reciprocal: p.reciprocal,
    };
    build(module, name, shape)
}

/// Defines the kernel `p` (`KernelKind::ActQuant`) in `module`.
pub fn build_act_quant(
    module: &mut dyn Module,
    p: &ActQuantParams,
) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let shape = Shape {
        k: size(name, p.k)?,
        norm: None,
        quant: Some(f32::from_bits(p.eps_bits)),
        reciprocal: p.reciprocal,
    };
    build(module, name, shape)
}

/// Defines the kernel `p` (`KernelKind::RmsNorm`) in `module`.
pub fn build_rms_norm(module: &mut dyn Module, p: &RmsNormParams) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let shape = Shape {
        k: size(name, p.k)?,
        norm: Some(f32::from_bits(p.eps_bits)),
        quant: None,
        reciprocal: false,
    };
    build(module, name, shape)
}

/// What one kernel computes.
#[derive(Clone, Copy)]
struct Shape {
    k: usize,
    /// `eps_norm` when the row is normalized first.
    norm: Option<f32>,
    /// `eps` when the row is quantized (else normalized and stored).
    quant: Option<f32>,
    /// The quantizer's scale is `(1/max(m, eps))·127` (only with `quant`).
    reciprocal: bool,
}

/// Defines the kernel named `name` computing `shape` in `module`.
fn build(module: &mut dyn Module, name: &str, shape: Shape) -> Result<FuncId, BackendError> {
    if shape.k == 0 {
        return Err(bad_params(name, "k must be positive"));
    }
    off32(name, (shape.k * 4) as u64)?;
    define_kernel(module, name, TableLoads::Fixed, &[], |b, entry| {
        let x = entry.buf(b, 0);
        let mut next = 1;
        let w = if shape.norm.is_some() {
            next += 1;
            Some(entry.buf(b, 1))
        } else {
            None
        };
        let dst = entry.buf(b, next);
        let scales = shape.quant.map(|_| entry.buf(b, next + 1));
        let k = shape.k as i64;
        emit_for_signed(b, entry.row_begin, entry.row_end, 1, |b, row| {
            let xo = b.ins().imul_imm_s(row, k * 4);
            let xr = b.ins().iadd(x, xo);
            let inv = match shape.norm {
                Some(eps_norm) => Some(inv_rms(b, name, xr, shape.k, eps_norm)?),
                None => None,
            };
            let src = Row {
                x: xr,
                w,
                inv: inv.map(|s| (s, b.ins().splat(F32X4, s))),
            };
            match (shape.quant, scales) {
                (Some(eps), Some(scales)) => {
                    let s = quantize_row(b, name, &src, shape, eps, dst, row)?;
                    let so = b.ins().ishl_imm_u(row, 2);
                    let sa = b.ins().iadd(scales, so);
                    b.ins().store(MEM, s, sa, 0);
                }
                _ => {
                    let oa = b.ins().iadd(dst, xo);
                    store_row(b, name, &src, shape.k, oa)?;
                }
            }
            Ok(())
        })
    })
}

/// `1 / √(f32(Σ f64(x_k)² / K) + eps_norm)` of the row at `xr`.
fn inv_rms(
    b: &mut FunctionBuilder,
    name: &str,
    xr: Value,
    k: usize,
    eps_norm: f32,
) -> Result<Value, BackendError> {
    let zero = b.ins().f64const(0.0);
    let ss = var(b, F64, zero);
    let add = |b: &mut FunctionBuilder, base: Value, off: usize| -> Result<(), BackendError> {
        let v = b.ins().load(F32, MEM, base, off32(name, off as u64)?);
        let d = b.ins().fpromote(F64, v);
        let sq = b.ins().fmul(d, d);
        let acc = b.use_var(ss);
        let acc = b.ins().fadd(acc, sq);
        b.def_var(ss, acc);
        Ok(())
    };
    const UNROLL: usize = 8;
    emit_static_loop(b, name, (k / UNROLL) as u64, (UNROLL * 4) as u64, |b, o| {
        let base = b.ins().iadd(xr, o);
        for l in 0..UNROLL {
            add(b, base, l * 4)?;
        }
        Ok(())
    })?;
    for e in k / UNROLL * UNROLL..k {
        add(b, xr, e * 4)?;
    }
    let sum = b.use_var(ss);
    let kf = b.ins().f64const(k as f64);
    let mean = b.ins().fdiv(sum, kf);
    let ms = b.ins().fdemote(F32, mean);
    let eps = b.ins().f32const(eps_norm);
    let t = b.ins().fadd(ms, eps);
    let root = b.ins().sqrt(t);
    let one = b.ins().f32const(1.0);
    Ok(b.ins().fdiv(one, root))
}

/// The source of a row's values `y_k`: `x_k`, or `(x_k · inv) · w_k`.
struct Row {
    x: Value,
    w: Option<Value>,
    /// `inv` as f32 and as a splat.
    inv: Option<(Value, Value)>,
}

impl Row {
    /// The values at byte offset `o + off` of the row: four (`vector`) or one.
    fn y(&self, b: &mut FunctionBuilder, vector: bool, o: Value, off: i32) -> Value {
        let ty = if vector { F32X4 } else { F32 };
        let xa = b.ins().iadd(self.x, o);
        let xv = b.ins().load(ty, MEM, xa, off);
        match (self.inv, self.w) {
            (Some((inv, inv4)), Some(w)) => {
                let t = b.ins().fmul(xv, if vector { inv4 } else { inv });
                let wa = b.ins().iadd(w, o);
                let wv = b.ins().load(ty, MEM, wa, off);
                b.ins().fmul(t, wv)
            }
            _ => xv,
        }
    }
}

/// Quantizes the row `src` into `q[row]`; returns its scale.
fn quantize_row(
    b: &mut FunctionBuilder,
    name: &str,
    src: &Row,
    shape: Shape,
    eps: f32,
    q: Value,
    row: Value,
) -> Result<Value, BackendError> {
    let k = shape.k;
    // m = max |y| (NaN ignored), four lanes, then the lanes and the last k % 4 values.
    let zero = b.ins().f32const(0.0);
    let zero4 = b.ins().splat(F32X4, zero);
    let m4 = var(b, F32X4, zero4);
    emit_static_loop(b, name, (k / 4) as u64, 16, |b, o| {
        let y = src.y(b, true, o, 0);
        let a = b.ins().fabs(y);
        let m = b.use_var(m4);
        let m = max_ignore_nan(b, m, a);
        b.def_var(m4, m);
        Ok(())
    })?;
    let mv = b.use_var(m4);
    let mut m = b.ins().extractlane(mv, 0);
    for l in 1u8..4 {
        let a = b.ins().extractlane(mv, l);
        m = max_ignore_nan(b, m, a);
    }
    let o0 = b.ins().iconst(I64, 0);
    for e in k / 4 * 4..k {
        let y = src.y(b, false, o0, off32(name, (e * 4) as u64)?);
        let a = b.ins().fabs(y);
        m = max_ignore_nan(b, m, a);
    }
    // s = 127 / max(m, eps) (m is never NaN, eps is positive).
    let eps = b.ins().f32const(eps);
    let floor = max_ignore_nan(b, eps, m);
    let c127 = b.ins().f32const(127.0);
    let s = if shape.reciprocal {
        let one = b.ins().f32const(1.0);
        let r = b.ins().fdiv(one, floor);
        b.ins().fmul(r, c127)
    } else {
        b.ins().fdiv(c127, floor)
    };
    let s4 = b.ins().splat(F32X4, s);
    let qo = b.ins().imul_imm_s(row, k as i64);
    let qr = b.ins().iadd(q, qo);
    emit_static_loop(b, name, (k / 16) as u64, 64, |b, o| {
        let ys = [0, 16, 32, 48].map(|off| src.y(b, true, o, off));
        let qo = b.ins().ushr_imm_u(o, 2);
        let qa = b.ins().iadd(qr, qo);
        quantize_store_16(b, ys, s4, qa, 0);
        Ok(())
    })?;
    for e in k / 16 * 16..k {
        let y = src.y(b, false, o0, off32(name, (e * 4) as u64)?);
        quantize_store_1(b, y, s, qr, off32(name, e as u64)?);
    }
    Ok(s)
}

/// Stores the row `src` (f32) at `dst`.
fn store_row(
    b: &mut FunctionBuilder,
    name: &str,
    src: &Row,
    k: usize,
    dst: Value,
) -> Result<(), BackendError> {
    emit_static_loop(b, name, (k / 8) as u64, 32, |b, o| {
        let ys = [0, 16].map(|off| src.y(b, true, o, off));
        let da = b.ins().iadd(dst, o);
        for (y, off) in ys.into_iter().zip([0, 16]) {
            b.ins().store(MEM, y, da, off);
        }
        Ok(())
    })?;
    let o0 = b.ins().iconst(I64, 0);
    let mut e = k / 8 * 8;
    if k - e >= 4 {
        let off = off32(name, (e * 4) as u64)?;
        let y = src.y(b, true, o0, off);
        b.ins().store(MEM, y, dst, off);
        e += 4;
    }
    for e in e..k {
        let off = off32(name, (e * 4) as u64)?;
        let y = src.y(b, false, o0, off);
        b.ins().store(MEM, y, dst, off);
    }
    Ok(())
}
