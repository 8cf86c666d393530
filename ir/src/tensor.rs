//! Concrete tensors, as the reference interpreter and weight stores hold them.
//!
//! f16 and bf16 tensors keep their 16-bit values; every float op computes in f32 (or f64 for sums)
//! and rounds to the storage type at the end (round to nearest even). Ternary tensors hold one `i8` in
//! {-1, 0, +1} per element: the interpreter works on unpacked values, packing is a storage concern.

use crate::types::{ElemType, TensorType};
use half::{bf16, f16};

/// The elements of a tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// i8 elements.
    I8(Vec<i8>),
    /// i16 elements.
    I16(Vec<i16>),
    /// i32 elements.
    I32(Vec<i32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// u8 elements.
    U8(Vec<u8>),
    /// u16 elements.
    U16(Vec<u16>),
    /// u32 elements.
    U32(Vec<u32>),
    /// u64 elements.
    U64(Vec<u64>),
    /// Boolean elements.
    Bool(Vec<bool>),
    /// Ternary elements, each in {-1, 0, +1}.
    Ternary(Vec<i8>),
}

/// A tensor with a concrete shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The shape, outermost first.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: Data,
}

/// Applies `$body` to the vector inside any `Data` variant, rebuilding the same variant.
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::F32($v) => Data::F32($body),
            Data::F64($v) => Data::F64($body),
            Data::I16($v) => Data::I16($body),
            Data::U16($v) => Data::U16($body),
            Data::U32($v) => Data::U32($body),
            Data::U64($v) => Data::U64($body),
            Data::F16($v) => Data::F16($body),
            Data::BF16($v) => Data::BF16($body),
            Data::I8($v) => Data::I8($body),
            Data::I32($v) => Data::I32($body),
            Data::I64($v) => Data::I64($body),
            Data::U8($v) => Data::U8($body),
            Data::Bool($v) => Data::Bool($body),
            Data::Ternary($v) => Data::Ternary($body),
        }
    };
}

impl Data {
    /// The element type.
    pub fn elem(&self) -> ElemType {
        match self {
            Data::F32(_) => ElemType::F32,
            Data::F64(_) => ElemType::F64,
            Data::I16(_) => ElemType::I16,
            Data::U16(_) => ElemType::U16,
            Data::U32(_) => ElemType::U32,
            Data::U64(_) => ElemType::U64,
            Data::F16(_) => ElemType::F16,
            Data::BF16(_) => ElemType::BF16,
            Data::I8(_) => ElemType::I8,
            Data::I32(_) => ElemType::I32,
            Data::I64(_) => ElemType::I64,
            Data::U8(_) => ElemType::U8,
            Data::Bool(_) => ElemType::Bool,
            Data::Ternary(_) => ElemType::Ternary,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::I16(v) => v.len(),
            Data::U16(v) => v.len(),
            Data::U32(v) => v.len(),
            Data::U64(v) => v.len(),
            Data::F16(v) => v.len(),
            Data::BF16(v) => v.len(),
            Data::I8(v) | Data::Ternary(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::U8(v) => v.len(),
            Data::Bool(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements at `indices`, in that order (the data-movement ops are all this one gather).
    /// Every index must be below `len()`; callers compute them from checked shapes.
    pub fn take(&self, indices: &[usize]) -> Data {
        map_data!(self, v => indices.iter().map(|&i| v[i]).collect())
    }

    /// Concatenates data of the same element type; `None` if the types differ.
    pub fn concat(parts: &[&Data]) -> Option<Data> {
        let first = parts.first()?;
        let mut out = map_data!(first, v => Vec::with_capacity(v.len()));
        for part in parts {
            match (&mut out, part) {
                (Data::F32(o), Data::F32(v)) => o.extend_from_slice(v),
                (Data::F64(o), Data::F64(v)) => o.extend_from_slice(v),
                (Data::I16(o), Data::I16(v)) => o.extend_from_slice(v),
                (Data::U16(o), Data::U16(v)) => o.extend_from_slice(v),
                (Data::U32(o), Data::U32(v)) => o.extend_from_slice(v),
                (Data::U64(o), Data::U64(v)) => o.extend_from_slice(v),
                (Data::F16(o), Data::F16(v)) => o.extend_from_slice(v),
                (Data::BF16(o), Data::BF16(v)) => o.extend_from_slice(v),
                (Data::I8(o), Data::I8(v)) => o.extend_from_slice(v),
                (Data::I32(o), Data::I32(v)) => o.extend_from_slice(v),
                (Data::I64(o), Data::I64(v)) => o.extend_from_slice(v),
                (Data::U8(o), Data::U8(v)) => o.extend_from_slice(v),
                (Data::Bool(o), Data::Bool(v)) => o.extend_from_slice(v),
                (Data::Ternary(o), Data::Ternary(v)) => o.extend_from_slice(v),
                _ => return None,
            }
        }
        Some(out)
    }

    /// The elements as f32 (f16/bf16 widen exactly, f64 rounds to nearest; integers, booleans and
    /// ternary convert by value, rounding to nearest once).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Data::F32(v) => v.clone(),
            // Exact in f32: widened directly, without an f64 copy of the tensor.
            Data::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Data::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Data::I8(v) | Data::Ternary(v) => v.iter().map(|&x| f32::from(x)).collect(),
            Data::I16(v) => v.iter().map(|&x| f32::from(x)).collect(),
            Data::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
            Data::U16(v) => v.iter().map(|&x| f32::from(x)).collect(),
            Data::Bool(v) => v.iter().map(|&x| f32::from(u8::from(x))).collect(),
            // Exact in f64, then one rounding to f32 (i64/u64 beyond 2^53 round twice, as before).
            other => other.to_f64().into_iter().map(|x| x as f32).collect(),
        }
    }

    /// The elements as f32, as `to_f32` converts them, reusing the storage of f32 data (a weight
    /// the size of the model's embedding is not copied to be read as f32).
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Data::F32(v) => v,
            other => other.to_f32(),
        }
    }

