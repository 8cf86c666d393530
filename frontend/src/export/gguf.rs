//! The GGUF side of `bitnetc export`: a GGUF v3 file with architecture `bitnet-b1.58` (relu², the
//! sub-norms: microsoft/bitnet-b1.58-2B-4T's layout and bitnet.cpp's name for it; `bitnet` with
//! `bitnet.hidden_activation = "silu"` for SiLU models with sub-norms), the keys the GGUF importer and
//! llama.cpp read (formats.md §4.6), each projection as TQ2_0 (one f16 `d` = γ in every block, so
//! γ is rounded to f16) or I2_S (x86 `ACT_PARALLEL` layout, γ as the f32 trailer scale: exact),
//! the norms and the embedding (and an untied output head) as F32, and the tokenizer metadata
//! (`vocab`).

use super::gguf_writer::{GgufTensor, gguf_bytes};
use super::{ExportSummary, ROLES, Source, layer_projections};
use crate::decoder::Activation;
use crate::error::FrontendError;
use crate::gguf::GgmlType;
use crate::gguf::GgufValue;
use crate::gguf::blocks::{QK_I2_S, QK_K, encode_i2_s, encode_tq2_0};

/// The ggml type of the exported projections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufTernary {
    /// TQ2_0: 256-element blocks with an f16 scale (llama.cpp and bitnet.cpp).
    Tq2_0,
    /// I2_S: bitnet.cpp's 2-bit codes with one f32 scale per tensor.
    I2S,
}

impl GgufTernary {
    /// The name the CLI spells.
    pub fn name(self) -> &'static str {
        match self {
            GgufTernary::Tq2_0 => "tq2_0",
            GgufTernary::I2S => "i2_s",
        }
    }

    /// The type named `s`, if any.
    pub fn parse(s: &str) -> Option<GgufTernary> {
        [GgufTernary::Tq2_0, GgufTernary::I2S]
            .into_iter()
            .find(|t| t.name() == s)
    }

    /// `general.file_type`: llama.cpp's `MOSTLY_TQ2_0` (37), bitnet.cpp's `MOSTLY_I2_S` (40).
    fn file_type(self) -> u32 {
        match self {
            GgufTernary::Tq2_0 => 37,
            GgufTernary::I2S => 40,
        }
    }
}

/// llama.cpp's tensor name of each role in `ROLES`.
fn gguf_role(role: &str) -> &'static str {
    match role {
        "q" => "attn_q",
        "k" => "attn_k",
        "v" => "attn_v",
        "o" => "attn_output",
        "gate" => "ffn_gate",
        "up" => "ffn_up",
        _ => "ffn_down",
    }
}

