//! The GGUF header parser: magic, version, metadata, tensor infos and the data section's start.
//!
//! Every count and length read from the file is checked against the bytes left before anything is
//! allocated, all offset arithmetic is checked, and every tensor's bytes are located inside the file
//! (aligned, not overlapping another tensor) before `GgufFile::open` returns. Messages name the key or
//! tensor and, where it helps, the byte offset; the caller adds the file name.

use super::GgufTensorInfo;
use super::ggml_type::GgmlType;
use super::value::{GgufArray, GgufValue, GgufValueType};
use std::collections::BTreeMap;

/// "GGUF" read as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
/// The alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Arrays nested deeper than this are rejected (real files nest none); it bounds recursion.
const MAX_ARRAY_DEPTH: usize = 8;
/// The fewest bytes a metadata entry takes: key length, type, and a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// The fewest bytes a tensor info takes: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;
/// Architectures written by the BitNet fork or upstream's BitNet converter (formats.md §4.6).
pub const BITNET_ARCHITECTURES: [&str; 3] = ["bitnet-b1.58", "bitnet-25", "bitnet"];
/// LLAMA_FTYPE_MOSTLY_I2_S in the BitNet fork.
pub const FILE_TYPE_I2_S: u64 = 40;

/// What the header says.
pub struct Header {
    pub version: u32,
    pub alignment: u64,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    pub data_start: usize,
}

/// A read position in the file's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes; `what` names the field for the truncation message.
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8], String> {
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.pos..end))
            .ok_or_else(|| {
                format!(
                    "truncated: {} needs {n} bytes at byte {}, but the file ends at byte {}",
                    what(),
                    self.pos,
                    self.bytes.len()
                )
            })?;
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], String> {
        let s = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A u64 count of items of at least `min_size` bytes each, checked against the bytes left.
    fn count(&mut self, min_size: usize, what: &dyn Fn() -> String) -> Result<usize, String> {
        let at = self.pos;
        let n = self.u64(what)?;
        let need = n.checked_mul(min_size as u64);
        match need {
            Some(need) if need <= self.remaining() as u64 => Ok(n as usize),
            _ => Err(format!(
                "{} = {n} at byte {at} needs at least {n}×{min_size} bytes, but only {} bytes \
                 are left in the file",
                what(),
                self.remaining()
            )),
        }
    }

    /// A GGUF string: u64 length, then that many UTF-8 bytes.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, String> {
        let at = self.pos;
        let len = self.u64(&|| format!("the length of {}", what()))?;
        if len > self.remaining() as u64 {
            return Err(format!(
                "{}: string length {len} at byte {at} exceeds the {} bytes left in the file",
                what(),
                self.remaining()
            ));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| format!("{}: the string at byte {at} is not UTF-8 ({e})", what()))
    }
}

