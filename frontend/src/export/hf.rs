//! The HF side of `bitnetc export`: a folder that transformers' `BitNetForCausalLM` (or
//! `LlamaForCausalLM` for BitNet-quantized Llamas) loads in BitNet's packed offline form, as
//! microsoft/bitnet-b1.58-2B-4T ships it: `config.json` whose `quantization_config` is
//! `{quant_method: bitnet, linear_class: autobitlinear, quantization_mode: offline}` (or `bitlinear`
//! when every source projection stores 1/γ, which keeps those scales exact), `model.safetensors` with
//! each projection as uint8 `[ceil(out/4), in]` in transformers' 2-bit layout and its `weight_scale`
//! `[1]`, the norms and embedding in the dtype the source stored them (F32 otherwise), the tokenizer
//! files the source folder has, and `generation_config.json`.
//!
//! `--with-masters` adds `master_weights.safetensors`: the f32 master weights of an online source,
//! under transformers' names (`model.layers.N.self_attn.q_proj.weight`, …), which the online form of
//! the checkpoint (`quantization_mode: online`) loads as its projections' weights.

use super::{ExportSummary, ROLES, Scale, Source, layer_projections};
use crate::decoder::{Activation, Linear};
use crate::detect::ModelFormat;
use crate::error::FrontendError;
use crate::safetensors_writer::{TensorEntry, write_safetensors};
use crate::staging::{write_folder, write_new};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// The file `--with-masters` writes the master weights to.
pub const MASTERS_FILE: &str = "master_weights.safetensors";

/// Tokenizer and generation files copied from an HF source when it has them.
const COPIED: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// transformers' module path of each role in `ROLES`.
fn module(role: &str) -> &'static str {
    match role {
        "q" => "self_attn.q_proj",
        "k" => "self_attn.k_proj",
        "v" => "self_attn.v_proj",
        "o" => "self_attn.o_proj",
        "gate" => "mlp.gate_proj",
        "up" => "mlp.up_proj",
        _ => "mlp.down_proj",
    }
}

/// Where a tensor of the output comes from.
enum Payload {
    /// A float tensor of the source (by its store name), of this shape.
    Float { name: String, shape: Vec<usize> },
    /// Layer `l`'s projection `r` (index into `ROLES`), packed.
    Packed { l: usize, r: usize },
    /// Its scale.
    Scale { l: usize, r: usize },
    /// Its master weights.
    Master { name: String, shape: Vec<usize> },
}

