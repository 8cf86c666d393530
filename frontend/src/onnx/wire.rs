//! Just enough of the protobuf wire format to split an ONNX file into its parts without copying
//! initializer data: the model and graph messages are decoded by prost from copies that leave the
//! initializers out, and each initializer is decoded from a copy without its data fields. What stays
//! behind is the byte range of every initializer's data in the file, read only when a weight is loaded.
//!
//! Field numbers (onnx.proto): `ModelProto.graph = 7`; `GraphProto.initializer = 5`,
//! `sparse_initializer = 15`; `TensorProto` data fields `float_data = 4`, `int32_data = 5`,
//! `string_data = 6`, `int64_data = 7`, `raw_data = 9`, `double_data = 10`, `uint64_data = 11`.

use super::proto::{GraphProto, ModelProto, TensorProto};
use prost::Message;
use std::ops::Range;

/// The protobuf wire types this reader understands (groups, 3 and 4, are rejected).
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// `ModelProto.graph`.
const MODEL_GRAPH: u32 = 7;
/// `GraphProto.initializer`.
const GRAPH_INITIALIZER: u32 = 5;
/// `GraphProto.sparse_initializer`.
const GRAPH_SPARSE_INITIALIZER: u32 = 15;
/// `TensorProto.raw_data`.
pub(crate) const RAW_DATA: u32 = 9;
/// The `TensorProto` fields that hold elements.
const DATA_FIELDS: [u32; 7] = [4, 5, 6, 7, 9, 10, 11];

/// One field of a message: its number, wire type, and where its bytes are.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    /// The field number.
    pub number: u32,
    /// The wire type.
    pub wire: u8,
    /// From the tag to the end of the value (what to copy to keep the field).
    pub whole: Range<usize>,
    /// The value: the payload of a length-delimited field, else the encoded scalar.
    pub payload: Range<usize>,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or("the file ends inside a protobuf varint (truncated?)")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a protobuf varint is longer than 10 bytes (corrupt file?)".into())
}

/// The fields of the message in `buf[range]`, in file order; ranges are absolute offsets into `buf`.
pub(crate) fn fields(buf: &[u8], range: Range<usize>) -> Result<Vec<Field>, String> {
    let end = range.end;
    if end > buf.len() || range.start > end {
        return Err("a protobuf message lies outside the file (truncated?)".into());
    }
    let mut pos = range.start;
    let mut out = Vec::new();
    while pos < end {
        let start = pos;
        let tag = varint(&buf[..end], &mut pos)?;
        let number = u32::try_from(tag >> 3).map_err(|_| "a protobuf field number is too large")?;
        let wire = (tag & 7) as u8;
        if number == 0 {
            return Err(format!(
                "byte {start}: protobuf field number 0 (not a protobuf message?)"
            ));
        }
        let payload = match wire {
            VARINT => {
                let s = pos;
                varint(&buf[..end], &mut pos)?;
                s..pos
            }
            FIXED64 => pos..pos + 8,
            FIXED32 => pos..pos + 4,
            LEN => {
                let len = varint(&buf[..end], &mut pos)?;
                let len = usize::try_from(len).map_err(|_| "a protobuf length is too large")?;
                let stop = pos.checked_add(len).ok_or("a protobuf length overflows")?;
                pos..stop
            }
            w => {
                return Err(format!(
                    "byte {start}: protobuf wire type {w} of field {number} is not supported \
                     (corrupt file, or not an ONNX model?)"
                ));
            }
        };
        if payload.end > end {
            return Err(format!(
                "byte {start}: field {number} runs past the end of its message ({} > {end}); \
                 the file is truncated or corrupt",
                payload.end
            ));
        }
        pos = payload.end;
        out.push(Field {
            number,
            wire,
            whole: start..pos,
            payload,
        });
    }
    Ok(out)
}

/// Where one initializer lives in the file.
#[derive(Clone, Debug)]
pub(crate) struct RawInitializer {
    /// The tensor's metadata (name, dims, type, external data), decoded without its data fields.
    pub meta: TensorProto,
    /// The whole `TensorProto` message (to decode typed data fields lazily).
    pub message: Range<usize>,
    /// The `raw_data` payload, if the tensor has one.
    pub raw: Option<Range<usize>>,
    /// The number of elements in the typed data fields (`float_data` …), counted without decoding.
    pub typed_len: usize,
}