/// Parses everything before the data section and locates every tensor inside `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Header, String> {
    let mut cur = Cursor { bytes, pos: 0 };
    let magic = cur.u32(&|| "the magic".into())?;
    if magic != MAGIC {
        let b = magic.to_le_bytes();
        return Err(format!(
            "not a GGUF file: the first bytes are {:02x} {:02x} {:02x} {:02x} ({:?}), expected \
             the magic \"GGUF\"",
            b[0],
            b[1],
            b[2],
            b[3],
            String::from_utf8_lossy(&b)
        ));
    }
    let version = cur.u32(&|| "the version".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(
                "GGUF version 1 (u32 counts and lengths, 2023) is not supported; convert the model \
                 again with a current llama.cpp or gguf-py"
                    .into(),
            );
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(format!(
                "GGUF version {v} looks like version {} written big-endian; only little-endian \
                 files are supported",
                v.swap_bytes()
            ));
        }
        v => return Err(format!("unsupported GGUF version {v} (supported: 2 and 3)")),
    }
    let n_tensors = cur.u64(&|| "the tensor count".into())?;
    let n_kv = cur.u64(&|| "the metadata entry count".into())?;
    let need = n_kv
        .checked_mul(MIN_KV_BYTES)
        .and_then(|a| n_tensors.checked_mul(MIN_TENSOR_INFO_BYTES).map(|b| (a, b)))
        .and_then(|(a, b)| a.checked_add(b));
    if need.is_none_or(|need| need > cur.remaining() as u64) {
        return Err(format!(
            "the header declares {n_tensors} tensors and {n_kv} metadata entries, which need more \
             than the {} bytes left after byte {}",
            cur.remaining(),
            cur.pos
        ));
    }

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let at = cur.pos;
        let key = cur.string(&|| format!("the key of metadata entry {i}"))?;
        let type_at = cur.pos;
        let type_id = cur.u32(&|| format!("the value type of key '{key}'"))?;
        let ty = GgufValueType::from_id(type_id).ok_or_else(|| {
            format!("key '{key}': unknown value type {type_id} at byte {type_at}")
        })?;
        let value = read_value(&mut cur, ty, &key, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(format!(
                "key '{key}' appears twice (the second at byte {at})"
            ));
        }
    }

    let alignment = alignment(&metadata)?;
    let bitnet = is_bitnet(&metadata);

    let mut infos = Vec::with_capacity(n_tensors as usize);
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n_tensors {
        let name = cur.string(&|| format!("the name of tensor info {i}"))?;
        if let Some(first) = names.insert(name.clone(), i as usize) {
            return Err(format!(
                "tensor '{name}' appears twice (tensor infos {first} and {i})"
            ));
        }
        let n_dims_at = cur.pos;
        let n_dims = cur.u32(&|| format!("n_dims of tensor '{name}'"))?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor '{name}': n_dims = {n_dims} at byte {n_dims_at}; at most {MAX_DIMS} are allowed"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for j in 0..n_dims {
            let at = cur.pos;
            let d = cur.u64(&|| format!("dimension {j} of tensor '{name}'"))?;
            if d > i64::MAX as u64 {
                return Err(format!(
                    "tensor '{name}': dimension {j} = {d} at byte {at} exceeds i64::MAX"
                ));
            }
            dims.push(d);
        }
        let type_at = cur.pos;
        let type_id = cur.u32(&|| format!("the ggml type of tensor '{name}'"))?;
        let ggml_type = GgmlType::from_id(type_id, bitnet)
            .map_err(|e| format!("tensor '{name}' (type at byte {type_at}): {e}"))?;
        let offset_at = cur.pos;
        let offset = cur.u64(&|| format!("the data offset of tensor '{name}'"))?;
        infos.push((name, dims, ggml_type, offset, offset_at));
    }

    let data_start = align_up(cur.pos as u64, alignment)
        .ok_or_else(|| "the data section's start overflows u64".to_string())?;
    let len = bytes.len() as u64;
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, dims, ggml_type, offset, offset_at) in infos {
        let size = ggml_type
            .tensor_bytes(&dims)
            .map_err(|e| format!("tensor '{name}' ({}): {e}", ggml_type.name()))?;
        if !offset.is_multiple_of(alignment) {
            return Err(format!(
                "tensor '{name}': data offset {offset} (at byte {offset_at}) is not a multiple of \
                 the alignment {alignment}"
            ));
        }
        let start = data_start.checked_add(offset);
        let end = start.and_then(|s| s.checked_add(size));
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if e <= len => (s, e),
            _ => {
                return Err(format!(
                    "tensor '{name}': its {size} bytes at data offset {offset} (file byte \
                     {data_start} + {offset}) lie beyond the end of the file ({len} bytes)"
                ));
            }
        };
        let numel = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
            .ok_or_else(|| format!("tensor '{name}': dims {dims:?} overflow usize"))?;
        tensors.push(GgufTensorInfo {
            name,
            dims: dims.iter().map(|&d| d as usize).collect(),
            ggml_type,
            offset: offset as usize,
            start: start as usize,
            n_bytes: (end - start) as usize,
            numel,
        });
    }
    check_overlaps(&tensors)?;
    Ok(Header {
        version,
        alignment,
        metadata,
        tensors,
        data_start: data_start as usize,
    })
}

/// One value of type `ty` for `key`; arrays recurse up to `MAX_ARRAY_DEPTH`.
fn read_value(
    cur: &mut Cursor,
    ty: GgufValueType,
    key: &str,
    depth: usize,
) -> Result<GgufValue, String> {
    let what = || format!("the value of key '{key}'");
    Ok(match ty {
        GgufValueType::U8 => GgufValue::U8(u8::from_le_bytes(cur.array(&what)?)),
        GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(cur.array(&what)?)),
        GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(cur.array(&what)?)),
        GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(cur.array(&what)?)),
        GgufValueType::U32 => GgufValue::U32(u32::from_le_bytes(cur.array(&what)?)),
        GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(cur.array(&what)?)),
        GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(cur.array(&what)?)),
        GgufValueType::U64 => GgufValue::U64(u64::from_le_bytes(cur.array(&what)?)),
        GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(cur.array(&what)?)),
        GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(cur.array(&what)?)),
        GgufValueType::Bool => {
            let at = cur.pos;
            let [b] = cur.array(&what)?;
            GgufValue::Bool(bool_byte(b).ok_or_else(|| {
                format!("key '{key}': bool value {b} at byte {at} is neither 0 nor 1")
            })?)
        }
        GgufValueType::String => GgufValue::String(cur.string(&what)?),
        GgufValueType::Array => GgufValue::Array(read_array(cur, key, depth)?),
    })
}