/// Writes `src` as an HF folder `out` (see the module header), with the files `extra` (name,
/// bytes: the tokenizer files a caller made from a GGUF source's vocabulary). `replace` replaces an
/// existing non-empty folder once the new one is complete.
pub fn hf(
    src: &Source,
    out: &Path,
    with_masters: bool,
    replace: bool,
    extra: &[(String, Vec<u8>)],
) -> Result<ExportSummary, FrontendError> {
    let spec = &src.spec;
    let c = &spec.config;
    if with_masters && !src.has_masters() {
        return Err(FrontendError::format(
            &src.path,
            "--with-masters: the model has no master weights (its projections are stored ternary); \
             only an online (full-precision) source has them",
        ));
    }
    let all_div = spec.layers.iter().all(|l| {
        layer_projections(l)
            .iter()
            .all(|p| matches!(p, Linear::TernaryScaleDiv { .. }))
    });
    let linear_class = if all_div {
        "bitlinear"
    } else {
        "autobitlinear"
    };
    let biased = spec.layers.iter().any(|l| {
        l.bias.q.is_some() || l.bias.k.is_some() || l.bias.v.is_some() || l.bias.o.is_some()
    });
    if biased && !all_div {
        return Err(FrontendError::format(
            &src.path,
            "a model with attention biases is written in BitNet's packed form only as `bitlinear` \
             (scales stored as 1/γ), which keeps its scales exact only when the source stores 1/γ; \
             this one stores γ (or master weights), and `autobitlinear` with biases is not a form \
             the importers accept",
        ));
    }
    let mut notes = Vec::new();
    let any_div = spec.layers.iter().any(|l| {
        layer_projections(l)
            .iter()
            .any(|p| matches!(p, Linear::TernaryScaleDiv { .. }))
    });
    if any_div && !all_div {
        notes.push(
            "some projections stored 1/γ: written as γ = 1/scale rounded to f32 (not exact)".into(),
        );
    }
    // The table of tensors, by output name.
    let mut table: BTreeMap<String, (TensorEntry, Payload)> = BTreeMap::new();
    let (v, h) = (c.vocab as usize, c.hidden as usize);
    let qw = (c.heads * c.head_dim) as usize;
    let kvw = (c.kv_heads * c.head_dim) as usize;
    let f = c.intermediate as usize;
    add_float(
        &mut table,
        src,
        "model.embed_tokens.weight".into(),
        &spec.embed,
        vec![v, h],
    );
    add_float(
        &mut table,
        src,
        "model.norm.weight".into(),
        &spec.final_norm,
        vec![h],
    );
    let tied = spec.lm_head == spec.embed;
    if !tied {
        add_float(
            &mut table,
            src,
            "lm_head.weight".into(),
            &spec.lm_head,
            vec![v, h],
        );
    }
    let sizes = src.sizes();
    let mut masters: Vec<(TensorEntry, Payload)> = Vec::new();
    for (l, lw) in spec.layers.iter().enumerate() {
        let pre = format!("model.layers.{l}");
        add_float(
            &mut table,
            src,
            format!("{pre}.input_layernorm.weight"),
            &lw.input_norm,
            vec![h],
        );
        add_float(
            &mut table,
            src,
            format!("{pre}.post_attention_layernorm.weight"),
            &lw.post_norm,
            vec![h],
        );
        if let Some(n) = &lw.attn_sub_norm {
            add_float(
                &mut table,
                src,
                format!("{pre}.self_attn.attn_sub_norm.weight"),
                n,
                vec![qw],
            );
        }
        if let Some(n) = &lw.ffn_sub_norm {
            add_float(
                &mut table,
                src,
                format!("{pre}.mlp.ffn_sub_norm.weight"),
                n,
                vec![f],
            );
        }
        for (proj, bias, width) in [
            ("q_proj", &lw.bias.q, qw),
            ("k_proj", &lw.bias.k, kvw),
            ("v_proj", &lw.bias.v, kvw),
            ("o_proj", &lw.bias.o, h),
        ] {
            if let Some(b) = bias {
                add_float(
                    &mut table,
                    src,
                    format!("{pre}.self_attn.{proj}.bias"),
                    b,
                    vec![width],
                );
            }
        }
        for (r, (p, &(o, i))) in layer_projections(lw).iter().zip(&sizes).enumerate() {
            let name = format!("{pre}.{}.weight", module(ROLES[r]));
            let packed = TensorEntry {
                name: name.clone(),
                dtype: "U8",
                shape: vec![o.div_ceil(4) as u64, i as u64],
            };
            table.insert(name.clone(), (packed, Payload::Packed { l, r }));
            let scale_dtype = match p {
                Linear::TernaryScaleMul { scale, .. } | Linear::TernaryScaleDiv { scale, .. } => {
                    src.float_dtype(scale)
                }
                _ => "F32",
            };
            let scale = TensorEntry {
                name: format!("{name}_scale"),
                dtype: scale_dtype,
                shape: vec![1],
            };
            table.insert(format!("{name}_scale"), (scale, Payload::Scale { l, r }));
            if let (true, Linear::Online { master }) = (with_masters, p) {
                let entry = TensorEntry {
                    name,
                    dtype: src.float_dtype(master),
                    shape: vec![o as u64, i as u64],
                };
                let payload = Payload::Master {
                    name: master.clone(),
                    shape: vec![o, i],
                };
                masters.push((entry, payload));
            }
        }
    }
    let config = config_json(src, linear_class, tied)?;
    let tokenizer_note = match src.format {
        ModelFormat::Hf => None,
        _ if extra.iter().any(|(name, _)| name == "tokenizer.json") => None,
        _ => Some(
            "no tokenizer.json written: the GGUF file's vocabulary could not be converted \
             (take the tokenizer files from the model's HF release)"
                .to_string(),
        ),
    };
    notes.extend(tokenizer_note);
    let mut files = Vec::new();
    write_folder(out, replace, "--force replaces it", |dir| {
        let json_file = |name: &str, v: &Value| -> Result<(), FrontendError> {
            let text = serde_json::to_string_pretty(v)
                .map_err(|e| FrontendError::format(&dir.join(name), e.to_string()))?;
            write_new(&dir.join(name), format!("{text}\n").as_bytes())
        };
        json_file("config.json", &config)?;
        for (name, bytes) in extra {
            write_new(&dir.join(name), bytes)?;
        }
        let mut copied_generation = false;
        if src.format == ModelFormat::Hf {
            for name in COPIED {
                let from = src.path.join(name);
                if from.is_file() {
                    let bytes = std::fs::read(&from).map_err(|source| FrontendError::Io {
                        path: from.clone(),
                        source,
                    })?;
                    write_new(&dir.join(name), &bytes)?;
                    copied_generation |= name == "generation_config.json";
                }
            }
        }
        if !copied_generation {
            let mut g = json!({"_from_model_config": true});
            for k in ["bos_token_id", "eos_token_id"] {
                if let Some(id) = config.get(k).filter(|v| !v.is_null()) {
                    g[k] = id.clone();
                }
            }
            json_file("generation_config.json", &g)?;
        }
        let mut scales: BTreeMap<(usize, usize), Scale> = BTreeMap::new();
        let (entries, payloads): (Vec<&TensorEntry>, Vec<&Payload>) =
            table.values().map(|(e, p)| (e, p)).unzip();
        let entries: Vec<TensorEntry> = entries.into_iter().cloned().collect();
        let model = dir.join("model.safetensors");
        write_safetensors(&model, &entries, |i, w| {
            let (Some(e), Some(p)) = (entries.get(i), payloads.get(i)) else {
                return Ok(());
            };
            write_payload(src, e, p, &mut scales, w, &model)
        })?;
        if !masters.is_empty() {
            let path = dir.join(super::MASTERS_FILE);
            let entries: Vec<TensorEntry> = masters.iter().map(|(e, _)| e.clone()).collect();
            write_safetensors(&path, &entries, |i, w| {
                match (entries.get(i), masters.get(i)) {
                    (Some(e), Some((_, p))) => write_payload(src, e, p, &mut scales, w, &path),
                    _ => Ok(()),
                }
            })?;
        }
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|source| FrontendError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        files = names.into_iter().map(|n| out.join(n)).collect();
        Ok(())
    })?;
    Ok(ExportSummary {
        files,
        projections: spec.layers.len() * ROLES.len(),
        notes,
    })
}

