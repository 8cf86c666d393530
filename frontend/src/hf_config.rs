//! The `config.json` of a Hugging Face decoder: which architecture (BitNetForCausalLM,
//! LlamaForCausalLM, Qwen2ForCausalLM), its sizes, activation, rope (`hf_rope`), biases, tying, and
//! the projection form its `quantization_config` asks for (formats.md §1.5), checked for consistency
//! and turned into a `DecoderConfig`. Every refusal names the config file and the field.
//!
//! LlamaForCausalLM with a BitNet `quantization_config` is how the published ternary Llamas
//! (Falcon3-*-1.58bit, Llama3-8B-1.58) are stored: BitNet's projections without its sub-norms.
//! Qwen2ForCausalLM is Llama with q/k/v biases. Fields that do not change the computation here
//! (`pretraining_tp`, `is_bitnet_config`, dropout) are ignored.

use crate::decoder::{Activation, DecoderConfig};
use crate::error::FrontendError;
use crate::hf_rope;
use crate::model::ImportOptions;
use serde_json::Value;
use std::path::Path;

/// Sizes above this are rejected as implausible before anything is allocated from them.
const MAX_DIM: u64 = 1 << 20;

/// Reads `key` of the config as a positive size.
pub(crate) fn size(cfg: &Value, key: &str, file: &Path) -> Result<u64, FrontendError> {
    let v = cfg
        .get(key)
        .ok_or_else(|| FrontendError::format(file, format!("missing key \"{key}\"")))?;
    let n = v.as_u64().ok_or_else(|| {
        FrontendError::format(
            file,
            format!("\"{key}\" must be a positive integer, found {v}"),
        )
    })?;
    if n == 0 || n > MAX_DIM {
        return Err(FrontendError::format(
            file,
            format!("\"{key}\" = {n} is out of range (1..={MAX_DIM})"),
        ));
    }
    Ok(n)
}

pub(crate) fn float(
    cfg: &Value,
    key: &str,
    default: f64,
    file: &Path,
) -> Result<f64, FrontendError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x > 0.0)
            .ok_or_else(|| {
                FrontendError::format(
                    file,
                    format!("\"{key}\" must be a positive number, found {v}"),
                )
            }),
    }
}

pub(crate) fn string<'a>(
    cfg: &'a Value,
    key: &str,
    file: &Path,
) -> Result<Option<&'a str>, FrontendError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(FrontendError::format(
            file,
            format!("\"{key}\" must be a string, found {v}"),
        )),
    }
}

/// The projection form the quantization config asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Form {
    /// No quantization config: float weights.
    FullPrecision,
    /// `autobitlinear` online: float master weights ternarized at run time.
    Online,
    /// `autobitlinear` offline: packed ternary × γ.
    PackedScaleMul,
    /// `bitlinear` (or no linear class): packed ternary ÷ (1/γ).
    PackedScaleDiv,
}

/// Which attention projections carry a bias.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Biases {
    /// None (BitNet, Llama without `attention_bias`).
    None,
    /// q, k and v (Qwen2).
    Qkv,
    /// q, k, v and o (Llama's `attention_bias: true`).
    Qkvo,
}

/// What the importer takes from `config.json`.
pub(crate) struct Parsed {
    /// `architectures[0]`.
    pub(crate) architecture: String,
    /// Sizes and hyperparameters for the decoder emitter.
    pub(crate) config: DecoderConfig,
    /// `max_position_embeddings`.
    pub(crate) max_positions: u64,
    /// The lm_head is the embedding table.
    pub(crate) tied: bool,
    /// The projections' form.
    pub(crate) form: Form,
    /// `quantization_config.modules_to_not_convert`.
    pub(crate) not_converted: Vec<String>,
    /// The attention biases.
    pub(crate) biases: Biases,
    /// The rope type, for the summary (`default`, `llama3`).
    pub(crate) rope_type: &'static str,
}