fn bool_byte(b: u8) -> Option<bool> {
    match b {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// An array: element type, count, elements.
fn read_array(cur: &mut Cursor, key: &str, depth: usize) -> Result<GgufArray, String> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(format!(
            "key '{key}': arrays nested more than {MAX_ARRAY_DEPTH} deep at byte {}",
            cur.pos
        ));
    }
    let type_at = cur.pos;
    let type_id = cur.u32(&|| format!("the element type of array key '{key}'"))?;
    let elem = GgufValueType::from_id(type_id).ok_or_else(|| {
        format!("key '{key}': unknown array element type {type_id} at byte {type_at}")
    })?;
    let n = cur.count(elem.min_size(), &|| {
        format!("the element count of array key '{key}'")
    })?;
    let what = || format!("the elements of array key '{key}'");
    /// Decodes `n` fixed-size little-endian elements (the size was checked against the file).
    fn fixed<const N: usize, T>(
        cur: &mut Cursor,
        n: usize,
        what: &dyn Fn() -> String,
        f: fn([u8; N]) -> T,
    ) -> Result<Vec<T>, String> {
        let bytes = cur.take(n * N, what)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect())
    }
    Ok(match elem {
        GgufValueType::U8 => GgufArray::U8(fixed(cur, n, &what, u8::from_le_bytes)?),
        GgufValueType::I8 => GgufArray::I8(fixed(cur, n, &what, i8::from_le_bytes)?),
        GgufValueType::U16 => GgufArray::U16(fixed(cur, n, &what, u16::from_le_bytes)?),
        GgufValueType::I16 => GgufArray::I16(fixed(cur, n, &what, i16::from_le_bytes)?),
        GgufValueType::U32 => GgufArray::U32(fixed(cur, n, &what, u32::from_le_bytes)?),
        GgufValueType::I32 => GgufArray::I32(fixed(cur, n, &what, i32::from_le_bytes)?),
        GgufValueType::F32 => GgufArray::F32(fixed(cur, n, &what, f32::from_le_bytes)?),
        GgufValueType::U64 => GgufArray::U64(fixed(cur, n, &what, u64::from_le_bytes)?),
        GgufValueType::I64 => GgufArray::I64(fixed(cur, n, &what, i64::from_le_bytes)?),
        GgufValueType::F64 => GgufArray::F64(fixed(cur, n, &what, f64::from_le_bytes)?),
        GgufValueType::Bool => {
            let at = cur.pos;
            let bytes = cur.take(n, &what)?;
            let mut out = Vec::with_capacity(n);
            for (i, &b) in bytes.iter().enumerate() {
                out.push(bool_byte(b).ok_or_else(|| {
                    format!(
                        "key '{key}': bool element {i} = {b} at byte {} is neither 0 nor 1",
                        at + i
                    )
                })?);
            }
            GgufArray::Bool(out)
        }
        GgufValueType::String => {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(cur.string(&|| format!("string element {i} of key '{key}'"))?);
            }
            GgufArray::String(out)
        }
        GgufValueType::Array => {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(read_array(cur, key, depth + 1)?);
            }
            GgufArray::Array(out)
        }
    })
}

/// `general.alignment`: an integer power of two; 32 when absent.
fn alignment(metadata: &BTreeMap<String, GgufValue>) -> Result<u64, String> {
    let Some(v) = metadata.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match v.as_u64() {
        Some(a) if a.is_power_of_two() => Ok(a),
        Some(a) => Err(format!(
            "key 'general.alignment': {a} is not a power of two"
        )),
        None => Err(format!(
            "key 'general.alignment': expected an unsigned integer (u32), found {}",
            v.type_name()
        )),
    }
}

/// Whether ids 36..39 mean the BitNet fork's types (formats.md §4.2).
fn is_bitnet(metadata: &BTreeMap<String, GgufValue>) -> bool {
    let arch = matches!(metadata.get("general.architecture"),
        Some(GgufValue::String(a)) if BITNET_ARCHITECTURES.contains(&a.as_str()));
    let ftype = metadata
        .get("general.file_type")
        .and_then(GgufValue::as_u64)
        == Some(FILE_TYPE_I2_S);
    arch || ftype
}

fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    let rem = pos % alignment;
    if rem == 0 {
        Some(pos)
    } else {
        pos.checked_add(alignment - rem)
    }
}

/// Rejects tensors whose byte ranges overlap.
fn check_overlaps(tensors: &[GgufTensorInfo]) -> Result<(), String> {
    let mut by_start: Vec<&GgufTensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    by_start.sort_by_key(|t| t.start);
    for pair in by_start.windows(2) {
        if let [a, b] = pair
            && a.start + a.n_bytes > b.start
        {
            return Err(format!(
                "tensors '{}' (data offset {}, {} bytes) and '{}' (data offset {}) overlap",
                a.name, a.offset, a.n_bytes, b.name, b.offset
            ));
        }
    }
    Ok(())
}