/// The bytes of `src` as a GGUF file with projections of type `ty`, and what was written.
pub fn gguf_file(src: &Source, ty: GgufTernary) -> Result<(Vec<u8>, ExportSummary), FrontendError> {
    let spec = &src.spec;
    let c = &spec.config;
    let err = |m: String| FrontendError::format(&src.path, m);
    let arch = match (c.sub_norms, c.activation) {
        (true, Activation::Relu2) => "bitnet-b1.58",
        (true, Activation::Silu) => "bitnet",
        (false, _) => {
            return Err(err(
                "GGUF export writes BitNet architectures (bitnet-b1.58: sub-norms before o_proj \
                 and down_proj); this model has none (a ternary Llama): export it with --format hf"
                    .into(),
            ));
        }
    };
    if let Some(l) = spec.layers.iter().position(|l| {
        l.bias.q.is_some() || l.bias.k.is_some() || l.bias.v.is_some() || l.bias.o.is_some()
    }) {
        return Err(err(format!(
            "layer {l} has attention biases, which {arch} GGUF files cannot hold"
        )));
    }
    if c.rope_inv_freq.is_some() {
        return Err(err(format!(
            "scaled rope frequencies cannot be written to a {arch} GGUF file"
        )));
    }
    let mut notes = Vec::new();
    let block = match ty {
        GgufTernary::Tq2_0 => QK_K,
        GgufTernary::I2S => QK_I2_S,
    };
    let sizes = src.sizes();
    for (r, &(_, i)) in sizes.iter().enumerate() {
        if !i.is_multiple_of(block) {
            return Err(err(format!(
                "{} rows of {i} elements are not whole {}-element {} blocks{}",
                gguf_role(ROLES[r]),
                block,
                ty.name().to_uppercase(),
                if ty == GgufTernary::Tq2_0 && i.is_multiple_of(QK_I2_S) {
                    " (--gguf-type i2_s takes 128-element blocks)"
                } else {
                    ""
                }
            )));
        }
    }
    let (v, h) = (c.vocab as usize, c.hidden as usize);
    let qw = (c.heads * c.head_dim) as usize;
    let f = c.intermediate as usize;
    let mut tensors = Vec::new();
    let float = |out: &str, name: &str, shape: Vec<usize>| -> Result<GgufTensor, FrontendError> {
        let vals = src.float(name, &shape)?;
        Ok(GgufTensor {
            name: out.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type: GgmlType::F32,
            data: {
                let mut data = Vec::with_capacity(vals.len() * 4);
                vals.iter()
                    .for_each(|x| data.extend_from_slice(&x.to_le_bytes()));
                data
            },
        })
    };
    tensors.push(float("token_embd.weight", &spec.embed, vec![v, h])?);
    let mut inexact_inverse = false;
    let mut f16_rounded = 0usize;
    for (l, lw) in spec.layers.iter().enumerate() {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        tensors.push(float(&b("attn_norm"), &lw.input_norm, vec![h])?);
        for (r, (p, &(o, i))) in layer_projections(lw).iter().zip(&sizes).enumerate() {
            let name = b(gguf_role(ROLES[r]));
            let t = src.projection(p, o, i)?;
            inexact_inverse |= matches!(t.scale, super::Scale::InvGamma(_));
            let gamma = t.scale.gamma();
            let (ggml_type, data) = match ty {
                GgufTernary::Tq2_0 => {
                    let d = half::f16::from_f32(gamma);
                    if !d.is_finite() || (d.to_f32() == 0.0 && gamma != 0.0) {
                        return Err(err(format!(
                            "tensor \"{name}\": γ = {gamma} does not fit TQ2_0's f16 scale \
                             (use --gguf-type i2_s, whose scale is f32)"
                        )));
                    }
                    if d.to_f32() != gamma {
                        f16_rounded += 1;
                    }
                    (GgmlType::TQ2_0, encode_tq2_0(&t.values, d))
                }
                GgufTernary::I2S => (GgmlType::I2_S, encode_i2_s(&t.values, gamma)),
            };
            let data = data.map_err(|m| err(format!("tensor \"{name}\": {m}")))?;
            tensors.push(GgufTensor {
                name,
                dims: vec![i as u64, o as u64],
                ggml_type,
                data,
            });
            if r == 3 {
                // The sub-norm sits between the attention and o_proj; the order of tensors in the
                // file does not matter to readers, this one follows the graph.
                if let Some(n) = &lw.attn_sub_norm {
                    tensors.insert(tensors.len() - 1, float(&b("attn_sub_norm"), n, vec![qw])?);
                }
                tensors.push(float(&b("ffn_norm"), &lw.post_norm, vec![h])?);
            }
            if r == 5
                && let Some(n) = &lw.ffn_sub_norm
            {
                tensors.push(float(&b("ffn_sub_norm"), n, vec![f])?);
            }
        }
    }
    tensors.push(float("output_norm.weight", &spec.final_norm, vec![h])?);
    if spec.lm_head != spec.embed {
        tensors.push(float("output.weight", &spec.lm_head, vec![v, h])?);
    }
    if inexact_inverse {
        notes.push(
            "the source stores 1/γ (bitlinear): γ = 1/scale, rounded to f32 (not exact)".into(),
        );
    }
    if f16_rounded > 0 {
        notes.push(format!(
            "TQ2_0: {f16_rounded} projection scale(s) γ rounded to f16 (ternary values exact; \
             --gguf-type i2_s keeps γ in f32)"
        ));
    }
    let (tok, tok_notes) = super::vocab::tokenizer_metadata(src, v)?;
    notes.extend(tok_notes);
    // The source GGUF's name, else the source's file or folder name.
    let name = crate::gguf::GgufFile::open(&src.path)
        .ok()
        .and_then(|f| f.get_str("general.name").ok().map(str::to_string))
        .or_else(|| {
            src.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let u = |x: u64| GgufValue::U32(u32::try_from(x).unwrap_or(u32::MAX));
    let k = |key: &str| format!("{arch}.{key}");
    let mut meta: Vec<(String, GgufValue)> = vec![
        (
            "general.architecture".into(),
            GgufValue::String(arch.into()),
        ),
        ("general.name".into(), GgufValue::String(name)),
        ("general.file_type".into(), GgufValue::U32(ty.file_type())),
        ("general.quantization_version".into(), GgufValue::U32(2)),
        (k("vocab_size"), u(c.vocab)),
        (k("context_length"), u(c.context)),
        (k("embedding_length"), u(c.hidden)),
        (k("block_count"), u(c.layers)),
        (k("feed_forward_length"), u(c.intermediate)),
        (k("attention.head_count"), u(c.heads)),
        (k("attention.head_count_kv"), u(c.kv_heads)),
        (
            k("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(c.rms_eps as f32),
        ),
        (k("rope.dimension_count"), u(c.head_dim)),
        (k("rope.freq_base"), GgufValue::F32(c.rope_theta as f32)),
    ];
    if arch == "bitnet" {
        meta.push((k("hidden_activation"), GgufValue::String("silu".into())));
    }
    if f64::from(c.rms_eps as f32) != c.rms_eps || f64::from(c.rope_theta as f32) != c.rope_theta {
        notes.push(format!(
            "GGUF stores rms_norm_eps and rope_theta as f32: {:e} and {} become {:e} and {} \
             (the re-imported model's logits may differ from the source's in the last bits)",
            c.rms_eps,
            c.rope_theta,
            f64::from(c.rms_eps as f32),
            f64::from(c.rope_theta as f32)
        ));
    }
    meta.extend(tok);
    let bytes = gguf_bytes(&meta, &tensors).map_err(err)?;
    Ok((
        bytes,
        ExportSummary {
            files: Vec::new(),
            projections: spec.layers.len() * ROLES.len(),
            notes,
        },
    ))
}
