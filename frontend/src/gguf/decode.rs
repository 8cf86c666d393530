//! Decoding a GGUF tensor into a `Tensor` in PyTorch order: `dequantize` to f32 for every decodable
//! type, `ternary` to {-1, 0, +1} values plus their scale for the ternary types (and for float tensors
//! whose values are exactly {-g, 0, +g}).
//!
//! The flattened element order of a GGUF tensor (ne0 fastest) is the row-major order of its PyTorch
//! shape (dims reversed), so decoding never permutes; a per-block scale `scales[i]` covers flattened
//! elements `256·i .. 256·(i+1)`, which lie inside one row because ne0 is a multiple of 256.

use super::blocks::{self, QK_I2_S, QK_K, TernaryBlocks};
use super::ggml_type::GgmlType;
use super::kquants;
use super::{GgufFile, GgufTensorInfo};
use crate::error::FrontendError;
use bitnet_ir::{Data, Tensor};
use half::{bf16, f16};

/// The scale that multiplies a ternary tensor's values.
#[derive(Clone, Debug, PartialEq)]
pub enum TernaryScale {
    /// One scale for the whole tensor: I2_S's trailer f32; a TQ tensor's common f16 `d` (as f32); the
    /// `g` of a float tensor holding {-g, 0, +g}.
    PerTensor(f32),
    /// One scale per `block` consecutive elements of the flattened tensor (TQ1_0/TQ2_0 whose blocks
    /// carry different `d`s).
    PerBlock {
        /// Elements per block (256).
        block: usize,
        /// The scales, in block order.
        scales: Vec<f32>,
    },
}

impl GgufFile {
    /// Tensor `name` as f32 in PyTorch order. Quantized types decode like ggml's `dequantize_row_*`
    /// and bit for bit like gguf-py's `dequantize` (TQ2_0's unused code 3 gives +2·d as there); I2_S
    /// reads the x86 layout (see the module header).
    pub fn dequantize(&self, name: &str) -> Result<Tensor, FrontendError> {
        let info = self.tensor_info(name)?;
        let bytes = self.tensor_bytes(info);
        let n = info.numel;
        // Block decoder messages start with the type's name.
        let ctx = |e: String| self.err(format!("tensor '{name}': {e}"));
        let values = match info.ggml_type {
            GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::F64
            | GgmlType::I8
            | GgmlType::I16
            | GgmlType::I32
            | GgmlType::I64 => self.plain(info, bytes)?,
            GgmlType::Q4_0 => blocks::dequantize_q4_0(bytes, n).map_err(ctx)?,
            GgmlType::Q4_1 => blocks::dequantize_q4_1(bytes, n).map_err(ctx)?,
            GgmlType::Q5_0 => blocks::dequantize_q5_0(bytes, n).map_err(ctx)?,
            GgmlType::Q5_1 => blocks::dequantize_q5_1(bytes, n).map_err(ctx)?,
            GgmlType::Q8_0 => blocks::dequantize_q8_0(bytes, n).map_err(ctx)?,
            GgmlType::Q2_K => kquants::dequantize_q2_k(bytes, n).map_err(ctx)?,
            GgmlType::Q3_K => kquants::dequantize_q3_k(bytes, n).map_err(ctx)?,
            GgmlType::Q4_K => kquants::dequantize_q4_k(bytes, n).map_err(ctx)?,
            GgmlType::Q5_K => kquants::dequantize_q5_k(bytes, n).map_err(ctx)?,
            GgmlType::Q6_K => kquants::dequantize_q6_k(bytes, n).map_err(ctx)?,
            GgmlType::TQ1_0 => scale_blocks(blocks::decode_tq1_0(bytes, n).map_err(ctx)?),
            GgmlType::TQ2_0 => scale_blocks(blocks::decode_tq2_0(bytes, n).map_err(ctx)?),
            GgmlType::I2_S => {
                let (t, scale) = self.i2_s(info, bytes)?;
                t.iter().map(|&v| f32::from(v) * scale).collect()
            }
            GgmlType::Undecodable { name: ty, .. } => {
                return Err(self.err(format!(
                    "tensor '{name}': ggml type {ty} is not supported by this reader (supported: \
                     F32 F16 BF16 F64 I8 I16 I32 I64 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K \
                     Q6_K TQ1_0 TQ2_0 I2_S)"
                )));
            }
        };
        self.tensor(info, Data::F32(values))
    }

