//! `TensorProto` → `Tensor`: element types, shapes, and the data in `raw_data` (little-endian bytes)
//! or in the typed fields (`float_data`, `int32_data`, `int64_data`, `double_data`, `uint64_data`).
//!
//! Sizes are checked before anything is allocated: the raw bytes must be exactly
//! `numel × element size`, the typed fields must hold exactly `numel` elements.

use super::proto::TensorProto;
use super::proto::tensor_proto::DataType;
use bitnet_ir::tensor::checked_numel;
use bitnet_ir::{Data, ElemType, Tensor};

/// The IR element type of an ONNX `TensorProto.DataType` code.
pub(crate) fn elem_type(code: i32) -> Result<ElemType, String> {
    let dt = DataType::try_from(code).map_err(|_| format!("unknown ONNX data type {code}"))?;
    Ok(match dt {
        DataType::Float => ElemType::F32,
        DataType::Double => ElemType::F64,
        DataType::Float16 => ElemType::F16,
        DataType::Bfloat16 => ElemType::BF16,
        DataType::Int8 => ElemType::I8,
        DataType::Int16 => ElemType::I16,
        DataType::Int32 => ElemType::I32,
        DataType::Int64 => ElemType::I64,
        DataType::Uint8 => ElemType::U8,
        DataType::Uint16 => ElemType::U16,
        DataType::Uint32 => ElemType::U32,
        DataType::Uint64 => ElemType::U64,
        DataType::Bool => ElemType::Bool,
        other => {
            return Err(format!(
                "ONNX data type {} is not supported (the IR has f32 f64 f16 bf16 i8 i16 i32 i64 u8 \
                 u16 u32 u64 bool)",
                other.as_str_name()
            ));
        }
    })
}

/// The ONNX name of a data type code, for messages.
pub(crate) fn type_name(code: i32) -> String {
    DataType::try_from(code).map_or_else(|_| format!("type {code}"), |d| d.as_str_name().into())
}

/// The bytes one element takes in `raw_data` (bool: one byte).
pub(crate) fn elem_bytes(elem: ElemType) -> usize {
    match elem {
        ElemType::Bool | ElemType::Ternary => 1,
        e => (e.bits() / 8) as usize,
    }
}

/// The shape of `dims`, rejecting negative sizes and element counts that overflow.
pub(crate) fn shape_of(dims: &[i64]) -> Result<Vec<usize>, String> {
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d} in {dims:?}")))
        .collect::<Result<Vec<usize>, String>>()?;
    checked_numel(&shape).ok_or_else(|| format!("dims {dims:?} overflow"))?;
    Ok(shape)
}

/// The element type, shape and expected `raw_data` size of a tensor's metadata.
pub(crate) fn layout(t: &TensorProto) -> Result<(ElemType, Vec<usize>, usize), String> {
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let elem = elem_type(t.data_type.unwrap_or(0))?;
    let shape = shape_of(&t.dims)?;
    let bytes = checked_numel(&shape)
        .and_then(|n| n.checked_mul(elem_bytes(elem)))
        .ok_or_else(|| format!("dims {:?} are too large", t.dims))?;
    Ok((elem, shape, bytes))
}

/// Decodes a tensor whose elements are `raw` (the `raw_data` bytes, or an external file's slice), or,
/// when `raw` is `None`, its typed fields.
pub(crate) fn decode(t: &TensorProto, raw: Option<&[u8]>) -> Result<Tensor, String> {
    let (elem, shape, bytes) = layout(t)?;
    let numel = checked_numel(&shape).unwrap_or(0);
    let type_name = type_name(t.data_type.unwrap_or(0));
    let data = match raw {
        Some(raw) => {
            if raw.len() != bytes {
                return Err(format!(
                    "raw_data has {} bytes but {type_name} {:?} needs {bytes}",
                    raw.len(),
                    t.dims
                ));
            }
            Data::from_le_bytes(elem, raw).ok_or("raw_data is not a whole number of elements")?
        }
        None => typed(t, elem, numel, &type_name)?,
    };
    Tensor::new(shape, data).ok_or_else(|| "the data does not match the dims".into())
}

/// The field that holds the elements of `elem` when `raw_data` is absent.
pub(crate) fn typed_field(elem: ElemType) -> &'static str {
    match elem {
        ElemType::F32 => "float_data",
        ElemType::F64 => "double_data",
        ElemType::I64 => "int64_data",
        ElemType::U32 | ElemType::U64 => "uint64_data",
        _ => "int32_data",
    }
}

fn typed(t: &TensorProto, elem: ElemType, numel: usize, type_name: &str) -> Result<Data, String> {
    let have = match elem {
        ElemType::F32 => t.float_data.len(),
        ElemType::F64 => t.double_data.len(),
        ElemType::I64 => t.int64_data.len(),
        ElemType::U32 | ElemType::U64 => t.uint64_data.len(),
        _ => t.int32_data.len(),
    };
    if have != numel {
        return Err(format!(
            "{} has {have} elements but {type_name} {:?} needs {numel}",
            typed_field(elem),
            t.dims
        ));
    }
    let ints = || {
        t.int32_data
            .iter()
            .map(|&v| i64::from(v))
            .collect::<Vec<i64>>()
    };
    Ok(match elem {
        ElemType::F32 => Data::F32(t.float_data.clone()),
        ElemType::F64 => Data::F64(t.double_data.clone()),
        ElemType::I64 => Data::I64(t.int64_data.clone()),
        ElemType::U64 => Data::U64(t.uint64_data.clone()),
        // Values of a u32 tensor are stored widened in uint64_data.
        ElemType::U32 => Data::U32(t.uint64_data.iter().map(|&v| v as u32).collect()),
        // f16 and bf16 keep their bit patterns in the low 16 bits of int32_data.
        ElemType::F16 | ElemType::BF16 => {
            let bytes: Vec<u8> = t
                .int32_data
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect();
            Data::from_le_bytes(elem, &bytes).ok_or("bad 16-bit float data")?
        }
        ElemType::Bool => Data::Bool(t.int32_data.iter().map(|&v| v != 0).collect()),
        ElemType::I8
        | ElemType::I16
        | ElemType::I32
        | ElemType::U8
        | ElemType::U16
        | ElemType::Ternary => Data::from_i64(elem, ints()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(code: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(code as i32),
            ..Default::default()
        }
    }

    #[test]
    fn raw_size_mismatch_is_an_error() {
        let t = proto(DataType::Float, &[2, 3]);
        let e = decode(&t, Some(&[0u8; 20])).unwrap_err();
        assert!(
            e.contains("raw_data has 20 bytes but FLOAT [2, 3] needs 24"),
            "{e}"
        );
    }

    #[test]
    fn typed_f16_bits_and_u32() {
        let mut t = proto(DataType::Float16, &[2]);
        t.int32_data = vec![0x3c00, 0xc000]; // 1.0, -2.0
        assert_eq!(decode(&t, None).unwrap().data.to_f32(), vec![1.0, -2.0]);
        let mut t = proto(DataType::Uint32, &[1]);
        t.uint64_data = vec![4_000_000_000];
        assert_eq!(
            decode(&t, None).unwrap().data,
            Data::U32(vec![4_000_000_000])
        );
    }

    #[test]
    fn unsupported_types_are_named() {
        let e = elem_type(DataType::String as i32).unwrap_err();
        assert!(e.contains("STRING"), "{e}");
    }
}