/// Adds float tensor `src_name` of the source to `table` as `out_name`, in the source's dtype.
fn add_float(
    table: &mut BTreeMap<String, (TensorEntry, Payload)>,
    src: &Source,
    out_name: String,
    src_name: &str,
    shape: Vec<usize>,
) {
    let entry = TensorEntry {
        name: out_name.clone(),
        dtype: src.float_dtype(src_name),
        shape: shape.iter().map(|&d| d as u64).collect(),
    };
    let payload = Payload::Float {
        name: src_name.to_string(),
        shape,
    };
    table.insert(out_name, (entry, payload));
}

/// Writes one tensor's bytes.
fn write_payload(
    src: &Source,
    e: &TensorEntry,
    p: &Payload,
    scales: &mut BTreeMap<(usize, usize), Scale>,
    w: &mut dyn Write,
    file: &Path,
) -> Result<(), FrontendError> {
    let io = |source| FrontendError::Io {
        path: file.to_path_buf(),
        source,
    };
    // Converted and written in bounded chunks.
    let floats = |v: &[f32], w: &mut dyn Write| -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(4 << 16);
        for chunk in v.chunks(1 << 16) {
            buf.clear();
            for &x in chunk {
                match e.dtype {
                    "BF16" => buf.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
                    "F16" => buf.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
                    _ => buf.extend_from_slice(&x.to_le_bytes()),
                }
            }
            w.write_all(&buf)?;
        }
        Ok(())
    };
    match p {
        Payload::Float { name, shape } | Payload::Master { name, shape } => {
            let v = src.float(name, shape)?;
            floats(&v, w).map_err(io)
        }
        Payload::Packed { l, r } => {
            let t = projection(src, *l, *r)?;
            let packed = crate::hf_packing::pack(&t.values, t.out, t.inp)
                .map_err(|m| FrontendError::format(file, format!("tensor \"{}\": {m}", e.name)))?;
            scales.insert((*l, *r), t.scale);
            w.write_all(&packed).map_err(io)
        }
        Payload::Scale { l, r } => {
            let s = match scales.get(&(*l, *r)) {
                Some(s) => *s,
                None => projection(src, *l, *r)?.scale,
            };
            let value = match s {
                Scale::InvGamma(x) if is_bitlinear(src) => x,
                s => s.gamma(),
            };
            floats(&[value], w).map_err(io)
        }
    }
}

