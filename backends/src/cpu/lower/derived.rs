//! Derived weights: forms of a constant `[rows, k]` that a kernel reads instead of its f32 values,
//! made at compile time and placed in the blob once per weight and form.
//!
//! - bf16 pairs (`Blob::bf16_pairs`): exactly-bf16 rows in `layout` order, read by the bf16
//!   embedding and the bf16 lm_head alike, so a tied pair is stored once;
//! - f16 or bf16 rows (`Blob::half_rows`): a `HeadDtype::F16` or `HeadDtype::Bf16` matmul weight,
//!   rounded to nearest even;
//! - int8 rows and their f32 scales (`Blob::i8_rows`): a `HeadDtype::I8` matmul weight.

use super::blob::{Blob, inexact_bf16_key, static_shape};
use super::{input, unsupported};
use crate::BackendError;
use crate::cpu::kernels::matmul_i8;
use crate::kernel::layout::{HalfFormat, bf16_layout_exact, layout};
use bitnet_ir::module::Function;
use bitnet_ir::{Data, ElemType, OpKind, ValueId};
use bitnet_runtime::BufRef;

/// The tag of a weight's exactly-bf16 copy in `layout` order: the embedding and the bf16 lm_head
/// read the same bytes, so a tied pair is placed once.
const BF16_PAIRS: &str = "bf16-pairs";

/// The tag of a matmul weight's f16 rows.
const HEAD_F16: &str = "head-f16";

/// The tag of a matmul weight's rounded bf16 rows.
const HEAD_BF16: &str = "head-bf16";

/// The tag of a matmul weight's int8 rows and scales.
const HEAD_I8: &str = "head-i8";

impl Blob<'_> {
    /// Derived forms of a constant `v` (`[rows, cols]` as f32, row-major), made by `make` and placed
    /// under `tag` (each part's elements little endian), each once; `None` when `make` finds they
    /// do not apply. The f32 values are `make`'s to consume, and each part is
    /// converted straight into the blob, so the largest weight (an embedding table) is held as f32
    /// once, not copied.
    fn derived(
        &mut self,
        f: &Function,
        v: ValueId,
        tag: &str,
        count: usize,
        make: impl FnOnce(Vec<f32>) -> Result<Option<Vec<Data>>, BackendError>,
    ) -> Result<Option<Vec<BufRef>>, BackendError> {
        let base = match f.def_op(v).map(|o| f.op(o)) {
            Some(op) if op.kind == OpKind::Weight => {
                format!("w:{}", op.attrs.str("name").unwrap_or_default())
            }
            Some(_) | None => format!("c:{}", v.0),
        };
        let keys: Vec<String> = (0..count).map(|i| format!("{tag}.{i}:{base}")).collect();
        let cached: Option<Vec<BufRef>> = keys.iter().map(|k| self.placed(k)).collect();
        if let Some(bufs) = cached {
            return Ok(Some(bufs));
        }
        let values = self.evaluate(f, v, &static_shape(f, v)?)?.data.into_f32();
        let Some(parts) = make(values)? else {
            return Ok(None);
        };
        if parts.len() != count {
            return Err(input(
                "internal: a derived weight has the wrong number of parts",
            ));
        }
        Ok(Some(
            keys.into_iter()
                .zip(parts)
                .map(|(k, data)| self.push_data(k, &data))
                .collect(),
        ))
    }

    /// Weight `v` (`[rows, k]`) as exactly-bf16 rows in `layout` order, placed once per weight for
    /// every launch that reads it so (the embedding, the bf16 lm_head); `None` when not every value
    /// is exactly a bf16. A named weight is recorded in that layout unless it was recorded before.
    pub(super) fn bf16_pairs(
        &mut self,
        f: &Function,
        v: ValueId,
        k: usize,
    ) -> Result<Option<BufRef>, BackendError> {
        let inexact = inexact_bf16_key(f, v);
        if self.inapplicable.contains(&inexact) {
            return Ok(None);
        }
        let buf = self
            .derived(f, v, BF16_PAIRS, 1, |w| {
                Ok(bf16_layout_exact(&w, k).map(|bits| vec![Data::U16(bits)]))
            })?
            .and_then(|b| b.first().copied());
        if buf.is_none() {
            self.inapplicable.insert(inexact);
        }
        if let Some(buf) = buf
            && let Some(op) = f.def_op(v).map(|o| f.op(o))
            && op.kind == OpKind::Weight
        {
            let shape: Vec<usize> = f
                .ty(v)
                .static_shape()
                .unwrap_or_default()
                .into_iter()
                .map(|d| d as usize)
                .collect();
            let name = op.attrs.str("name").unwrap_or_default();
            self.record(name, buf, ElemType::BF16, &shape, true);
        }
        Ok(buf)
    }

    /// Weight `v` (`[rows, k]`) as `format` rows in `layout` order, rounded to nearest even; an
    /// error when a weight is beyond the format's range.
    pub(super) fn half_rows(
        &mut self,
        f: &Function,
        v: ValueId,
        k: usize,
        format: HalfFormat,
    ) -> Result<BufRef, BackendError> {
        let tag = match format {
            HalfFormat::F16 => HEAD_F16,
            HalfFormat::Bf16 => HEAD_BF16,
        };
        self.derived(f, v, tag, 1, |w| {
            let bits = layout(&w, k, format).ok_or_else(|| {
                unsupported(
                    "nn.matmul",
                    format!(
                        "a matmul weight is beyond {}'s range (use the auto or i8 dtype)",
                        format.name()
                    ),
                )
            })?;
            Ok(Some(vec![Data::U16(bits)]))
        })?
        .and_then(|b| b.first().copied())
        .ok_or_else(|| input("internal: a 16-bit matmul weight was not placed"))
    }

    /// Weight `v` (`[rows, k]`) as int8 rows and one f32 scale per row
    /// (`matmul_i8::quantize_rows`): the buffers `(rows, scales)`.
    pub(super) fn i8_rows(
        &mut self,
        f: &Function,
        v: ValueId,
        k: usize,
    ) -> Result<(BufRef, BufRef), BackendError> {
        let bufs = self
            .derived(f, v, HEAD_I8, 2, |w| {
                let (q, s) = matmul_i8::quantize_rows(&w, k);
                Ok(Some(vec![Data::U8(q), Data::F32(s)]))
            })?
            .unwrap_or_default();
        let (Some(&q), Some(&s)) = (bufs.first(), bufs.get(1)) else {
            return Err(input("internal: an int8 matmul weight was not placed"));
        };
        Ok((q, s))
    }
}
