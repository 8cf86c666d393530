//! `Data`'s conversions that the backends place weights with: `to_f32`/`into_f32` give what a
//! widening through f64 gives (the definition before they converted directly), and
//! `write_le_bytes` gives each element's own little-endian bytes, which `from_le_bytes` reads back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_ir::Data;
use half::{bf16, f16};

/// One tensor of every element type, with values at the edges of each (extremes, negative zero,
/// infinities, a NaN, an i64 beyond 2^53).
fn samples() -> Vec<Data> {
    let floats = [
        0.0f32,
        -0.0,
        1.5,
        -2.75,
        65504.0,
        1e-8,
        f32::INFINITY,
        f32::NAN,
    ];
    vec![
        Data::F32(floats.to_vec()),
        Data::F64(vec![0.1, -1e300, 3.0, f64::NEG_INFINITY]),
        Data::F16(floats.iter().map(|&x| f16::from_f32(x)).collect()),
        Data::BF16(floats.iter().map(|&x| bf16::from_f32(x)).collect()),
        Data::I8(vec![i8::MIN, -1, 0, 1, i8::MAX]),
        Data::Ternary(vec![-1, 0, 1]),
        Data::I16(vec![i16::MIN, -300, 0, i16::MAX]),
        Data::I32(vec![i32::MIN, -16_777_217, 16_777_217, i32::MAX]),
        Data::I64(vec![i64::MIN, (1 << 53) + 1, -3, i64::MAX]),
        Data::U8(vec![0, 128, 255]),
        Data::U16(vec![0, 40_000, u16::MAX]),
        Data::U32(vec![0, 16_777_217, u32::MAX]),
        Data::U64(vec![0, (1 << 53) + 1, u64::MAX]),
        Data::Bool(vec![false, true, true]),
    ]
}

#[test]
fn to_f32_is_the_widening_through_f64_and_into_f32_agrees() {
    for d in samples() {
        let through_f64: Vec<u32> = d.to_f64().iter().map(|&x| (x as f32).to_bits()).collect();
        let direct: Vec<u32> = d.to_f32().iter().map(|x| x.to_bits()).collect();
        assert_eq!(direct, through_f64, "{:?}", d.elem());
        let owned: Vec<u32> = d.clone().into_f32().iter().map(|x| x.to_bits()).collect();
        assert_eq!(owned, direct, "{:?}", d.elem());
    }
}

#[test]
fn little_endian_bytes_are_each_elements_and_read_back() {
    for d in samples() {
        let bytes = d.to_le_bytes();
        assert_eq!(bytes.len(), d.le_byte_len(), "{:?}", d.elem());
        let each: Vec<u8> = match &d {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I8(v) | Data::Ternary(v) => v.iter().map(|&x| x as u8).collect(),
            Data::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::U8(v) => v.clone(),
            Data::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::U64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
        };
        assert_eq!(bytes, each, "{:?}", d.elem());
        let back = Data::from_le_bytes(d.elem(), &bytes).unwrap();
        assert_eq!(back.to_le_bytes(), bytes, "{:?}", d.elem());
    }
}
