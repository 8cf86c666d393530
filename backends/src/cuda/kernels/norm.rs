//! CUDA kernel for `RmsNormQuant`, `ActQuant` and `RmsNorm` (buffers and rows as `KernelKind`
//! documents): one block per token row, each thread owning elements `tid + j·threads`.
//!
//! 1. norm (when present): `Σ f64(x_k)²` per thread in f64, then over the block in a fixed tree
//!    (`Kb::block_reduce`), divided by K in f64 and rounded to f32; `inv = 1 / √(ms + eps_norm)` in
//!    f32 (`sqrt.rn`, `rcp.rn`). Each square is exact in f64, so the f32 mean matches the
//!    interpreter's index-order sum except when the two f64 sums round to different sides of an
//!    f32 rounding boundary (a 1-ulp difference in `inv` at worst);
//! 2. `y_k = (x_k · inv) · w_k` in f32, kept in registers (at most `MAX_PER_THREAD` per thread);
//! 3. quantizer (when present): `m = max |y_k|` (NaN ignored, order-independent), `s = 127 /
//!    max(m, eps)` (or `(1 / max(m, eps)) · 127`), `q = clamp(cvt.rni(y·s), −128, 127)`: round half
//!    to even, NaN → 0, exactly the interpreter's `act_quant`.
//!
//! Every read of `x` happens before the block's last barrier and every write after it, so `out`
//! may be `x` itself.

use super::super::emit::{Kb, R};
use super::{imm, unsupported};
use crate::BackendError;
use crate::kernel::{ActQuantParams, KernelKind, RmsNormParams, RmsNormQuantParams};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::values::{BasicValueEnum, FloatValue};

/// The most elements one thread keeps in registers.
pub const MAX_PER_THREAD: u64 = 32;

/// Threads per block for rows of `k` elements.
pub fn threads(kind: &KernelKind, k: u64) -> Result<u32, BackendError> {
    if k == 0 {
        return Err(unsupported(kind, "an empty row"));
    }
    for t in [256u32, 512, 1024] {
        if k.div_ceil(u64::from(t)) <= MAX_PER_THREAD {
            return Ok(t);
        }
    }
    Err(unsupported(kind, "rows longer than 32768 elements"))
}

/// What one norm kernel computes.
struct Shape {
    k: u64,
    /// `eps_norm` when the row is normalized first.
    norm: Option<f32>,
    /// `eps` when the row is quantized (else normalized and stored).
    quant: Option<f32>,
    /// The quantizer's scale is `(1/max(m, eps))·127` (only with `quant`).
    reciprocal: bool,
}

/// Defines the kernel `p` (`KernelKind::RmsNormQuant`) named `name`.
pub fn build_rms_norm_quant<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &RmsNormQuantParams,
    threads: u64,
) -> R<()> {
    let shape = Shape {
        k: p.k,
        norm: Some(f32::from_bits(p.eps_norm_bits)),
        quant: Some(f32::from_bits(p.eps_bits)),
        reciprocal: p.reciprocal,
    };
    build(cx, m, name, &shape, threads)
}

/// Defines the kernel `p` (`KernelKind::ActQuant`) named `name`.
pub fn build_act_quant<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &ActQuantParams,
    threads: u64,
) -> R<()> {
    let shape = Shape {
        k: p.k,
        norm: None,
        quant: Some(f32::from_bits(p.eps_bits)),
        reciprocal: p.reciprocal,
    };
    build(cx, m, name, &shape, threads)
}

/// Defines the kernel `p` (`KernelKind::RmsNorm`) named `name`.
pub fn build_rms_norm<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &RmsNormParams,
    threads: u64,
) -> R<()> {
    let shape = Shape {
        k: p.k,
        norm: Some(f32::from_bits(p.eps_bits)),
        quant: None,
        reciprocal: false,
    };
    build(cx, m, name, &shape, threads)
}