    /// Tensor `name` as ternary values (`Data::Ternary`, PyTorch order) and their scale, for TQ1_0,
    /// TQ2_0 and I2_S tensors, and for F32/F16/BF16 tensors whose values are exactly {-g, 0, +g}
    /// for one g (returned as `PerTensor(g)`; all zeros give `PerTensor(0.0)`).
    pub fn ternary(&self, name: &str) -> Result<(Tensor, TernaryScale), FrontendError> {
        let info = self.tensor_info(name)?;
        let bytes = self.tensor_bytes(info);
        let n = info.numel;
        let ty = info.ggml_type.name();
        let ctx = |e: String| self.err(format!("tensor '{name}': {e}"));
        let (values, scale) = match info.ggml_type {
            GgmlType::TQ1_0 => tq_scale(blocks::decode_tq1_0(bytes, n).map_err(ctx)?),
            GgmlType::TQ2_0 => {
                let flags = blocks::tq2_0_blocks(bytes, n).map_err(ctx)?;
                let tb = blocks::decode_tq2_0(bytes, n).map_err(ctx)?;
                if flags.iter().any(|b| b.code3)
                    && let Some(i) = tb.values.iter().position(|&v| v == 2)
                {
                    return Err(ctx(format!(
                        "TQ2_0: element {i} (block {}, position {}) has code 3, which is not a \
                         ternary code",
                        i / QK_K,
                        i % QK_K
                    )));
                }
                (tb.values, tq2_scale(&flags))
            }
            GgmlType::I2_S => {
                let (t, scale) = self.i2_s(info, bytes)?;
                (t, TernaryScale::PerTensor(scale))
            }
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                let v = self.plain(info, bytes)?;
                let (t, g) = float_ternary(&v).map_err(|e| ctx(format!("{ty}: {e}")))?;
                (t, TernaryScale::PerTensor(g))
            }
            other => {
                return Err(self.err(format!(
                    "tensor '{name}' has type {}, which does not hold ternary values \
                     (ternary types: TQ1_0 TQ2_0 I2_S, or F32/F16/BF16 holding {{-g, 0, +g}})",
                    other.name()
                )));
            }
        };
        Ok((self.tensor(info, Data::Ternary(values))?, scale))
    }

    /// The scale `ternary(name)` gives, without keeping the decoded values: TQ2_0 reads only each
    /// block's `d` and code bytes (and decodes in full only to name a code 3); the other types decode.
    pub fn ternary_scale(&self, name: &str) -> Result<TernaryScale, FrontendError> {
        let info = self.tensor_info(name)?;
        if info.ggml_type == GgmlType::TQ2_0 {
            let bytes = self.tensor_bytes(info);
            let flags = blocks::tq2_0_blocks(bytes, info.numel)
                .map_err(|e| self.err(format!("tensor '{name}': {e}")))?;
            if !flags.iter().any(|b| b.code3) {
                return Ok(tq2_scale(&flags));
            }
        }
        Ok(self.ternary(name)?.1)
    }

    /// An unquantized tensor's elements as f32 (f16/bf16 widen exactly, f64 rounds to nearest,
    /// integers convert by value), converted straight from the bytes without an intermediate copy.
    fn plain(&self, info: &GgufTensorInfo, bytes: &[u8]) -> Result<Vec<f32>, FrontendError> {
        fn conv<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
            b.chunks_exact(N)
                .map(|c| f(c.try_into().unwrap_or([0; N])))
                .collect()
        }
        let (_, size) = info.ggml_type.block_layout();
        if info.numel.checked_mul(size as usize) != Some(bytes.len()) {
            return Err(self.err(format!(
                "tensor '{}' ({}): {} bytes do not hold {} elements",
                info.name,
                info.ggml_type.name(),
                bytes.len(),
                info.numel
            )));
        }
        Ok(match info.ggml_type {
            GgmlType::F32 => conv(bytes, f32::from_le_bytes),
            GgmlType::F16 => conv(bytes, |b| f16::from_le_bytes(b).to_f32()),
            GgmlType::BF16 => conv(bytes, |b| bf16::from_le_bytes(b).to_f32()),
            GgmlType::F64 => conv(bytes, |b| f64::from_le_bytes(b) as f32),
            GgmlType::I8 => conv(bytes, |b: [u8; 1]| f32::from(b[0] as i8)),
            GgmlType::I16 => conv(bytes, |b| f32::from(i16::from_le_bytes(b))),
            GgmlType::I32 => conv(bytes, |b| i32::from_le_bytes(b) as f32),
            GgmlType::I64 => conv(bytes, |b| i64::from_le_bytes(b) as f32),
            other => {
                return Err(self.err(format!(
                    "tensor '{}': internal: {} is not a plain type",
                    info.name,
                    other.name()
                )));
            }
        })
    }

    /// An I2_S tensor's values and scale, rejecting shapes the x86 layout cannot have.
    fn i2_s(&self, info: &GgufTensorInfo, bytes: &[u8]) -> Result<(Vec<i8>, f32), FrontendError> {
        let ne0 = info.dims.first().copied().unwrap_or(1);
        if !ne0.is_multiple_of(QK_I2_S) {
            return Err(self.err(format!(
                "tensor '{}' (I2_S): ne0 = {ne0} is not a multiple of {QK_I2_S}, so it is not in the \
                 x86 ACT_PARALLEL layout (128-element blocks along each row) that this reader \
                 decodes; other I2_S layouts (ARM 64-element blocks, x86 1x4) are not supported",
                info.name
            )));
        }
        blocks::decode_i2_s(bytes, info.numel).map_err(|e| {
            self.err(format!(
                "tensor '{}' (dims {:?}): {e}",
                info.name, info.dims
            ))
        })
    }

    /// A tensor of `info`'s PyTorch shape holding `data`.
    fn tensor(&self, info: &GgufTensorInfo, data: Data) -> Result<Tensor, FrontendError> {
        let len = data.len();
        Tensor::new(info.shape(), data).ok_or_else(|| {
            self.err(format!(
                "tensor '{}': internal: {len} decoded elements do not fill shape {:?}",
                info.name,
                info.shape()
            ))
        })
    }
}