/// A model split into its small parts (decoded) and its initializers (located).
pub(crate) struct SplitModel {
    /// The model with every initializer left out of its graph.
    pub model: ModelProto,
    /// The initializers, in file order.
    pub initializers: Vec<RawInitializer>,
    /// The names of sparse initializers (not supported; reported by the importer).
    pub sparse: usize,
}

fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, String> {
    M::decode(bytes)
        .map_err(|e| format!("cannot decode the {what}: {e} (truncated or corrupt file?)"))
}

/// Splits the bytes of an ONNX file.
pub(crate) fn split_model(buf: &[u8]) -> Result<SplitModel, String> {
    let mut model_rest = Vec::new();
    let mut graph_rest = Vec::new();
    let mut initializers = Vec::new();
    let mut sparse = 0;
    let mut has_graph = false;
    for f in fields(buf, 0..buf.len())? {
        if f.number != MODEL_GRAPH || f.wire != LEN {
            model_rest.extend_from_slice(&buf[f.whole.clone()]);
            continue;
        }
        has_graph = true;
        for g in fields(buf, f.payload.clone())? {
            match (g.number, g.wire) {
                (GRAPH_INITIALIZER, LEN) => initializers.push(locate_tensor(buf, g.payload)?),
                (GRAPH_SPARSE_INITIALIZER, LEN) => sparse += 1,
                _ => graph_rest.extend_from_slice(&buf[g.whole.clone()]),
            }
        }
    }
    if !has_graph {
        return Err("the file has no graph (is it an ONNX model?)".into());
    }
    let mut model: ModelProto = decode(&model_rest, "ModelProto")?;
    model.graph = Some(decode::<GraphProto>(&graph_rest, "GraphProto")?);
    Ok(SplitModel {
        model,
        initializers,
        sparse,
    })
}

/// Locates the data of the `TensorProto` in `buf[message]` and decodes everything else.
pub(crate) fn locate_tensor(buf: &[u8], message: Range<usize>) -> Result<RawInitializer, String> {
    let mut meta_bytes = Vec::new();
    let mut raw = None;
    let mut typed_len = 0usize;
    for f in fields(buf, message.clone())? {
        if !DATA_FIELDS.contains(&f.number) {
            meta_bytes.extend_from_slice(&buf[f.whole.clone()]);
        } else if f.number == RAW_DATA {
            raw = Some(f.payload.clone());
        } else {
            typed_len = typed_len.saturating_add(count_elements(buf, &f));
        }
    }
    Ok(RawInitializer {
        meta: decode(&meta_bytes, "TensorProto")?,
        message,
        raw,
        typed_len,
    })
}

/// How many elements one occurrence of a repeated numeric field holds (packed or not).
fn count_elements(buf: &[u8], f: &Field) -> usize {
    match (f.wire, f.number) {
        (LEN, 4) => f.payload.len() / 4,
        (LEN, 10) => f.payload.len() / 8,
        // Packed varints: one element per byte without the continuation bit.
        (LEN, _) => buf[f.payload.clone()]
            .iter()
            .filter(|&&b| b & 0x80 == 0)
            .count(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_reports_truncation() {
        // Field 1, length-delimited, claims 5 bytes but has 2.
        let buf = [0x0a, 0x05, 1, 2];
        let e = fields(&buf, 0..buf.len()).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn counts_packed_varints() {
        // Field 5 (int32_data), packed: 1, 300 (2 bytes), -1 (10 bytes).
        let mut payload = vec![0x01, 0xac, 0x02];
        payload.extend([0xff; 9]);
        payload.push(0x01);
        let mut buf = vec![0x2a, payload.len() as u8];
        buf.extend(&payload);
        let f = &fields(&buf, 0..buf.len()).unwrap()[0];
        assert_eq!(count_elements(&buf, f), 3);
    }
}
