//! Element types, dimensions and tensor types of the IR.
//!
//! A dimension is either static (`128`) or a named symbol (`T`) whose upper bound the function declares
//! (`func @f[T<=4096]`), so one function serves prompts of any length. Text form: `tensor<Tx128xf32>`,
//! a scalar is `tensor<f32>`.

use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElemType {
    /// IEEE binary32.
    F32,
    /// IEEE binary64 (ONNX graphs; computed in f64).
    F64,
    /// IEEE binary16 (computed in f32, rounded to nearest even when stored).
    F16,
    /// bfloat16 (computed in f32, rounded to nearest even when stored).
    BF16,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer (computed in i64 with wrapping, so values above 2^63 compare as negative).
    U64,
    /// Boolean (the result of comparisons, the condition of `nn.where`).
    Bool,
    /// A ternary weight in {-1, 0, +1}, stored packed as 2-bit codes `t + 1`.
    Ternary,
}

impl ElemType {
    /// Every element type, in text-name order.
    pub const ALL: [ElemType; 14] = [
        ElemType::F32,
        ElemType::F64,
        ElemType::F16,
        ElemType::BF16,
        ElemType::I8,
        ElemType::I16,
        ElemType::I32,
        ElemType::I64,
        ElemType::U8,
        ElemType::U16,
        ElemType::U32,
        ElemType::U64,
        ElemType::Bool,
        ElemType::Ternary,
    ];

    /// The name used in the text form.
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "f32",
            ElemType::F64 => "f64",
            ElemType::F16 => "f16",
            ElemType::BF16 => "bf16",
            ElemType::I8 => "i8",
            ElemType::I16 => "i16",
            ElemType::I32 => "i32",
            ElemType::I64 => "i64",
            ElemType::U8 => "u8",
            ElemType::U16 => "u16",
            ElemType::U32 => "u32",
            ElemType::U64 => "u64",
            ElemType::Bool => "bool",
            ElemType::Ternary => "ternary",
        }
    }

    /// Parses a text-form name.
    pub fn from_name(name: &str) -> Option<ElemType> {
        ElemType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// True for f32, f64, f16 and bf16.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            ElemType::F32 | ElemType::F64 | ElemType::F16 | ElemType::BF16
        )
    }

    /// True for the integer types (i8, i16, i32, i64, u8, u16, u32, u64).
    pub fn is_int(self) -> bool {
        matches!(
            self,
            ElemType::I8
                | ElemType::I16
                | ElemType::I32
                | ElemType::I64
                | ElemType::U8
                | ElemType::U16
                | ElemType::U32
                | ElemType::U64
        )
    }

    /// Storage size in bits of one element (ternary packs four to a byte).
    pub fn bits(self) -> u64 {
        match self {
            ElemType::F32 | ElemType::I32 | ElemType::U32 => 32,
            ElemType::F16 | ElemType::BF16 | ElemType::I16 | ElemType::U16 => 16,
            ElemType::I8 | ElemType::U8 | ElemType::Bool => 8,
            ElemType::F64 | ElemType::I64 | ElemType::U64 => 64,
            ElemType::Ternary => 2,
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dimension of a tensor type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// A size known at compile time.
    Static(u64),
    /// A size bound at run time, named by a symbol the function declares with an upper bound.
    Sym(String),
}

impl Dim {
    /// The static size, if this dimension is static.
    pub fn as_static(&self) -> Option<u64> {
        match self {
            Dim::Static(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }

    /// True when the dimension is the static size 1.
    pub fn is_one(&self) -> bool {
        *self == Dim::Static(1)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Static(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A ranked tensor type: `tensor<d0 x d1 x ... x elem>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// The dimensions, outermost first.
    pub dims: Vec<Dim>,
    /// The element type.
    pub elem: ElemType,
}

impl TensorType {
    /// A type with the given dims and element type.
    pub fn new(dims: Vec<Dim>, elem: ElemType) -> Self {
        TensorType { dims, elem }
    }

    /// A type whose dims are all static.
    pub fn of(shape: &[u64], elem: ElemType) -> Self {
        TensorType {
            dims: shape.iter().map(|&d| Dim::Static(d)).collect(),
            elem,
        }
    }

    /// The rank (number of dimensions).
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// The same dims with another element type.
    pub fn with_elem(&self, elem: ElemType) -> Self {
        TensorType {
            dims: self.dims.clone(),
            elem,
        }
    }

    /// The static shape, if every dim is static.
    pub fn static_shape(&self) -> Option<Vec<u64>> {
        self.dims.iter().map(Dim::as_static).collect()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor<")?;
        for d in &self.dims {
            write!(f, "{d}x")?;
        }
        write!(f, "{}>", self.elem)
    }
}

/// A dimension symbol declared by a function, with its inclusive upper bound (`T<=4096`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SymbolDecl {
    /// The symbol's name: an uppercase letter followed by uppercase letters, digits or `_`.
    pub name: String,
    /// The largest value the symbol may be bound to at run time.
    pub max: u64,
}

/// True if `name` is a valid symbol name (`[A-Z][A-Z0-9_]*`), so it cannot be confused with an
/// element type or the `x` separator in the text form.
pub fn is_symbol_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('A'..='Z'))
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Parses the inside of `tensor<...>` (e.g. `Tx128xf32`); the error says what is wrong.
pub fn parse_tensor_body(body: &str) -> Result<TensorType, String> {
    let parts: Vec<&str> = body.split('x').collect();
    let (elem_name, dim_parts) = match parts.split_last() {
        Some(split) => split,
        None => return Err("empty tensor type".into()),
    };
    if elem_name.trim().bytes().all(|b| b.is_ascii_digit()) || is_symbol_name(elem_name.trim()) {
        return Err(format!(
            "`tensor<{body}>` has no element type: write it last, e.g. `tensor<{body}xf32>`"
        ));
    }
    let elem = ElemType::from_name(elem_name.trim()).ok_or_else(|| {
        format!(
            "unknown element type `{}` (expected one of: {})",
            elem_name.trim(),
            ElemType::ALL.map(ElemType::name).join(", ")
        )
    })?;
    let mut dims = Vec::with_capacity(dim_parts.len());
    for part in dim_parts {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("empty dimension in `tensor<{body}>`"));
        }
        if part.bytes().all(|b| b.is_ascii_digit()) {
            let n: u64 = part
                .parse()
                .map_err(|_| format!("dimension `{part}` does not fit in 64 bits"))?;
            dims.push(Dim::Static(n));
        } else if is_symbol_name(part) {
            dims.push(Dim::Sym(part.to_string()));
        } else {
            return Err(format!(
                "bad dimension `{part}`: expected a number or a symbol like `T` (uppercase)"
            ));
        }
    }
    Ok(TensorType { dims, elem })
}

/// The range of values of an integer-like element type (i64 for the floats, whose callers convert).
/// u64 is limited to i64's range: the interpreter computes unsigned 64-bit values in i64.
pub fn int_range(elem: ElemType) -> (i64, i64) {
    match elem {
        ElemType::I8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
        ElemType::I16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        ElemType::I32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        ElemType::U8 => (0, i64::from(u8::MAX)),
        ElemType::U16 => (0, i64::from(u16::MAX)),
        ElemType::U32 => (0, i64::from(u32::MAX)),
        ElemType::U64 => (0, i64::MAX),
        ElemType::Bool => (0, 1),
        ElemType::Ternary => (-1, 1),
        ElemType::I64 | ElemType::F32 | ElemType::F64 | ElemType::F16 | ElemType::BF16 => {
            (i64::MIN, i64::MAX)
        }
    }
}