    /// The elements as f64 (exact for every type but i64/u64 values beyond 2^53).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::F64(v) => v.clone(),
            Data::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::I8(v) | Data::Ternary(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::U16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::U64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
        }
    }

    /// The elements as i64 (floats truncate toward zero and saturate, NaN becomes 0; u64 wraps).
    pub fn to_i64(&self) -> Vec<i64> {
        match self {
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::F64(v) => v.iter().map(|&x| x as i64).collect(),
            Data::F16(v) => v.iter().map(|x| x.to_f32() as i64).collect(),
            Data::BF16(v) => v.iter().map(|x| x.to_f32() as i64).collect(),
            Data::I8(v) | Data::Ternary(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::I16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::I64(v) => v.clone(),
            Data::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::U32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::U64(v) => v.iter().map(|&x| x as i64).collect(),
            Data::Bool(v) => v.iter().map(|&x| i64::from(x)).collect(),
        }
    }

    /// Builds data from f32 values (see `from_f64`; an f32 value converts exactly to f64 first).
    pub fn from_f32(elem: ElemType, v: Vec<f32>) -> Data {
        match elem {
            ElemType::F32 => Data::F32(v),
            _ => Data::from_f64(elem, v.into_iter().map(f64::from).collect()),
        }
    }

    /// Builds data of any element type from f64 values: floats round once to nearest even; integers
    /// truncate toward zero and saturate to the type's range (NaN → 0), as `nn.cast` defines; bool is
    /// `x != 0`; ternary saturates to [-1, 1].
    pub fn from_f64(elem: ElemType, v: Vec<f64>) -> Data {
        match elem {
            ElemType::F32 => Data::F32(v.into_iter().map(|x| x as f32).collect()),
            ElemType::F64 => Data::F64(v),
            ElemType::F16 => Data::F16(
                v.into_iter()
                    .map(|x| f16::from_f32(f32_round_to_odd(x)))
                    .collect(),
            ),
            ElemType::BF16 => Data::BF16(
                v.into_iter()
                    .map(|x| bf16::from_f32(f32_round_to_odd(x)))
                    .collect(),
            ),
            ElemType::I8 => Data::I8(v.into_iter().map(|x| x as i8).collect()),
            ElemType::I16 => Data::I16(v.into_iter().map(|x| x as i16).collect()),
            ElemType::I32 => Data::I32(v.into_iter().map(|x| x as i32).collect()),
            ElemType::I64 => Data::I64(v.into_iter().map(|x| x as i64).collect()),
            ElemType::U8 => Data::U8(v.into_iter().map(|x| x as u8).collect()),
            ElemType::U16 => Data::U16(v.into_iter().map(|x| x as u16).collect()),
            ElemType::U32 => Data::U32(v.into_iter().map(|x| x as u32).collect()),
            ElemType::U64 => Data::U64(v.into_iter().map(|x| x as u64).collect()),
            ElemType::Bool => Data::Bool(v.into_iter().map(|x| x != 0.0).collect()),
            ElemType::Ternary => {
                Data::Ternary(v.into_iter().map(|x| (x as i8).clamp(-1, 1)).collect())
            }
        }
    }

    /// Builds data of an integer element type from i64 values, wrapping like two's complement
    /// (ONNX and numpy integer arithmetic). For a float `elem`, values convert by value.
    pub fn from_i64(elem: ElemType, v: Vec<i64>) -> Data {
        match elem {
            // i64 → f32 rounds once; going through f64 would round twice above 2^53.
            ElemType::F32 => Data::F32(v.into_iter().map(|x| x as f32).collect()),
            ElemType::F64 | ElemType::F16 | ElemType::BF16 => {
                Data::from_f64(elem, v.into_iter().map(|x| x as f64).collect())
            }
            ElemType::I8 => Data::I8(v.into_iter().map(|x| x as i8).collect()),
            ElemType::I16 => Data::I16(v.into_iter().map(|x| x as i16).collect()),
            ElemType::I32 => Data::I32(v.into_iter().map(|x| x as i32).collect()),
            ElemType::I64 => Data::I64(v),
            ElemType::U8 => Data::U8(v.into_iter().map(|x| x as u8).collect()),
            ElemType::U16 => Data::U16(v.into_iter().map(|x| x as u16).collect()),
            ElemType::U32 => Data::U32(v.into_iter().map(|x| x as u32).collect()),
            ElemType::U64 => Data::U64(v.into_iter().map(|x| x as u64).collect()),
            ElemType::Bool => Data::Bool(v.into_iter().map(|x| x != 0).collect()),
            ElemType::Ternary => {
                Data::Ternary(v.into_iter().map(|x| x.clamp(-1, 1) as i8).collect())
            }
        }
    }
}