/// Reads and checks `cfg`, the JSON of `file`.
pub(crate) fn parse_config(
    cfg: &Value,
    file: &Path,
    opts: &ImportOptions,
) -> Result<Parsed, FrontendError> {
    let err = |m: String| FrontendError::format(file, m);
    let architecture = cfg
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
        .ok_or_else(|| err("missing \"architectures\" (e.g. [\"BitNetForCausalLM\"])".into()))?
        .to_string();
    let (bitnet, qwen2) = match architecture.as_str() {
        "BitNetForCausalLM" => (true, false),
        "LlamaForCausalLM" => (false, false),
        "Qwen2ForCausalLM" => (false, true),
        other => {
            return Err(err(format!(
                "architecture \"{other}\" is not supported (supported: BitNetForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM)"
            )));
        }
    };
    let hidden = size(cfg, "hidden_size", file)?;
    let heads = size(cfg, "num_attention_heads", file)?;
    let kv_heads = match cfg.get("num_key_value_heads") {
        None | Some(Value::Null) => heads,
        Some(_) => size(cfg, "num_key_value_heads", file)?,
    };
    if heads % kv_heads != 0 {
        return Err(err(format!(
            "num_key_value_heads ({kv_heads}) does not divide num_attention_heads ({heads})"
        )));
    }
    let head_dim = match cfg.get("head_dim") {
        None | Some(Value::Null) => {
            if hidden % heads != 0 {
                return Err(err(format!(
                    "hidden_size ({hidden}) is not divisible by num_attention_heads ({heads})"
                )));
            }
            hidden / heads
        }
        Some(_) => size(cfg, "head_dim", file)?,
    };
    if head_dim % 2 != 0 {
        return Err(err(format!(
            "the head size ({head_dim}) must be even for RoPE"
        )));
    }
    let activation =
        match string(cfg, "hidden_act", file)?.unwrap_or(if bitnet { "relu2" } else { "silu" }) {
            "relu2" => Activation::Relu2,
            "silu" => Activation::Silu,
            other => {
                return Err(err(format!(
                    "\"hidden_act\" = \"{other}\" is not supported (relu2, silu)"
                )));
            }
        };
    let max_positions = size(cfg, "max_position_embeddings", file)?;
    let theta_default = if bitnet { 500000.0 } else { 10000.0 };
    let rope = hf_rope::parse(cfg, file, head_dim, max_positions, theta_default)?;
    let flag = |key: &str| -> Result<bool, FrontendError> {
        match cfg.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(err(format!("\"{key}\" must be true or false, found {v}"))),
        }
    };
    let biases = if qwen2 {
        Biases::Qkv
    } else if flag("attention_bias")? {
        Biases::Qkvo
    } else {
        Biases::None
    };
    if flag("mlp_bias")? {
        return Err(err(
            "\"mlp_bias\": true is not supported (biases on gate/up/down projections)".into(),
        ));
    }
    if flag("use_sliding_window")? {
        return Err(err(
            "\"use_sliding_window\": true is not supported (full attention only)".into(),
        ));
    }
    let context = opts.context.unwrap_or(max_positions);
    if context == 0 {
        return Err(err(
            "a context of 0 tokens: the context (--context) must hold at least 1 token".into(),
        ));
    }
    if context > max_positions {
        return Err(err(format!(
            "a context of {context} tokens is more than the model's {max_positions} (max_position_embeddings)"
        )));
    }
    let tied = match cfg.get("tie_word_embeddings") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(err(format!(
                "\"tie_word_embeddings\" must be true or false, found {v}"
            )));
        }
    };
    let (form, not_converted) = match cfg.get("quantization_config").filter(|v| !v.is_null()) {
        None => (Form::FullPrecision, Vec::new()),
        Some(q) => {
            let method = string(q, "quant_method", file)?;
            if method != Some("bitnet") {
                return Err(err(format!(
                    "quantization_config.quant_method {method:?} is not supported (bitnet)"
                )));
            }
            if q.get("use_rms_norm").and_then(Value::as_bool) == Some(true) {
                return Err(err(
                    "quantization_config.use_rms_norm = true is not supported".into(),
                ));
            }
            let class = string(q, "linear_class", file)?.unwrap_or("bitlinear");
            let mode = string(q, "quantization_mode", file)?.unwrap_or("offline");
            let form = match (class, mode) {
                ("autobitlinear", "online") => Form::Online,
                ("autobitlinear", "offline") => Form::PackedScaleMul,
                ("bitlinear", _) => Form::PackedScaleDiv,
                _ => {
                    return Err(err(format!(
                        "quantization_config linear_class \"{class}\" / quantization_mode \"{mode}\" is not supported"
                    )));
                }
            };
            let skip = match q.get("modules_to_not_convert") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            };
            (form, skip)
        }
    };
    if form == Form::PackedScaleMul && biases != Biases::None {
        // AutoBitLinear multiplies its bias by γ with the product; no checkpoint stores that.
        return Err(err(
            "attention biases with quantization_config linear_class \"autobitlinear\" (offline) are not supported".into(),
        ));
    }
    let config = DecoderConfig {
        vocab: size(cfg, "vocab_size", file)?,
        hidden,
        intermediate: size(cfg, "intermediate_size", file)?,
        layers: size(cfg, "num_hidden_layers", file)?,
        heads,
        kv_heads,
        head_dim,
        rms_eps: float(cfg, "rms_norm_eps", 1e-6, file)?,
        rope_theta: rope.theta,
        rope_inv_freq: rope.inv_freq,
        context,
        activation,
        sub_norms: bitnet,
        act_quant: form != Form::FullPrecision,
    };
    Ok(Parsed {
        architecture,
        config,
        max_positions,
        tied,
        form,
        not_converted,
        biases,
        rope_type: rope.kind,
    })
}
