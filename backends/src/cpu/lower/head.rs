//! The precision policy of dense matmuls: how the weight `W [n, k]` of an `x·Wᵀ` matmul is stored,
//! and so which kernel reads it. The lm_head follows `LowerOptions::head`, every other dense
//! projection `LowerOptions::dense`.
//!
//! | matmul | weight in the blob | kernel |
//! |---|---|---|
//! | the lm_head, `HeadDtype::Auto`, every weight exactly a bf16 | bf16 pairs (shared with a tied 16-bit embedding) | `MatmulNtHalf` (bf16) |
//! | the lm_head, `HeadDtype::Auto`, else every weight exactly an f16 | f16 pairs (shared likewise) | `MatmulNtHalf` (f16) |
//! | the lm_head, `HeadDtype::Auto`, otherwise | f32 | `MatmulNt` |
//! | another matmul, `HeadDtype::Auto` | bf16 when every weight is exactly a bf16, else f32 | `MatmulNt` |
//! | any, `HeadDtype::Bf16` | bf16 rows, rounded to nearest even (the bf16 pairs when exact) | `MatmulNtHalf` (bf16) |
//! | any, `HeadDtype::F16` | f16 rows (the f16 pairs when exact; an error beyond f16's range) | `MatmulNtHalf` (f16) |
//! | any, `HeadDtype::I8` | int8 rows and f32 row scales | `ActQuant` into scratch (one per `k`), then `MatmulI8` |
//! | any, `HeadDtype::Q4` | 4-bit rows, group multipliers, f32 row scales and corrections | `ActQuant` into scratch, then `MatmulQ4` |

use super::blob::Blob;
use super::{Lowering, Site};
use crate::BackendError;
use crate::cpu::HeadDtype;
use crate::kernel::{
    ActQuantParams, HalfFormat, KernelKind, MatmulI8Params, MatmulNtHalfParams, MatmulNtParams,
    MatmulQ4Params,
};
use bitnet_ir::module::Function;
use bitnet_ir::{ElemType, ValueId};
use bitnet_runtime::{BufRef, Rows};

/// The weight of an `x·Wᵀ` matmul as its kernel reads it.
pub(super) enum HeadWeight {
    /// 16-bit float rows in `layout` order (`MatmulNtHalf`).
    Half { w: BufRef, format: HalfFormat },
    /// Rows in index order, bf16 or f32 (`MatmulNt`).
    Wide { w: BufRef, bf16: bool },
    /// int8 rows and one f32 scale per row (`MatmulI8`, after an `ActQuant` of `x`).
    Int8 { rows: BufRef, scales: BufRef },
    /// 4-bit rows (`MatmulQ4`, after an `ActQuant` of `x`): `[nibbles, multipliers, scales,
    /// corrections]`.
    Q4 { parts: [BufRef; 4] },
}

/// Places weight `w` (`[n, k]`) as the policy says: `dtype` is the requested `HeadDtype` (the lm_head,
/// or a dense projection with a dtype other than `Auto`), `None` for a dense projection kept as it
/// is.
pub(super) fn head_weight(
    blob: &mut Blob<'_>,
    f: &Function,
    w: ValueId,
    k: usize,
    dtype: Option<HeadDtype>,
) -> Result<HeadWeight, BackendError> {
    match dtype {
        Some(HeadDtype::Auto) => {
            match blob.exact_pairs(f, w, k, &[HalfFormat::Bf16, HalfFormat::F16])? {
                Some((w, format)) => Ok(HeadWeight::Half { w, format }),
                None => wide(blob, f, w),
            }
        }
        Some(HeadDtype::Bf16) => half(blob, f, w, k, HalfFormat::Bf16),
        Some(HeadDtype::F16) => half(blob, f, w, k, HalfFormat::F16),
        Some(HeadDtype::I8) => {
            let (rows, scales) = blob.i8_rows(f, w, k)?;
            Ok(HeadWeight::Int8 { rows, scales })
        }
        Some(HeadDtype::Q4) => {
            if k > bitnet_runtime::native::matmul_q4::MAX_K {
                return Err(BackendError::Input(format!(
                    "nn.matmul: the q4 dtype takes rows of at most {} weights, not {k} (use i8)",
                    bitnet_runtime::native::matmul_q4::MAX_K
                )));
            }
            Ok(HeadWeight::Q4 {
                parts: blob.q4_rows(f, w, k)?,
            })
        }
        None => wide(blob, f, w),
    }
}