impl Data {
    /// Decodes little-endian element bytes (the layout of safetensors and `.npy` files) of a type.
    /// Booleans are one byte each (nonzero is true); ternary is one signed byte per element.
    /// `None` if `bytes` is not a whole number of elements.
    pub fn from_le_bytes(elem: ElemType, b: &[u8]) -> Option<Data> {
        fn words<const N: usize, T>(b: &[u8], f: fn([u8; N]) -> T) -> Option<Vec<T>> {
            if !b.len().is_multiple_of(N) {
                return None;
            }
            Some(
                b.chunks_exact(N)
                    .map(|c| f(c.try_into().unwrap_or([0; N])))
                    .collect(),
            )
        }
        Some(match elem {
            ElemType::F32 => Data::F32(words(b, f32::from_le_bytes)?),
            ElemType::F64 => Data::F64(words(b, f64::from_le_bytes)?),
            ElemType::I16 => Data::I16(words(b, i16::from_le_bytes)?),
            ElemType::U16 => Data::U16(words(b, u16::from_le_bytes)?),
            ElemType::U32 => Data::U32(words(b, u32::from_le_bytes)?),
            ElemType::U64 => Data::U64(words(b, u64::from_le_bytes)?),
            ElemType::F16 => Data::F16(words(b, f16::from_le_bytes)?),
            ElemType::BF16 => Data::BF16(words(b, bf16::from_le_bytes)?),
            ElemType::I8 => Data::I8(b.iter().map(|&x| x as i8).collect()),
            ElemType::Ternary => Data::Ternary(b.iter().map(|&x| x as i8).collect()),
            ElemType::I32 => Data::I32(words(b, i32::from_le_bytes)?),
            ElemType::I64 => Data::I64(words(b, i64::from_le_bytes)?),
            ElemType::U8 => Data::U8(b.to_vec()),
            ElemType::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
        })
    }
}

impl Data {
    /// The elements as little-endian bytes (the inverse of `from_le_bytes`).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.le_byte_len()];
        self.write_le_bytes(&mut out);
        out
    }

    /// The number of bytes `to_le_bytes` gives.
    pub fn le_byte_len(&self) -> usize {
        let width = match self.elem() {
            ElemType::F64 | ElemType::I64 | ElemType::U64 => 8,
            ElemType::F32 | ElemType::I32 | ElemType::U32 => 4,
            ElemType::F16 | ElemType::BF16 | ElemType::I16 | ElemType::U16 => 2,
            ElemType::I8 | ElemType::U8 | ElemType::Bool | ElemType::Ternary => 1,
        };
        self.len() * width
    }

    /// Writes the elements as little-endian bytes into `out`, in place (a large tensor is placed
    /// without a byte copy of it); `out` must be `le_byte_len()` long (shorter stops early).
    pub fn write_le_bytes(&self, out: &mut [u8]) {
        fn put<const N: usize, T: Copy>(v: &[T], out: &mut [u8], le: impl Fn(T) -> [u8; N]) {
            for (x, dst) in v.iter().zip(out.chunks_exact_mut(N)) {
                dst.copy_from_slice(&le(*x));
            }
        }
        match self {
            Data::F32(v) => put(v, out, f32::to_le_bytes),
            Data::F64(v) => put(v, out, f64::to_le_bytes),
            Data::F16(v) => put(v, out, f16::to_le_bytes),
            Data::BF16(v) => put(v, out, bf16::to_le_bytes),
            Data::I8(v) | Data::Ternary(v) => put(v, out, i8::to_le_bytes),
            Data::I16(v) => put(v, out, i16::to_le_bytes),
            Data::I32(v) => put(v, out, i32::to_le_bytes),
            Data::I64(v) => put(v, out, i64::to_le_bytes),
            Data::U8(v) => put(v, out, u8::to_le_bytes),
            Data::U16(v) => put(v, out, u16::to_le_bytes),
            Data::U32(v) => put(v, out, u32::to_le_bytes),
            Data::U64(v) => put(v, out, u64::to_le_bytes),
            Data::Bool(v) => put(v, out, |b| [u8::from(b)]),
        }
    }
}

