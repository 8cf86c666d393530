//! ggml tensor type ids as GGUF files store them, with each type's block layout and the byte size of a
//! tensor of that type.
//!
//! Block sizes and bytes per block are those of gguf-py 0.19 (`GGML_QUANT_SIZES`), which match ggml's
//! type traits for every type that can appear in a file. Q8_1 and Q8_K are left out on purpose: they
//! are activation types of the dot products, never stored, and gguf-py and ggml disagree on Q8_1's size.
//!
//! Ids 36 to 39 collide between upstream ggml and the BitNet fork (formats.md §4.2). 36 is read as
//! I2_S only in a BitNet file (`general.architecture` `bitnet-b1.58`, `bitnet-25` or `bitnet`, or
//! `general.file_type` 40 = LLAMA_FTYPE_MOSTLY_I2_S); elsewhere it is a removed upstream type and the
//! file is rejected. 37 (I8_S) is an activation type that the fork never writes, 38 and 39 are the
//! fork's TL1/TL2 LUT layouts, tied to kernel code generation parameters: all three are rejected in a
//! BitNet file. Outside one, 39 is upstream MXFP4.

/// The type of a tensor's elements, as ggml stores them.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float (id 0).
    F32,
    /// IEEE half (id 1).
    F16,
    /// 32 elements: f16 `d`, 16 bytes of nibbles; `(q - 8)·d` (id 2).
    Q4_0,
    /// 32 elements: f16 `d`, f16 `m`, 16 bytes of nibbles; `q·d + m` (id 3).
    Q4_1,
    /// 32 elements: f16 `d`, 4 bytes of high bits, 16 bytes of nibbles; `(q - 16)·d` (id 6).
    Q5_0,
    /// 32 elements: f16 `d`, f16 `m`, 4 bytes of high bits, 16 bytes of nibbles; `q·d + m` (id 7).
    Q5_1,
    /// 32 elements: f16 `d`, 32 `i8`; `q·d` (id 8).
    Q8_0,
    /// K-quant, 256 elements in 84 bytes: 2-bit codes, 4-bit scales and mins (id 10).
    Q2_K,
    /// K-quant, 256 elements in 110 bytes: 3-bit codes, 6-bit signed scales (id 11).
    Q3_K,
    /// K-quant, 256 elements in 144 bytes: 4-bit codes, 6-bit scales and mins (id 12).
    Q4_K,
    /// K-quant, 256 elements in 176 bytes: 5-bit codes, 6-bit scales and mins (id 13).
    Q5_K,
    /// K-quant, 256 elements in 210 bytes: 6-bit codes, 8-bit signed scales (id 14).
    Q6_K,
    /// 8-bit integer (id 24).
    I8,
    /// 16-bit integer (id 25).
    I16,
    /// 32-bit integer (id 26).
    I32,
    /// 64-bit integer (id 27).
    I64,
    /// 64-bit float (id 28).
    F64,
    /// bfloat16 (id 30).
    BF16,
    /// Ternary, 256 elements in 54 bytes, base-3 packed, f16 `d` per block (id 34).
    TQ1_0,
    /// Ternary, 256 elements in 66 bytes, 2 bits each, f16 `d` per block (id 35).
    TQ2_0,
    /// bitnet.cpp's ternary type: 2 bits per element plus one f32 scale per tensor (id 36, BitNet files).
    I2_S,
    /// A type whose layout is known, so the file can be read, but that this reader does not decode.
    Undecodable {
        /// The type id.
        id: u32,
        /// ggml's name for it.
        name: &'static str,
        /// Elements per block.
        block: u64,
        /// Bytes per block.
        bytes: u64,
    },
}

