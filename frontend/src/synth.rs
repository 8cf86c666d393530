//! Synthetic checkpoints: `bitnetc synth` writes a deterministic random BitNet b1.58 model in the
//! Hugging Face layout of microsoft/bitnet-b1.58-2B-4T (formats.md §1.1, §2.2): `config.json` with the
//! packed `autobitlinear` offline quantization config and tied embeddings, `generation_config.json`,
//! and one `model.safetensors` with a bf16 embedding and norms, uint8 projections `[out/4, in]` in
//! transformers' 2-bit layout (§1.6) and a bf16 `weight_scale` `[1]` (γ, a multiplier) per projection.
//!
//! The sizes come from a fixed preset table (`PRESETS`), so nothing here is read from a user's file.
//! Every tensor draws from its own splitmix64 stream seeded by (seed, tensor name, row), and the
//! safetensors file is written by hand, tensor by tensor, in bounded chunks: the 2B-4T preset
//! (≈ 1.2 GB) never has more than a few megabytes in memory.

use crate::decoder::{Activation, DecoderConfig};
use crate::error::FrontendError;
use crate::hf_packing::pack_group;
use crate::safetensors_writer::{TensorEntry, header, write_safetensors};
use crate::staging::{write_folder, write_new};
use std::io::Write;
use std::path::Path;

/// The preset names, smallest first.
pub const PRESETS: &[&str] = &["micro", "tiny", "small", "base", "large", "xlarge", "2b4t"];

/// The RMSNorm epsilon and RoPE base every preset uses (those of 2B-4T).
pub const RMS_EPS: f64 = 1e-5;
/// The RoPE base every preset uses (that of 2B-4T).
pub const ROPE_THETA: f64 = 500000.0;
/// The largest size a preset may use, as the HF importer accepts.
const MAX_DIM: u64 = 1 << 20;
/// Absmean ternarization of a Gaussian zeroes |w| < 0.5·E|w| ≈ 0.4σ, that is about 31% of the
/// weights; this is that probability in units of 2⁻¹⁶.
const ZERO_THRESHOLD: u32 = 20316;
/// Float elements generated per chunk before they are written.
const CHUNK: usize = 1 << 16;

/// The sizes of a synthetic model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preset {
    /// The preset's name (one of `PRESETS`).
    pub name: &'static str,
    /// Vocabulary size.
    pub vocab: u64,
    /// Hidden size.
    pub hidden: u64,
    /// Feed-forward size.
    pub intermediate: u64,
    /// Decoder layers.
    pub layers: u64,
    /// Attention heads.
    pub heads: u64,
    /// Key/value heads.
    pub kv_heads: u64,
    /// `max_position_embeddings`.
    pub max_positions: u64,
    /// Beginning-of-sequence token id.
    pub bos: u64,
    /// End-of-sequence token id.
    pub eos: u64,
}

impl Preset {
    /// The size of one head (`hidden / heads`, as transformers derives it).
    pub fn head_dim(&self) -> u64 {
        self.hidden.checked_div(self.heads).unwrap_or(0)
    }

    /// Checks what transformers and the importer assume: sizes in range, multiples of 4 (the packing),
    /// heads dividing the hidden size, key/value heads dividing the heads, an even head size (RoPE).
    fn validate(&self) -> Result<(), String> {
        let dims = [
            ("vocab", self.vocab),
            ("hidden", self.hidden),
            ("intermediate", self.intermediate),
            ("layers", self.layers),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("max_positions", self.max_positions),
        ];
        if let Some((k, v)) = dims.iter().find(|(_, v)| *v == 0 || *v > MAX_DIM) {
            return Err(format!("{k} = {v} is out of range (1..={MAX_DIM})"));
        }
        if !self.hidden.is_multiple_of(self.heads) || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "heads ({}) must divide hidden ({}) and kv_heads ({}) must divide heads",
                self.heads, self.hidden, self.kv_heads
            ));
        }
        let kv_width = self.kv_heads * self.head_dim();
        if [self.hidden, self.intermediate, kv_width]
            .iter()
            .any(|d| !d.is_multiple_of(4))
            || !self.head_dim().is_multiple_of(2)
        {
            return Err("projection sizes must be multiples of 4 and the head size even".into());
        }
        if self.bos >= self.vocab || self.eos >= self.vocab {
            return Err(format!(
                "bos/eos ids must be below the vocabulary ({})",
                self.vocab
            ));
        }
        Ok(())
    }
}