/// `max|a − b| / max|b|` over all elements, in f64 (the absolute error if `b` is all zeros);
/// `None` if the shapes differ. This is how results are compared with references.
pub fn max_relative_error(a: &Tensor, b: &Tensor) -> Option<f64> {
    if a.shape != b.shape {
        return None;
    }
    let (x, y) = (a.data.to_f32(), b.data.to_f32());
    let diff = x
        .iter()
        .zip(&y)
        .map(|(&p, &q)| (f64::from(p) - f64::from(q)).abs())
        .fold(0.0, f64::max);
    let scale = y.iter().map(|&q| f64::from(q).abs()).fold(0.0, f64::max);
    Some(if scale > 0.0 { diff / scale } else { diff })
}

impl Tensor {
    /// A tensor from a shape and data; `None` if the element count does not match the shape.
    pub fn new(shape: Vec<usize>, data: Data) -> Option<Tensor> {
        let n = checked_numel(&shape)?;
        (n == data.len()).then_some(Tensor { shape, data })
    }

    /// An f32 tensor; `None` if the element count does not match the shape.
    pub fn from_f32(shape: Vec<usize>, values: Vec<f32>) -> Option<Tensor> {
        Tensor::new(shape, Data::F32(values))
    }

    /// The element type.
    pub fn elem(&self) -> ElemType {
        self.data.elem()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The tensor's type (all dims static).
    pub fn ty(&self) -> TensorType {
        TensorType::of(
            &self.shape.iter().map(|&d| d as u64).collect::<Vec<_>>(),
            self.elem(),
        )
    }

    /// Converts this tensor, as a weight store read it, to the element type a `nn.weight` declares:
    /// floats convert to any float type (f16/bf16 widen exactly; f32 narrows by rounding to nearest even);
    /// i8 converts to ternary only if every value is in {-1, 0, +1}; otherwise the types must be equal.
    pub fn convert_for_load(self, elem: ElemType) -> Result<Tensor, String> {
        let have = self.elem();
        if have == elem {
            return Ok(self);
        }
        let data = match (&self.data, elem) {
            (_, e) if have.is_float() && e.is_float() => Data::from_f32(e, self.data.to_f32()),
            (Data::I8(v), ElemType::Ternary) => {
                if let Some(pos) = v.iter().position(|&x| !(-1..=1).contains(&x)) {
                    return Err(format!(
                        "element {pos} is {} but a ternary weight holds only -1, 0 or +1",
                        v[pos]
                    ));
                }
                Data::Ternary(v.clone())
            }
            _ => return Err(format!("stored as {have}, cannot be read as {elem}")),
        };
        Ok(Tensor {
            shape: self.shape,
            data,
        })
    }
}

/// The product of `shape`, or `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// `x` rounded to f32 with round-to-odd: exact values stay; inexact ones become the neighbour whose
/// last significand bit is 1. Rounding that result to nearest-even f16 or bf16 (fewer significand bits)
/// gives the correctly rounded result of `x`, which a plain f64 → f32 → f16 chain does not (it rounds twice).
pub fn f32_round_to_odd(x: f64) -> f32 {
    let f = x as f32;
    if !f.is_finite() || f64::from(f) == x || f.to_bits() & 1 == 1 {
        return f;
    }
    // `f` is the even neighbour; step one ulp toward `x` to the odd one.
    let toward_x = if f64::from(f) < x {
        f.next_up()
    } else {
        f.next_down()
    };
    if toward_x.is_finite() { toward_x } else { f }
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}