/// Types this reader locates in a file but does not decode: (id, name, block, bytes per block).
const UNDECODABLE: [(u32, &str, u64, u64); 12] = [
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (29, "IQ1_M", 256, 56),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

/// Bytes after an I2_S tensor's codes: the f32 scale, then padding.
pub const I2S_TRAILER: u64 = 32;

impl GgmlType {
    /// The type of id `id`. `bitnet` says whether the file comes from the BitNet fork (see the module
    /// header); it decides ids 36 to 39.
    pub fn from_id(id: u32, bitnet: bool) -> Result<GgmlType, String> {
        let t = match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2_K,
            11 => GgmlType::Q3_K,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            24 => GgmlType::I8,
            25 => GgmlType::I16,
            26 => GgmlType::I32,
            27 => GgmlType::I64,
            28 => GgmlType::F64,
            30 => GgmlType::BF16,
            34 => GgmlType::TQ1_0,
            35 => GgmlType::TQ2_0,
            36 if bitnet => GgmlType::I2_S,
            36 => {
                return Err(
                    "ggml type id 36 is I2_S only in BitNet files (general.architecture \
                     bitnet-b1.58, bitnet-25 or bitnet, or general.file_type 40); upstream ggml \
                     removed the type it used to name (IQ4_NL_4_4)"
                        .into(),
                );
            }
            37 if bitnet => {
                return Err(
                    "ggml type id 37 is the BitNet fork's I8_S, an activation type that \
                     never belongs in a file"
                        .into(),
                );
            }
            38 | 39 if bitnet => {
                let name = if id == 38 { "TL1" } else { "TL2" };
                return Err(format!(
                    "ggml type id {id} is the BitNet fork's {name} LUT layout, which depends on \
                     kernel code generation parameters and is not supported; convert to I2_S"
                ));
            }
            _ => match UNDECODABLE.iter().find(|(i, ..)| *i == id) {
                Some(&(id, name, block, bytes)) => GgmlType::Undecodable {
                    id,
                    name,
                    block,
                    bytes,
                },
                None => return Err(format!("unknown ggml type id {id}")),
            },
        };
        Ok(t)
    }

    /// The type id as a file stores it.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2_K => 10,
            GgmlType::Q3_K => 11,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::I8 => 24,
            GgmlType::I16 => 25,
            GgmlType::I32 => 26,
            GgmlType::I64 => 27,
            GgmlType::F64 => 28,
            GgmlType::BF16 => 30,
            GgmlType::TQ1_0 => 34,
            GgmlType::TQ2_0 => 35,
            GgmlType::I2_S => 36,
            GgmlType::Undecodable { id, .. } => id,
        }
    }

    /// ggml's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::I64 => "I64",
            GgmlType::F64 => "F64",
            GgmlType::BF16 => "BF16",
            GgmlType::TQ1_0 => "TQ1_0",
            GgmlType::TQ2_0 => "TQ2_0",
            GgmlType::I2_S => "I2_S",
            GgmlType::Undecodable { name, .. } => name,
        }
    }

    /// Elements per block and bytes per block. I2_S reports (1, 1) like the fork's type traits, but
    /// its tensors are sized by `tensor_bytes`, not by blocks.
    pub fn block_layout(self) -> (u64, u64) {
        match self {
            GgmlType::F32 | GgmlType::I32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 | GgmlType::I16 => (1, 2),
            GgmlType::F64 | GgmlType::I64 => (1, 8),
            GgmlType::I8 | GgmlType::I2_S => (1, 1),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2_K => (256, 84),
            GgmlType::Q3_K => (256, 110),
            GgmlType::Q4_K => (256, 144),
            GgmlType::Q5_K => (256, 176),
            GgmlType::Q6_K => (256, 210),
            GgmlType::TQ1_0 => (256, 54),
            GgmlType::TQ2_0 => (256, 66),
            GgmlType::Undecodable { block, bytes, .. } => (block, bytes),
        }
    }

    /// True for the types that hold ternary values (TQ1_0, TQ2_0, I2_S).
    pub fn is_ternary(self) -> bool {
        matches!(self, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S)
    }

    /// The bytes a tensor of this type with `dims` (ggml order, ne0 first) occupies, or why it cannot
    /// exist: an element count that overflows u64, ne0 not a multiple of the block size, or an I2_S
    /// element count that is not a multiple of 4. All arithmetic is checked.
    pub fn tensor_bytes(self, dims: &[u64]) -> Result<u64, String> {
        let numel = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("dims {dims:?}: the element count overflows u64"))?;
        if self == GgmlType::I2_S {
            if !numel.is_multiple_of(4) {
                return Err(format!(
                    "dims {dims:?}: I2_S needs an element count that is a multiple of 4, not {numel}"
                ));
            }
            return (numel / 4)
                .checked_add(I2S_TRAILER)
                .ok_or_else(|| format!("dims {dims:?}: the byte size overflows u64"));
        }
        let (block, bytes) = self.block_layout();
        let ne0 = dims.first().copied().unwrap_or(1);
        if !ne0.is_multiple_of(block) {
            return Err(format!(
                "ne0 = {ne0} is not a multiple of the {} block size {block}",
                self.name()
            ));
        }
        let rows = dims
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("dims {dims:?}: the row count overflows u64"))?;
        (ne0 / block)
            .checked_mul(bytes)
            .and_then(|row| row.checked_mul(rows))
            .ok_or_else(|| format!("dims {dims:?}: the byte size overflows u64"))
    }
}