/// Weight `w` as `format` rows: its exact pairs when every value is exactly such a number (shared
/// with a tied embedding), else rounded to nearest even.
fn half(
    blob: &mut Blob<'_>,
    f: &Function,
    w: ValueId,
    k: usize,
    format: HalfFormat,
) -> Result<HeadWeight, BackendError> {
    let w = match blob.exact_pairs(f, w, k, &[format])? {
        Some((w, _)) => w,
        None => blob.half_rows(f, w, k, format)?,
    };
    Ok(HeadWeight::Half { w, format })
}

/// Weight `w` in index order: bf16 when every value is exactly a bf16 (the same values in half the
/// bytes), else f32.
fn wide(blob: &mut Blob<'_>, f: &Function, w: ValueId) -> Result<HeadWeight, BackendError> {
    match blob.constant(f, w, ElemType::BF16) {
        Ok(w) => Ok(HeadWeight::Wide { w, bf16: true }),
        Err(_) => Ok(HeadWeight::Wide {
            w: blob.constant(f, w, ElemType::F32)?,
            bf16: false,
        }),
    }
}

/// Appends the launches of `out = x·Wᵀ` (`x [T, k]`, `out [T, n]`) reading `weight`.
pub(super) fn launch(
    lw: &mut Lowering<'_>,
    site: &Site<'_>,
    weight: HeadWeight,
    x: ValueId,
    out: ValueId,
    k: u64,
    n: u64,
) -> Result<(), BackendError> {
    match weight {
        HeadWeight::Half { w, format } => {
            let kind = KernelKind::MatmulNtHalf(MatmulNtHalfParams { k, n, format });
            let bufs = vec![lw.arena(x)?, w, lw.arena(out)?];
            lw.launch(kind, bufs, Rows::Static(n), site.label.clone())
        }
        HeadWeight::Wide { w, bf16 } => {
            let kind = KernelKind::MatmulNt(MatmulNtParams { k, n, bf16 });
            let bufs = vec![lw.arena(x)?, w, lw.arena(out)?];
            lw.launch(kind, bufs, Rows::Static(n), site.label.clone())
        }
        HeadWeight::Int8 { rows, scales } => {
            let (xq, xs) = quantize_activations(lw, site, x, k)?;
            let kind = KernelKind::MatmulI8(MatmulI8Params { k, n });
            let bufs = vec![xq, xs, rows, scales, lw.arena(out)?];
            lw.launch(kind, bufs, Rows::Static(n), site.label.clone())
        }
        HeadWeight::Q4 { parts } => {
            let (xq, xs) = quantize_activations(lw, site, x, k)?;
            let kind = KernelKind::MatmulQ4(MatmulQ4Params { k, n });
            let mut bufs = vec![xq, xs];
            bufs.extend(parts);
            bufs.push(lw.arena(out)?);
            lw.launch(kind, bufs, Rows::Static(n), site.label.clone())
        }
    }
}

/// Appends the `ActQuant` of `x` into scratch after the planned arena (one per `k`) that an
/// integer matmul reads: the buffers `(xq, xs)`.
fn quantize_activations(
    lw: &mut Lowering<'_>,
    site: &Site<'_>,
    x: ValueId,
    k: u64,
) -> Result<(BufRef, BufRef), BackendError> {
    let (xq, xs) = lw.act_scratch(k);
    let quant = KernelKind::ActQuant(ActQuantParams {
        k,
        eps_bits: 1e-5f32.to_bits(),
        reciprocal: false,
    });
    let bufs = vec![lw.arena(x)?, xq, xs];
    lw.launch(
        quant,
        bufs,
        Rows::PerToken(1),
        format!("{} (activation quant)", site.label),
    )?;
    Ok((xq, xs))
}
