//! Derived weights: forms of a constant `[rows, k]` that a kernel reads instead of its f32 values,
//! made at compile time and placed in the blob once per weight and form.
//!
//! - a 16-bit table in index order (`Blob::in_order`): exactly-bf16 or exactly-f16 rows at their
//!   place in the model file, mapped from it where its alignment allows, read by an embedding
//!   that no 16-bit lm_head shares;
//! - exact pairs (`Blob::exact_pairs`): rows that are exactly bf16 (or exactly f16) in `layout`
//!   order, read by the 16-bit embedding and the 16-bit lm_head alike, so a tied pair is stored
//!   once;
//! - f16 or bf16 rows (`Blob::half_rows`): a `HeadDtype::F16` or `HeadDtype::Bf16` matmul weight,
//!   rounded to nearest even;
//! - int8 rows and their f32 scales (`Blob::i8_rows`): a `HeadDtype::I8` matmul weight;
//! - 4-bit rows, group multipliers, row scales and corrections (`Blob::q4_rows`): a
//!   `HeadDtype::Q4` matmul weight.

use super::blob::{Blob, constant_id, inexact_key, static_shape, weight_name};
use super::{input, unsupported};
use crate::BackendError;
use crate::cpu::kernels::{matmul_i8, matmul_q4};
use crate::kernel::layout::{
    HalfFormat, exact_bits, layout, layout_exact, pairs_into, rows_into, stored_exact,
};
use bitnet_ir::module::Function;
use bitnet_ir::{Data, ElemType, ValueId};
use bitnet_runtime::BufRef;
use bitnet_runtime::native::matmul_q4 as q4;

/// The tag of a weight's exactly-bf16 copy in `layout` order: the embedding and the bf16 lm_head
/// read the same bytes, so a tied pair is placed once.
const BF16_PAIRS: &str = "bf16-pairs";

/// The tag of a weight's exactly-f16 copy in `layout` order, shared as `BF16_PAIRS` is.
const F16_PAIRS: &str = "f16-pairs";

/// The tag of a matmul weight's f16 rows.
const HEAD_F16: &str = "head-f16";

/// The tag of a matmul weight's rounded bf16 rows.
const HEAD_BF16: &str = "head-bf16";

/// The tag of a matmul weight's int8 rows and scales.
const HEAD_I8: &str = "head-i8";