/// The sizes of preset `name`, or `None` for a name not in `PRESETS`.
pub fn preset(name: &str) -> Option<Preset> {
    // (vocab, hidden, intermediate, layers, heads, kv_heads, max_positions, bos, eos)
    let s = match name {
        "micro" => (512, 64, 128, 2, 4, 2, 256, 1, 2),
        "tiny" => (1000, 256, 512, 4, 8, 4, 512, 1, 2),
        "small" => (32000, 512, 1536, 8, 8, 4, 2048, 1, 2),
        "base" => (32000, 1536, 4096, 24, 12, 4, 2048, 1, 2),
        "large" => (128256, 3072, 8192, 26, 24, 8, 4096, 128000, 128001),
        "xlarge" => (128256, 4096, 11008, 32, 32, 8, 4096, 128000, 128001),
        // microsoft/bitnet-b1.58-2B-4T, formats.md §1.1.
        "2b4t" => (128256, 2560, 6912, 30, 20, 5, 4096, 128000, 128001),
        _ => return None,
    };
    let name = PRESETS.iter().copied().find(|p| *p == name)?;
    let (vocab, hidden, intermediate, layers, heads, kv_heads, max_positions, bos, eos) = s;
    Some(Preset {
        name,
        vocab,
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
        max_positions,
        bos,
        eos,
    })
}

/// The decoder configuration the HF importer derives from a preset's checkpoint, built for `context`
/// tokens, so tests and benchmarks can emit IR for a preset without writing it.
pub fn decoder_config(preset: &Preset, context: u64) -> DecoderConfig {
    DecoderConfig {
        vocab: preset.vocab,
        hidden: preset.hidden,
        intermediate: preset.intermediate,
        layers: preset.layers,
        heads: preset.heads,
        kv_heads: preset.kv_heads,
        head_dim: preset.head_dim(),
        rms_eps: RMS_EPS,
        rope_theta: ROPE_THETA,
        rope_inv_freq: None,
        context,
        activation: Activation::Relu2,
        sub_norms: true,
        act_quant: true,
    }
}

/// What a synthetic checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynthSummary {
    /// Tensors in `model.safetensors`.
    pub tensors: usize,
    /// Size of `model.safetensors` in bytes (header included).
    pub bytes: u64,
    /// Parameters, counted as `bitnetc inspect` counts them (a packed byte holds four weights).
    pub parameters: u64,
}

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    /// N(0, 0.02²)-like values (the HF initializer range).
    Embedding,
    /// 1 plus small noise.
    Norm,
    /// γ ≈ 1/√(fan-in · P(t ≠ 0)), so that a projection roughly keeps its input's scale.
    Scale { fan_in: u64 },
    /// Ternary `[out, in]` packed to uint8 `[out/4, in]`.
    Packed { out: u64, inp: u64 },
}

/// One tensor of a synthetic checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthTensor {
    /// The name in `model.safetensors`.
    pub name: String,
    /// `BF16` or `U8`.
    pub dtype: &'static str,
    /// The stored shape.
    pub shape: Vec<u64>,
    fill: Fill,
}

impl SynthTensor {
    /// Bytes in the file.
    pub fn bytes(&self) -> u64 {
        let n = self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d));
        if self.dtype == "U8" {
            n
        } else {
            n.saturating_mul(2)
        }
    }

    /// Parameters, a packed byte counting as four.
    fn parameters(&self) -> u64 {
        match self.fill {
            Fill::Packed { out, inp } => out.saturating_mul(inp),
            _ => self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d)),
        }
    }
}

