//! `.npy` files (numpy's format, versions 1–3): read into and write from `Tensor`s.
//!
//! Supported dtypes: `<f4 <f8 <f2 |i1 <i2 <i4 <i8 |u1 <u2 <u4 <u8 |b1` (little-endian, C order).
//! The header is parsed and the element count is checked against the file size before any tensor
//! memory is allocated.

use crate::error::FrontendError;
use bitnet_ir::tensor::checked_numel;
use bitnet_ir::{Data, ElemType, Tensor};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
/// The numpy dtypes this module reads and writes, with their element types.
const DESCRS: [(&str, ElemType); 12] = [
    ("<f4", ElemType::F32),
    ("<f8", ElemType::F64),
    ("<f2", ElemType::F16),
    ("|i1", ElemType::I8),
    ("<i2", ElemType::I16),
    ("<i4", ElemType::I32),
    ("<i8", ElemType::I64),
    ("|u1", ElemType::U8),
    ("<u2", ElemType::U16),
    ("<u4", ElemType::U32),
    ("<u8", ElemType::U64),
    ("|b1", ElemType::Bool),
];
/// Headers longer than this are rejected (numpy writes a few hundred bytes).
const MAX_HEADER: usize = 1 << 20;

/// Reads a `.npy` file.
pub fn read(path: &Path) -> Result<Tensor, FrontendError> {
    let bytes = std::fs::read(path).map_err(|source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes).map_err(|m| FrontendError::format(path, m))
}

/// Decodes the bytes of a `.npy` file.
pub fn decode(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic; expected \\x93NUMPY)".into());
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated header length")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    if hlen > MAX_HEADER {
        return Err(format!("header length {hlen} is implausibly large"));
    }
    let header = bytes.get(start..start + hlen).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    if fortran.trim() != "False" {
        return Err("Fortran-order arrays are not supported (save with C order)".into());
    }
    let shape_text = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let shape = parse_shape(shape_text)?;
    let elem = DESCRS
        .iter()
        .find(|(d, _)| {
            // `=` is native order (little-endian here); one-byte types may be written with `<` or `=`.
            let rest = descr.get(1..).unwrap_or("");
            *d == descr
                || (descr.starts_with('=')
                    && d.get(1..) == Some(rest)
                    && (d.starts_with('<') || d.starts_with('|')))
                || (descr.starts_with('<') && d.starts_with('|') && d.get(1..) == Some(rest))
        })
        .map(|&(_, e)| e)
        .ok_or_else(|| {
            let known: Vec<&str> = DESCRS.iter().map(|(d, _)| *d).collect();
            format!(
                "unsupported dtype '{descr}' (supported: {})",
                known.join(" ")
            )
        })?;
    let size = (elem.bits() / 8) as usize;
    let n = checked_numel(&shape).ok_or("the shape's element count overflows")?;
    let body = &bytes[start + hlen..];
    let need = n.checked_mul(size).ok_or("the data size overflows")?;
    if body.len() != need {
        return Err(format!(
            "shape {shape:?} of '{descr}' needs {need} data bytes, the file has {}",
            body.len()
        ));
    }
    let data =
        Data::from_le_bytes(elem, body).ok_or("the data is not a whole number of elements")?;
    Tensor::new(shape, data).ok_or_else(|| "internal: shape mismatch".to_string())
}

/// The text after `'key':` up to the next top-level comma or closing brace.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
        if depth == 0 && c == ')' {
            return Some(rest[..=i].trim());
        }
    }
    None
}

fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or("bad 'shape'")?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension '{s}' in 'shape'"))
        })
        .collect()
}

/// Encodes a tensor as `.npy` version 1.0 bytes (ternary is written as `|i1`, bf16 as `<f4`).
pub fn encode(t: &Tensor) -> Vec<u8> {
    // bf16 has no numpy dtype: it is written widened to f32; ternary is written as its i8 values.
    let (descr, body) = match &t.data {
        Data::BF16(_) => ("<f4", Data::F32(t.data.to_f32()).to_le_bytes()),
        Data::Ternary(_) => ("|i1", t.data.to_le_bytes()),
        other => {
            let descr = DESCRS
                .iter()
                .find(|(_, e)| *e == other.elem())
                .map_or("|u1", |(d, _)| *d);
            (descr, other.to_le_bytes())
        }
    };
    let shape = match t.shape.len() {
        1 => format!("({},)", t.shape[0]),
        _ => format!(
            "({})",
            t.shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&body);
    out
}

/// Writes a tensor to a `.npy` file.
pub fn write(path: &Path, t: &Tensor) -> Result<(), FrontendError> {
    std::fs::write(path, encode(t)).map_err(|source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn round_trip_every_dtype() {
        let cases = vec![
            Tensor::new(
                vec![2, 3],
                Data::F32(vec![1.0, -2.5, 3.0, 0.0, f32::MAX, -0.0]),
            )
            .unwrap(),
            Tensor::new(vec![3], Data::I8(vec![-128, 0, 127])).unwrap(),
            Tensor::new(vec![], Data::I64(vec![42])).unwrap(),
            Tensor::new(vec![2, 0], Data::I32(vec![])).unwrap(),
            Tensor::new(vec![2], Data::Bool(vec![true, false])).unwrap(),
            Tensor::new(vec![1], Data::U8(vec![255])).unwrap(),
            Tensor::new(
                vec![2],
                Data::F16(vec![f16::from_f32(0.5), f16::from_f32(-3.0)]),
            )
            .unwrap(),
        ];
        for t in cases {
            assert_eq!(decode(&encode(&t)).unwrap(), t);
        }
    }

    #[test]
    fn rejects_bad_files_with_reasons() {
        assert!(decode(b"hello world").unwrap_err().contains("bad magic"));
        let mut b = encode(&Tensor::from_f32(vec![4], vec![1.0; 4]).unwrap());
        b.truncate(b.len() - 1);
        assert!(decode(&b).unwrap_err().contains("needs 16 data bytes"));
        let huge = encode(&Tensor::from_f32(vec![1], vec![1.0]).unwrap());
        let text = String::from_utf8_lossy(&huge).replace("(1,)", "(99999999999999999999,)");
        assert!(decode(text.as_bytes()).is_err());
    }
}