/// The tag of a matmul weight's 4-bit rows, multipliers, scales and corrections.
const HEAD_Q4: &str = "head-q4";

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
        let keys: Vec<String> = (0..count).map(|i| derived_key(f, v, tag, i)).collect();
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

    /// Weight `v` (`[rows, k]`) as exactly-`format` rows in `layout` order for the first of
    /// `formats` whose numbers hold every value exactly (`layout_exact`), with that format; placed
    /// once per weight and format for every launch that reads it so (the embedding, the 16-bit
    /// lm_head), and the weight evaluated at most once per call. `None` when no format is exact.
    /// A named weight is recorded in that layout unless it was recorded before.
    pub(super) fn exact_pairs(
        &mut self,
        f: &Function,
        v: ValueId,
        k: usize,
        formats: &[HalfFormat],
    ) -> Result<Option<(BufRef, HalfFormat)>, BackendError> {
        let candidates = self.exact_candidates(f, v, formats);
        for &format in &candidates {
            if let Some(buf) = self.placed(&derived_key(f, v, pairs_tag(format), 0)) {
                return Ok(Some((buf, format)));
            }
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        if let Some((buf, format)) = self.stored_pairs(f, v, k, &candidates)? {
            self.record_pairs(f, v, buf, format)?;
            return Ok(Some((buf, format)));
        }
        let values = self.evaluate(f, v, &static_shape(f, v)?)?.data.into_f32();
        for format in candidates {
            let Some(bits) = layout_exact(&values, k, format) else {
                self.inapplicable.insert(inexact_key(f, v, format));
                continue;
            };
            drop(values);
            let buf = self.push_data(derived_key(f, v, pairs_tag(format), 0), &Data::U16(bits));
            self.record_pairs(f, v, buf, format)?;
            return Ok(Some((buf, format)));
        }
        Ok(None)
    }

    /// Weight `v`'s pairs copied straight from its store's 16-bit bytes into the blob
    /// (`WeightStore::visit_stored`), when the store keeps it in one of `candidates`' formats and
    /// every value widens exactly (`stored_exact`): the table is never copied out of the file nor
    /// widened to f32 (a 128k × 2560 f16 embedding would take 1.3 GB so).
    fn stored_pairs(
        &mut self,
        f: &Function,
        v: ValueId,
        k: usize,
        candidates: &[HalfFormat],
    ) -> Result<Option<(BufRef, HalfFormat)>, BackendError> {
        self.place_stored(f, v, candidates, |blob, format, bytes| {
            let key = derived_key(f, v, pairs_tag(format), 0);
            blob.push_with(key, bytes.len(), |dst| pairs_into(bytes, k, dst))
        })
    }

    /// Those of `formats` that weight `v` has not been found not to hold exactly.
    fn exact_candidates(
        &self,
        f: &Function,
        v: ValueId,
        formats: &[HalfFormat],
    ) -> Vec<HalfFormat> {
        formats
            .iter()
            .copied()
            .filter(|&format| !self.inapplicable.contains(&inexact_key(f, v, format)))
            .collect()
    }

    /// What `place` places from weight `v`'s bytes in its store (`WeightStore::visit_stored`),
    /// with their format, when the store keeps it in one of `candidates`' formats, as many bytes
    /// as its shape has values, every value widening exactly (`stored_exact`); `None` otherwise.
    fn place_stored(
        &mut self,
        f: &Function,
        v: ValueId,
        candidates: &[HalfFormat],
        mut place: impl FnMut(&mut Self, HalfFormat, &[u8]) -> BufRef,
    ) -> Result<Option<(BufRef, HalfFormat)>, BackendError> {
        let Some(name) = weight_name(f, v) else {
            return Ok(None);
        };
        let numel = static_shape(f, v)?
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let store = self.store;
        let mut placed = None;
        store.visit_stored(name, &mut |elem, bytes| {
            let Some(&format) = candidates.iter().find(|c| c.elem() == elem) else {
                return;
            };
            if numel.and_then(|n| n.checked_mul(2)) != Some(bytes.len())
                || !stored_exact(bytes, format)
            {
                return;
            }
            placed = Some((place(self, format, bytes), format));
        });
        Ok(placed)
    }

    /// Weight `v` as exactly-`format` values in index order, for the first of `formats` whose
    /// numbers hold every value exactly (as `exact_pairs`): the store's own bytes when it keeps the
    /// weight so (`WeightStore::visit_stored`; `stored_exact`), else its values evaluated as f32.
    /// Placed by `AlignedBytes::push_file` at the weight's place in its file when the store names
    /// one (`WeightStore::stored_file`), which maps the file's pages into the blob where the
    /// file's alignment allows: the table then takes memory only for the rows a run gathers, and
    /// the compile neither copies it nor writes fresh pages for it. Recorded as the weight in that
    /// element type, index order, so a reader of the same constant in that type shares it. `None`
    /// when no format is exact.
    pub(super) fn in_order(
        &mut self,
        f: &Function,
        v: ValueId,
        formats: &[HalfFormat],
    ) -> Result<Option<(BufRef, HalfFormat)>, BackendError> {
        let Some(name) = weight_name(f, v) else {
            return Ok(None);
        };
        let candidates = self.exact_candidates(f, v, formats);
        let key = |format: HalfFormat| format!("w:{name}:{}", format.elem());
        for &format in &candidates {
            if let Some(buf) = self.placed(&key(format)) {
                return Ok(Some((buf, format)));
            }
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        let shape = static_shape(f, v)?;
        let source = self.store.stored_file(name);
        let row = 2 * shape.last().copied().unwrap_or(1);
        let mut placed = self.place_stored(f, v, &candidates, |blob, format, bytes| {
            let source = source.as_ref().filter(|s| s.elem == format.elem());
            blob.push_file(key(format), bytes.len(), source, |dst| {
                rows_into(bytes, row, dst, |_| {})
            })
        })?;
        if placed.is_none() {
            // The file's own format first, so that the table is placed as from its bytes.
            let mut candidates = candidates;
            candidates.sort_by_key(|c| source.as_ref().is_none_or(|s| s.elem != c.elem()));
            let values = self.evaluate(f, v, &shape)?.data.into_f32();
            for format in candidates {
                let Some(bits) = exact_bits(&values, format) else {
                    self.inapplicable.insert(inexact_key(f, v, format));
                    continue;
                };
                let data = Data::U16(bits);
                let source = source.as_ref().filter(|s| s.elem == format.elem());
                let buf = self.push_file(key(format), data.le_byte_len(), source, |dst| {
                    data.write_le_bytes(dst)
                });
                placed = Some((buf, format));
                break;
            }
        }
        if let Some((buf, format)) = placed {
            self.record(name, buf, format.elem(), &shape, false);
        }
        Ok(placed)
    }

    /// Records weight `v`, placed as `buf` in `format` pairs, unless it was recorded before.
    fn record_pairs(
        &mut self,
        f: &Function,
        v: ValueId,
        buf: BufRef,
        format: HalfFormat,
    ) -> Result<(), BackendError> {
        if let Some(name) = weight_name(f, v) {
            let shape = static_shape(f, v)?;
            self.record(name, buf, format.elem(), &shape, true);
        }
        Ok(())
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
        if let Some(placed) = self.stored_i8_rows(f, v, k)? {
            return Ok(placed);
        }
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

impl Blob<'_> {
    /// Weight `v` (`[rows, k]`) in the 4-bit row form (`matmul_q4::quantize_row`): the buffers
    /// `[nibbles, multipliers, scales, corrections]`.
    pub(super) fn q4_rows(
        &mut self,
        f: &Function,
        v: ValueId,
        k: usize,
    ) -> Result<[BufRef; 4], BackendError> {
        let keys: [String; 4] = std::array::from_fn(|i| derived_key(f, v, HEAD_Q4, i));
        let placed: Option<Vec<BufRef>> = keys.iter().map(|key| self.placed(key)).collect();
        if let Some([w, m, s, c]) = placed.as_deref() {
            return Ok([*w, *m, *s, *c]);
        }
        let k = k.max(1);
        let mb = q4::multipliers(k);
        // Each row's multipliers next to its scale and correction, joined in row order below.
        let quantize = |row: &[f32], nibbles: &mut [u8]| {
            let mut mults = vec![0u8; mb];
            (matmul_q4::quantize_row(row, nibbles, &mut mults), mults)
        };
        let rows = match self.stored_rows(f, v, k, &keys[0], q4::nibble_bytes(k), &quantize)? {
            Some(placed) => placed,
            None => {
                let w = self.evaluate(f, v, &static_shape(f, v)?)?.data.into_f32();
                let n = w.len() / k;
                let mut done = Vec::with_capacity(n);
                let nibbles = self.push_with(keys[0].clone(), n * q4::nibble_bytes(k), |dst| {
                    for (row, out) in w.chunks(k).zip(dst.chunks_mut(q4::nibble_bytes(k))) {
                        done.push(quantize(row, out));
                    }
                });
                (nibbles, done)
            }
        };
        let (nibbles, done) = rows;
        let mults: Vec<u8> = done.iter().flat_map(|(_, m)| m.iter().copied()).collect();
        let done: Vec<_> = done.into_iter().map(|(q, _)| q).collect();
        let m = self.push(keys[1].clone(), &mults);
        let scales = Data::F32(done.iter().map(|q| q.scale).collect());
        let corrections = Data::I32(done.iter().map(|q| q.correction).collect());
        let s = self.push_data(keys[2].clone(), &scales);
        let c = self.push_data(keys[3].clone(), &corrections);
        Ok([nibbles, m, s, c])
    }

    /// `i8_rows` of a weight the store holds as f16, bf16 or f32 (`WeightStore::visit_stored`):
    /// each row widened from the file's bytes and quantized straight into the blob, so the table
    /// is never held as f32 (1.3 GB for a 128k × 2560 head). The values, and so the bytes and
    /// scales, are those of the f32 path. `None` when the store does not hold it so.
    fn stored_i8_rows(
        &mut self,
        f: &Function,
        v: ValueId,
        k: usize,
    ) -> Result<Option<(BufRef, BufRef)>, BackendError> {
        let keys = [derived_key(f, v, HEAD_I8, 0), derived_key(f, v, HEAD_I8, 1)];
        if let (Some(q), Some(s)) = (self.placed(&keys[0]), self.placed(&keys[1])) {
            return Ok(Some((q, s)));
        }
        let k = k.max(1);
        let Some((q, scales)) = self.stored_rows(f, v, k, &keys[0], k, &matmul_i8::quantize_row)?
        else {
            return Ok(None);
        };
        let s = self.push_data(keys[1].clone(), &Data::F32(scales));
        Ok(Some((q, s)))
    }

    /// The rows of weight `v` (`[rows, k]`) that the store holds as f16, bf16 or f32
    /// (`WeightStore::visit_stored`), each widened from the file's bytes into an f32 row and handed
    /// to `quantize` with its `row_bytes` bytes of the blob under `key`; returns that buffer and
    /// what `quantize` returned per row, in row order. The rows are split into one consecutive
    /// range per core, each widened and quantized on its own thread (the results depend on the row
    /// alone, so not on the split). `None` when the store does not hold the weight so.
    fn stored_rows<R: Send>(
        &mut self,
        f: &Function,
        v: ValueId,
        k: usize,
        key: &str,
        row_bytes: usize,
        quantize: &(dyn Fn(&[f32], &mut [u8]) -> R + Sync),
    ) -> Result<Option<(BufRef, Vec<R>)>, BackendError> {
        let Some(name) = weight_name(f, v) else {
            return Ok(None);
        };
        let numel = static_shape(f, v)?
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d));
        let store = self.store;
        let mut placed = None;
        let mut failed = false;
        store.visit_stored(name, &mut |elem, bytes| {
            let Some(numel) = numel.filter(|n| n % k == 0) else {
                return;
            };
            if !matches!(elem, ElemType::F16 | ElemType::BF16 | ElemType::F32) {
                return;
            }
            let size = (elem.bits() / 8) as usize;
            if numel.checked_mul(size) != Some(bytes.len()) {
                return;
            }
            let rows = numel / k;
            let Some(total) = rows.checked_mul(row_bytes) else {
                return;
            };
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, rows.max(1));
            let per = rows.div_ceil(threads).max(1);
            let mut results = Vec::with_capacity(rows);
            let buf = self.push_with(key.to_string(), total, |dst| {
                std::thread::scope(|scope| {
                    let parts: Vec<_> = bytes
                        .chunks(per * k * size)
                        .zip(dst.chunks_mut(per * row_bytes))
                        .map(|(src, out)| {
                            scope.spawn(move || {
                                let mut row = vec![0f32; k];
                                let mut halves = Vec::with_capacity(k);
                                src.chunks(k * size)
                                    .zip(out.chunks_mut(row_bytes))
                                    .map(|(src, out)| {
                                        widen_row(elem, src, &mut halves, &mut row);
                                        quantize(&row, out)
                                    })
                                    .collect::<Vec<R>>()
                            })
                        })
                        .collect();
                    for part in parts {
                        match part.join() {
                            Ok(done) => results.extend(done),
                            Err(_) => failed = true,
                        }
                    }
                });
            });
            placed = Some((buf, results));
        });
        if failed {
            return Err(input(format!(
                "internal: quantizing the rows of {name} failed"
            )));
        }
        Ok(placed)
    }
}