/// `t·d` per block, as ggml computes it: `(float)(q − 1) · d`.
fn scale_blocks(tb: TernaryBlocks) -> Vec<f32> {
    tb.values
        .chunks(QK_K)
        .zip(&tb.scales)
        .flat_map(|(vals, d)| {
            let d = d.to_f32();
            vals.iter().map(move |&v| f32::from(v) * d)
        })
        .collect()
}

/// Per-tensor when every block that holds a nonzero value has the same `d` (blocks of zeros may carry
/// any `d`: the quantizer writes 0 for them), else per-block.
fn common_scale(blocks: impl Iterator<Item = (f16, bool)> + Clone) -> TernaryScale {
    let mut common: Option<f16> = None;
    let mut uniform = true;
    for (d, nonzero) in blocks.clone() {
        if !nonzero {
            continue;
        }
        match common {
            None => common = Some(d),
            Some(c) if c.to_bits() == d.to_bits() => {}
            Some(_) => {
                uniform = false;
                break;
            }
        }
    }
    if uniform {
        let d = common.or_else(|| blocks.clone().next().map(|(d, _)| d));
        TernaryScale::PerTensor(d.map_or(0.0, |d| d.to_f32()))
    } else {
        TernaryScale::PerBlock {
            block: QK_K,
            scales: blocks.map(|(d, _)| d.to_f32()).collect(),
        }
    }
}

/// `common_scale` of TQ2_0 blocks read by `tq2_0_blocks`.
fn tq2_scale(flags: &[blocks::Tq2Block]) -> TernaryScale {
    common_scale(flags.iter().map(|b| (b.d, b.nonzero)))
}

/// `common_scale` of decoded blocks (TQ1_0).
fn tq_scale(tb: TernaryBlocks) -> (Vec<i8>, TernaryScale) {
    let scale = common_scale(
        tb.values
            .chunks(QK_K)
            .zip(&tb.scales)
            .map(|(vals, d)| (*d, vals.iter().any(|&v| v != 0))),
    );
    (tb.values, scale)
}

/// Float values that are exactly {-g, 0, +g} as ternary values and g.
pub(crate) fn float_ternary(v: &[f32]) -> Result<(Vec<i8>, f32), String> {
    let first = v.iter().position(|&x| x != 0.0 || x.is_nan());
    let Some(first) = first else {
        return Ok((vec![0; v.len()], 0.0));
    };
    let g = v.get(first).map_or(0.0, |x| x.abs());
    if !g.is_finite() {
        return Err(format!("element {first} is {g}, not a ternary scale"));
    }
    let mut out = Vec::with_capacity(v.len());
    for (i, &x) in v.iter().enumerate() {
        let t = if x == 0.0 {
            0
        } else if x == g {
            1
        } else if x == -g {
            -1
        } else {
            return Err(format!(
                "not ternary: element {i} is {x}, but element {first} has magnitude {g} \
                 (a ternary tensor holds only -g, 0 and +g)"
            ));
        };
        out.push(t);
    }
    Ok((out, g))
}
