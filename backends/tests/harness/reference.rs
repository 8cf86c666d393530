//! The reference side of the harness: the interpreter's `OpKind::eval` on tensors built from case
//! data, and the conversions between typed values and buffer bytes.

use bitnet_ir::ops::EvalCtx;
use bitnet_ir::{Attrs, Data, ElemType, NoWeights, OpKind, Tensor};

/// The interpreter's results of `op` on `inputs` with `attrs`, for results of the given shapes and
/// element types.
pub fn eval(
    op: OpKind,
    inputs: &[&Tensor],
    attrs: &Attrs,
    results: &[(Vec<usize>, ElemType)],
) -> Vec<Tensor> {
    let shapes: Vec<Vec<usize>> = results.iter().map(|r| r.0.clone()).collect();
    let elems: Vec<ElemType> = results.iter().map(|r| r.1).collect();
    let cx = EvalCtx {
        inputs,
        attrs,
        result_shapes: &shapes,
        result_elems: &elems,
        weights: &NoWeights,
    };
    op.eval(&cx)
        .unwrap_or_else(|e| panic!("reference eval of {op:?}: {e}"))
}

/// The interpreter's single f32 result of `op`, of shape `shape`.
pub fn eval_f32(op: OpKind, inputs: &[&Tensor], attrs: &Attrs, shape: Vec<usize>) -> Vec<f32> {
    let mut results = eval(op, inputs, attrs, &[(shape, ElemType::F32)]);
    f32s(&results.remove(0))
}

/// An f32 tensor.
pub fn tensor(shape: Vec<usize>, values: &[f32]) -> Tensor {
    Tensor::new(shape, Data::F32(values.to_vec())).expect("shape matches the values")
}

/// A tensor of `data`.
pub fn tensor_of(shape: Vec<usize>, data: Data) -> Tensor {
    Tensor::new(shape, data).expect("shape matches the values")
}

/// The values of an f32 tensor.
pub fn f32s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        Data::F32(v) => v.clone(),
        other => panic!("expected f32 data, found {other:?}"),
    }
}

/// The values of an i8 tensor.
pub fn i8s(t: &Tensor) -> Vec<i8> {
    match &t.data {
        Data::I8(v) => v.clone(),
        other => panic!("expected i8 data, found {other:?}"),
    }
}

/// f32 values as little-endian bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// i8 values as bytes.
pub fn i8_bytes(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

/// u16 values as little-endian bytes.
pub fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// i64 values as little-endian bytes.
pub fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The filler of output bytes no row has written yet: any write shows.
pub const UNWRITTEN: u8 = 0xa5;

/// An output buffer of `len` bytes before the launch.
pub fn unwritten(len: usize) -> Vec<u8> {
    vec![UNWRITTEN; len]
}