/// Every tensor of `preset`'s checkpoint, sorted by name (the order of the file).
pub fn tensor_table(preset: &Preset) -> Vec<SynthTensor> {
    let t = |name: String, dtype, shape: Vec<u64>, fill| SynthTensor {
        name,
        dtype,
        shape,
        fill,
    };
    let (h, f) = (preset.hidden, preset.intermediate);
    let (qw, kvw) = (
        preset.heads * preset.head_dim(),
        preset.kv_heads * preset.head_dim(),
    );
    let mut v = vec![
        t(
            "model.embed_tokens.weight".into(),
            "BF16",
            vec![preset.vocab, h],
            Fill::Embedding,
        ),
        t("model.norm.weight".into(), "BF16", vec![h], Fill::Norm),
    ];
    for l in 0..preset.layers {
        let pre = format!("model.layers.{l}");
        for (norm, width) in [
            ("input_layernorm", h),
            ("post_attention_layernorm", h),
            ("self_attn.attn_sub_norm", qw),
            ("mlp.ffn_sub_norm", f),
        ] {
            v.push(t(
                format!("{pre}.{norm}.weight"),
                "BF16",
                vec![width],
                Fill::Norm,
            ));
        }
        for (proj, out, inp) in [
            ("self_attn.q_proj", qw, h),
            ("self_attn.k_proj", kvw, h),
            ("self_attn.v_proj", kvw, h),
            ("self_attn.o_proj", h, qw),
            ("mlp.gate_proj", f, h),
            ("mlp.up_proj", f, h),
            ("mlp.down_proj", h, f),
        ] {
            let packed = Fill::Packed { out, inp };
            v.push(t(
                format!("{pre}.{proj}.weight"),
                "U8",
                vec![out.div_ceil(4), inp],
                packed,
            ));
            let scale = Fill::Scale { fan_in: inp };
            v.push(t(
                format!("{pre}.{proj}.weight_scale"),
                "BF16",
                vec![1],
                scale,
            ));
        }
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The table as the safetensors writer lists it.
fn entries(table: &[SynthTensor]) -> Vec<TensorEntry> {
    table
        .iter()
        .map(|t| TensorEntry {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
        })
        .collect()
}

/// What `write_checkpoint` would write for `preset`, without writing it.
pub fn summary(preset: &Preset) -> SynthSummary {
    let table = tensor_table(preset);
    let (h, data) = header(&entries(&table));
    SynthSummary {
        tensors: table.len(),
        bytes: 8u64.saturating_add(h.len() as u64).saturating_add(data),
        parameters: table
            .iter()
            .map(SynthTensor::parameters)
            .fold(0, u64::saturating_add),
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): one 64-bit state, good enough statistics for weights.
struct SplitMix64(u64);

impl SplitMix64 {
    /// An independent stream for (seed, tensor, index).
    fn stream(seed: u64, tensor: &str, index: u64) -> Self {
        // FNV-1a of the name, then two rounds of mixing so that nearby indices decorrelate.
        let name = tensor.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        });
        let mut s = SplitMix64(seed ^ name.rotate_left(21));
        let a = s.next();
        SplitMix64(a ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).skip()
    }

    fn skip(mut self) -> Self {
        self.next();
        self
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value with mean 0 and variance 1: the Irwin–Hall sum of four 16-bit uniforms, centred and
    /// scaled (its range is ±2√3).
    fn normalish(&mut self) -> f32 {
        let r = self.next();
        let sum: u32 = (0..4).map(|k| ((r >> (16 * k)) & 0xFFFF) as u32).sum();
        (sum as f32 / 65536.0 - 2.0) * 3f32.sqrt()
    }
}

/// Ternary row `row` of a projection: P(0) ≈ 0.31, ±1 equally likely otherwise.
fn ternary_row(rng: &mut SplitMix64, out: &mut [i8]) {
    for quad in out.chunks_mut(4) {
        let r = rng.next();
        for (k, t) in quad.iter_mut().enumerate() {
            let u = ((r >> (16 * k)) & 0xFFFF) as u32;
            *t = if u < ZERO_THRESHOLD {
                0
            } else if u < ZERO_THRESHOLD + (65536 - ZERO_THRESHOLD) / 2 {
                -1
            } else {
                1
            };
        }
    }
}

/// Writes one tensor's bytes.
fn write_tensor(w: &mut dyn Write, t: &SynthTensor, seed: u64) -> std::io::Result<()> {
    let bf16 = |x: f32| half::bf16::from_f32(x).to_bits().to_le_bytes();
    match t.fill {
        Fill::Packed { out, inp } => {
            let (rows, cols) = (out.div_ceil(4), inp as usize);
            let mut quarters: [Vec<i8>; 4] = Default::default();
            let mut bytes = vec![0u8; cols];
            for r in 0..rows {
                for (k, q) in quarters.iter_mut().enumerate() {
                    let row = r + k as u64 * rows;
                    q.clear();
                    // Rows past `out` (when out % 4 ≠ 0) hold zeros, which unpacking drops.
                    q.resize(cols, 0);
                    if row < out {
                        ternary_row(&mut SplitMix64::stream(seed, &t.name, row), q);
                    }
                }
                let [a, b, c, d] = &quarters;
                pack_group(&[a, b, c, d], &mut bytes);
                w.write_all(&bytes)?;
            }
        }
        Fill::Embedding | Fill::Norm | Fill::Scale { .. } => {
            let mut rng = SplitMix64::stream(seed, &t.name, 0);
            let n = t.shape.iter().product::<u64>();
            let value = |rng: &mut SplitMix64| match t.fill {
                Fill::Embedding => 0.02 * rng.normalish(),
                Fill::Scale { fan_in } => {
                    let u = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
                    let nonzero = 1.0 - ZERO_THRESHOLD as f32 / 65536.0;
                    (0.5 + u) / (fan_in as f32 * nonzero).sqrt()
                }
                _ => 1.0 + 0.02 * rng.normalish(),
            };
            let mut buf = Vec::with_capacity(2 * CHUNK);
            let mut left = n;
            while left > 0 {
                let m = left.min(CHUNK as u64);
                buf.clear();
                for _ in 0..m {
                    buf.extend_from_slice(&bf16(value(&mut rng)));
                }
                w.write_all(&buf)?;
                left -= m;
            }
        }
    }
    Ok(())
}

/// Writes `preset`'s checkpoint, drawn from `seed`, into `dir`: the folder is created (with its
/// parents) or must be empty; nothing is ever overwritten. The files are written into a staging
/// folder beside `dir` (`.NAME.PID.partial`), flushed to disk, and the folder is then renamed to
/// `dir`, so `dir` never holds a part of a checkpoint: a killed process leaves only the staging
/// folder, which the next synth beside it removes (when its process is gone).
pub fn write_checkpoint(
    preset: &Preset,
    dir: &Path,
    seed: u64,
) -> Result<SynthSummary, FrontendError> {
    preset
        .validate()
        .map_err(|m| FrontendError::format(dir, format!("preset \"{}\": {m}", preset.name)))?;
    write_folder(
        dir,
        false,
        "bitnetc synth does not overwrite files",
        |staging| write_files(preset, staging, seed),
    )?;
    Ok(summary(preset))
}

/// Writes the checkpoint's files into the (new, empty) folder `dir`, each flushed to disk.
fn write_files(preset: &Preset, dir: &Path, seed: u64) -> Result<(), FrontendError> {
    let config = serde_json::json!({
        "architectures": ["BitNetForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bitnetc_synth": {"preset": preset.name, "seed": seed},
        "bos_token_id": preset.bos,
        "eos_token_id": preset.eos,
        "hidden_act": "relu2",
        "hidden_size": preset.hidden,
        "initializer_range": 0.02,
        "intermediate_size": preset.intermediate,
        "max_position_embeddings": preset.max_positions,
        "model_type": "bitnet",
        "num_attention_heads": preset.heads,
        "num_hidden_layers": preset.layers,
        "num_key_value_heads": preset.kv_heads,
        "quantization_config": {
            "linear_class": "autobitlinear",
            "quant_method": "bitnet",
            "quantization_mode": "offline",
        },
        "rms_norm_eps": RMS_EPS,
        "rope_scaling": null,
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": true,
        "torch_dtype": "bfloat16",
        "use_cache": true,
        "vocab_size": preset.vocab,
    });
    let generation = serde_json::json!({
        "_from_model_config": true,
        "bos_token_id": preset.bos,
        "eos_token_id": preset.eos,
    });
    for (name, json) in [
        ("config.json", config),
        ("generation_config.json", generation),
    ] {
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| FrontendError::format(&dir.join(name), e.to_string()))?;
        write_new(&dir.join(name), format!("{text}\n").as_bytes())?;
    }
    let table = tensor_table(preset);
    let path = dir.join("model.safetensors");
    write_safetensors(&path, &entries(&table), |i, w| match table.get(i) {
        Some(t) => write_tensor(w, t, seed).map_err(|source| FrontendError::Io {
            path: path.clone(),
            source,
        }),
        None => Ok(()),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ternary_rows_have_the_intended_distribution() {
        let mut row = vec![0i8; 1 << 16];
        ternary_row(&mut SplitMix64::stream(1, "w", 0), &mut row);
        let count = |v: i8| row.iter().filter(|&&t| t == v).count() as f64 / row.len() as f64;
        assert!((count(0) - 0.31).abs() < 0.01, "{}", count(0));
        assert!((count(1) - count(-1)).abs() < 0.01);
    }

    #[test]
    fn every_preset_is_valid() {
        for name in PRESETS {
            let p = preset(name).unwrap();
            assert_eq!(p.validate(), Ok(()), "{name}");
        }
    }
}
