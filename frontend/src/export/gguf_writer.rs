//! A GGUF v3 writer (formats.md §4.1): metadata key/values, tensor infos, then the data section with
//! every tensor aligned to 32 bytes (`general.alignment`'s default, so the key is not written). The
//! file is built in memory and handed to the caller, who writes it whole (`bitnetc export`).

use crate::gguf::{GgmlType, GgufArray, GgufValue};

/// The alignment of the tensor infos' end and of every tensor's data.
const ALIGNMENT: usize = 32;

/// One tensor to write.
pub struct GgufTensor {
    /// The name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` = ne0, the contiguous axis (PyTorch's last).
    pub dims: Vec<u64>,
    /// The element type.
    pub ggml_type: GgmlType,
    /// The encoded bytes.
    pub data: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_array_body(out: &mut Vec<u8>, a: &GgufArray) {
    out.extend_from_slice(&type_id(a.elem_type()).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        GgufArray::U8(v) => out.extend_from_slice(v),
        GgufArray::I8(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::Bool(v) => v.iter().for_each(|&x| out.push(u8::from(x))),
        GgufArray::String(v) => v.iter().for_each(|x| put_str(out, x)),
        GgufArray::Array(v) => v.iter().for_each(|x| put_array_body(out, x)),
        GgufArray::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

fn type_id(t: crate::gguf::GgufValueType) -> u32 {
    use crate::gguf::GgufValueType as T;
    match t {
        T::U8 => 0,
        T::I8 => 1,
        T::U16 => 2,
        T::I16 => 3,
        T::U32 => 4,
        T::I32 => 5,
        T::F32 => 6,
        T::Bool => 7,
        T::String => 8,
        T::Array => 9,
        T::U64 => 10,
        T::I64 => 11,
        T::F64 => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    out.extend_from_slice(&type_id(v.value_type()).to_le_bytes());
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(a) => put_array_body(out, a),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(ALIGNMENT) {
        out.push(0);
    }
}

/// The bytes of a GGUF v3 file holding `metadata` (in the order given) and `tensors`. Each tensor's
/// byte size must be what its type and dims take (`GgmlType::block_layout`; I2_S: codes plus the
/// 32-byte trailer); the error names the tensor.
pub fn gguf_bytes(
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensor],
) -> Result<Vec<u8>, String> {
    for t in tensors {
        let n: u64 = t.dims.iter().product();
        let want = match t.ggml_type {
            GgmlType::I2_S => n / 4 + crate::gguf::blocks::I2_S_TRAILER as u64,
            ty => {
                let (block, size) = ty.block_layout();
                let block = block.max(1);
                if t.dims.first().is_none_or(|ne0| ne0 % block != 0) {
                    return Err(format!(
                        "tensor \"{}\": ne0 of dims {:?} is not a multiple of {}'s block of {block}",
                        t.name,
                        t.dims,
                        ty.name()
                    ));
                }
                n / block * size
            }
        };
        if t.data.len() as u64 != want {
            return Err(format!(
                "tensor \"{}\": {} bytes, but {} {:?} takes {want}",
                t.name,
                t.data.len(),
                t.ggml_type.name(),
                t.dims
            ));
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        put_value(&mut out, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += (t.data.len() as u64).next_multiple_of(ALIGNMENT as u64);
    }
    pad(&mut out);
    for t in tensors {
        out.extend_from_slice(&t.data);
        pad(&mut out);
    }
    Ok(out)
}