/// Widens one row of a weight's stored bytes (`elem`: f16, bf16 or f32, little-endian) into
/// `row`; `halves` is scratch for the f16 conversion (`half`'s slice conversion, F16C where the CPU
/// has it: the same values as one at a time).
fn widen_row(elem: ElemType, src: &[u8], halves: &mut Vec<half::f16>, row: &mut [f32]) {
    match elem {
        ElemType::F16 => {
            use half::slice::HalfFloatSliceExt;
            halves.clear();
            halves.extend(
                src.chunks_exact(2)
                    .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]]))),
            );
            halves.convert_to_f32_slice(row);
        }
        ElemType::BF16 => {
            for (x, b) in row.iter_mut().zip(src.chunks_exact(2)) {
                *x = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
            }
        }
        _ => {
            for (x, b) in row.iter_mut().zip(src.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
}

/// The tag of a weight's exact pairs in `format`.
fn pairs_tag(format: HalfFormat) -> &'static str {
    match format {
        HalfFormat::Bf16 => BF16_PAIRS,
        HalfFormat::F16 => F16_PAIRS,
    }
}

/// The blob key of part `i` of constant `v`'s derived form `tag`: a weight by its name, another
/// constant by its value.
fn derived_key(f: &Function, v: ValueId, tag: &str, i: usize) -> String {
    format!("{tag}.{i}:{}", constant_id(f, v))
}