/// Whether every projection stores 1/γ (the folder is then written as `bitlinear`).
fn is_bitlinear(src: &Source) -> bool {
    src.spec.layers.iter().all(|l| {
        layer_projections(l)
            .iter()
            .all(|p| matches!(p, Linear::TernaryScaleDiv { .. }))
    })
}

/// Layer `l`'s projection `r` as ternary values and a scale.
fn projection(src: &Source, l: usize, r: usize) -> Result<super::TernaryProjection, FrontendError> {
    let lw = src
        .spec
        .layers
        .get(l)
        .ok_or_else(|| FrontendError::format(&src.path, format!("internal: no layer {l}")))?;
    let p = layer_projections(lw)[r.min(6)];
    let (o, i) = src.sizes()[r.min(6)];
    src.projection(p, o, i)
}

/// `config.json`: the source's, with the packed quantization config, for an HF source; built from
/// the decoder's sizes (and the GGUF's bos/eos) for a GGUF source.
fn config_json(src: &Source, linear_class: &str, tied: bool) -> Result<Value, FrontendError> {
    let quant = json!({
        "linear_class": linear_class,
        "quant_method": "bitnet",
        "quantization_mode": "offline",
    });
    if src.format == ModelFormat::Hf {
        let path = src.path.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| FrontendError::Io {
            path: path.clone(),
            source,
        })?;
        let mut cfg: Value = serde_json::from_str(&text)
            .map_err(|e| FrontendError::format(&path, format!("malformed JSON: {e}")))?;
        let keep = cfg
            .get("quantization_config")
            .and_then(|q| q.get("modules_to_not_convert"))
            .filter(|v| !v.is_null())
            .cloned();
        let mut quant = quant;
        if let Some(k) = keep {
            quant["modules_to_not_convert"] = k;
        }
        cfg["quantization_config"] = quant;
        cfg["tie_word_embeddings"] = tied.into();
        return Ok(cfg);
    }
    let c = &src.spec.config;
    if c.rope_inv_freq.is_some() {
        return Err(FrontendError::format(
            &src.path,
            "scaled rope frequencies cannot be written to config.json yet",
        ));
    }
    let gguf = crate::gguf::GgufFile::open(&src.path)?;
    let tok = gguf.tokenizer().ok();
    let bitnet = c.sub_norms;
    Ok(json!({
        "architectures": [if bitnet { "BitNetForCausalLM" } else { "LlamaForCausalLM" }],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": tok.as_ref().and_then(|t| t.bos_token_id),
        "eos_token_id": tok.as_ref().and_then(|t| t.eos_token_id),
        "head_dim": c.head_dim,
        "hidden_act": match c.activation { Activation::Relu2 => "relu2", Activation::Silu => "silu" },
        "hidden_size": c.hidden,
        "initializer_range": 0.02,
        "intermediate_size": c.intermediate,
        "max_position_embeddings": c.context,
        "model_type": if bitnet { "bitnet" } else { "llama" },
        "num_attention_heads": c.heads,
        "num_hidden_layers": c.layers,
        "num_key_value_heads": c.kv_heads,
        "quantization_config": quant,
        "rms_norm_eps": c.rms_eps,
        "rope_scaling": null,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
        "use_cache": true,
        "vocab_size": c.vocab,
    }))
}