/// Defines the norm kernel named `name` computing `s` with `threads` threads per block.
fn build<'ctx>(cx: &'ctx Context, m: &Module<'ctx>, name: &str, s: &Shape, threads: u64) -> R<()> {
    // x, w (with a norm), then q and s (with a quantizer) or out.
    let bufs = 1 + u32::from(s.norm.is_some()) + if s.quant.is_some() { 2 } else { 1 };
    let kb = Kb::kernel(cx, m, name, bufs)?;
    let f32t = cx.f32_type();
    let x = kb.buf(0)?;
    let w = if s.norm.is_some() {
        Some(kb.buf(1)?)
    } else {
        None
    };
    let dst = kb.buf(if s.norm.is_some() { 2 } else { 1 })?;
    let row = kb.block_id()?;
    let tid = kb.tid()?;
    let k = kb.i64c(imm(s.k)?);
    let base = kb.mul(row, k)?;
    let per = s.k.div_ceil(threads);
    let exact = s.k.is_multiple_of(threads);
    // Element j of this thread: index `tid + j·threads`, in range when `exact` or checked.
    let index = |j: u64| -> R<_> { kb.add(tid, kb.i64c(imm(j * threads)?)) };
    let guarded = |j: u64, body: &dyn Fn(inkwell::values::IntValue<'ctx>) -> R<()>| -> R<()> {
        let e = index(j)?;
        if exact || (j + 1) * threads <= s.k {
            body(e)
        } else {
            kb.if_then(kb.lt(e, k)?, || body(e))
        }
    };
    let inv = match s.norm {
        Some(eps_norm) => {
            let ss = kb.var(cx.f64_type(), kb.f64c(0.0))?;
            for j in 0..per {
                guarded(j, &|e| {
                    let v = kb.to_f64(kb.load_f32(x, kb.add(base, e)?)?)?;
                    let sq = kb.fmul(v, v)?;
                    let acc = kb.get(&ss)?.into_float_value();
                    kb.set(&ss, kb.fadd(acc, sq)?)
                })?;
            }
            let local = kb.get(&ss)?;
            let total = kb.block_reduce(local, threads, "ss", |a, b| {
                Ok(kb.fadd(a.into_float_value(), b.into_float_value())?.into())
            })?;
            let mean = kb.fdiv(total.into_float_value(), kb.f64c(s.k as f64))?;
            let ms = kb.fadd(kb.to_f32(mean)?, kb.f32c(eps_norm))?;
            let root = kb
                .call("llvm.sqrt.f32", f32t.into(), &[ms.into()])?
                .into_float_value();
            Some(kb.fdiv(kb.f32c(1.0), root)?)
        }
        None => None,
    };
    // y_j, zero where out of range.
    let mut ys = Vec::with_capacity(per as usize);
    for j in 0..per {
        let y = kb.var(f32t, kb.f32c(0.0))?;
        guarded(j, &|e| {
            let xv = kb.load_f32(x, kb.add(base, e)?)?;
            let v = match (inv, w) {
                (Some(inv), Some(w)) => kb.fmul(kb.fmul(xv, inv)?, kb.load_f32(w, e)?)?,
                _ => xv,
            };
            kb.set(&y, v)
        })?;
        ys.push(y);
    }
    let Some(eps) = s.quant else {
        for (j, y) in ys.iter().enumerate() {
            guarded(j as u64, &|e| {
                let v = kb.get(y)?;
                kb.store(dst, kb.add(base, e)?, v)
            })?;
        }
        return kb.finish();
    };
    let mut mloc: FloatValue = kb.f32c(0.0);
    for y in &ys {
        let a = kb.fabs(kb.get(y)?.into_float_value())?;
        mloc = kb.fmax(mloc, a)?;
    }
    let mx = kb.block_reduce(mloc.into(), threads, "max", |a, b| {
        Ok(kb.fmax(a.into_float_value(), b.into_float_value())?.into())
    })?;
    let floor = kb.fmax(kb.f32c(eps), mx.into_float_value())?;
    let scale = if s.reciprocal {
        kb.fmul(kb.fdiv(kb.f32c(1.0), floor)?, kb.f32c(127.0))?
    } else {
        kb.fdiv(kb.f32c(127.0), floor)?
    };
    let i32t = cx.i32_type();
    for (j, y) in ys.iter().enumerate() {
        guarded(j as u64, &|e| {
            let v = kb.fmul(kb.get(y)?.into_float_value(), scale)?;
            let r: BasicValueEnum = kb.f2i_rn(v)?.into();
            let r = kb.call(
                "llvm.smax.i32",
                i32t.into(),
                &[r, BasicValueEnum::from(kb.i32c(-128))],
            )?;
            let r = kb.call(
                "llvm.smin.i32",
                i32t.into(),
                &[r, BasicValueEnum::from(kb.i32c(127))],
            )?;
            let q =
                kb.b.build_int_truncate(r.into_int_value(), cx.i8_type(), "q")?;
            kb.store(dst, kb.add(base, e)?, q)
        })?;
    }
    let scales = kb.buf(if s.norm.is_some() { 3 } else { 2 })?;
    kb.if_then(kb.eq(tid, kb.i64c(0))?, || kb.store(scales, row, scale))?;
    kb.finish()
}
