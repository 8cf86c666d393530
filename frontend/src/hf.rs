//! The Hugging Face importer: a folder with `config.json` and `model.safetensors` (or a sharded
//! `model.safetensors.index.json`), architectures `BitNetForCausalLM` (every on-disk form, formats.md §1)
//! and `LlamaForCausalLM` (full precision).
//!
//! It reads the config (checking it is consistent), decides each projection's form from the
//! `quantization_config` (`autobitlinear` offline: packed ternary × γ; `bitlinear` or absent linear
//! class: packed ternary ÷ (1/γ); `online`: float master weights) and checks that every tensor the model
//! needs is present with the right dtype and shape and that nothing unexpected is there, before it emits
//! IR through `decoder`. Weights stay in the files: `HfWeights` maps each IR weight name to a tensor of
//! a shard and unpacks 2-bit packed weights only when the interpreter or a pass asks.

use crate::decoder::{Activation, DecoderConfig, DecoderSpec, LayerWeights, Linear, emit};
use crate::error::FrontendError;
use crate::hf_packing;
use crate::model::{ImportOptions, ImportedModel, ModelSummary, TensorSummary};
use crate::safetensors_store::SafetensorsStore;
use bitnet_ir::weights::finish_load;
use bitnet_ir::{Data, ElemType, Tensor, WeightError, WeightStore};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Sizes above this are rejected as implausible before anything is allocated from them.
const MAX_DIM: u64 = 1 << 20;

/// How a weight is stored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Packing {
    /// As the IR declares it (after the usual float widening).
    Plain,
    /// transformers' 2-bit packing, unpacked to ternary on load.
    Packed2Bit,
}

/// Where each IR weight lives.
struct Entry {
    shard: usize,
    packing: Packing,
}

/// The weights of an HF checkpoint: one store per shard, and the table of names.
pub struct HfWeights {
    dir: PathBuf,
    shards: Vec<SafetensorsStore>,
    entries: BTreeMap<String, Entry>,
}

impl WeightStore for HfWeights {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn load(&self, name: &str, elem: ElemType, shape: &[usize]) -> Result<Tensor, WeightError> {
        let missing = || WeightError::Missing {
            name: name.to_string(),
            store: self.describe(),
        };
        let entry = self.entries.get(name).ok_or_else(missing)?;
        let shard = self.shards.get(entry.shard).ok_or_else(missing)?;
        let stored = shard.read(name)?;
        match entry.packing {
            Packing::Plain => finish_load(shard, name, stored, elem, shape),
            Packing::Packed2Bit => {
                let read_err = |reason: String| WeightError::Read {
                    name: name.to_string(),
                    store: shard.describe(),
                    reason,
                };
                let (Data::U8(bytes), [rows, cols], [out, in_]) =
                    (&stored.data, stored.shape.as_slice(), shape)
                else {
                    return Err(read_err(format!(
                        "expected a packed u8 matrix for a {shape:?} ternary weight"
                    )));
                };
                if cols != in_ || elem != ElemType::Ternary {
                    return Err(read_err(format!(
                        "packed [{rows}, {cols}] does not hold {elem} {shape:?}"
                    )));
                }
                let w = hf_packing::unpack(bytes, *rows, *cols, *out).map_err(read_err)?;
                Tensor::new(shape.to_vec(), Data::Ternary(w))
                    .ok_or_else(|| read_err("shape mismatch".into()))
            }
        }
    }
}

/// Reads `key` of the config as a positive size.
fn size(cfg: &Value, key: &str, file: &Path) -> Result<u64, FrontendError> {
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

fn float(cfg: &Value, key: &str, default: f64, file: &Path) -> Result<f64, FrontendError> {
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

fn string<'a>(cfg: &'a Value, key: &str, file: &Path) -> Result<Option<&'a str>, FrontendError> {
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
enum Form {
    FullPrecision,
    Online,
    PackedScaleMul,
    PackedScaleDiv,
}

struct Parsed {
    architecture: String,
    config: DecoderConfig,
    max_positions: u64,
    tied: bool,
    form: Form,
    not_converted: Vec<String>,
}

fn parse_config(cfg: &Value, file: &Path, opts: &ImportOptions) -> Result<Parsed, FrontendError> {
    let err = |m: String| FrontendError::format(file, m);
    let architecture = cfg
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Value::as_str)
        .ok_or_else(|| err("missing \"architectures\" (e.g. [\"BitNetForCausalLM\"])".into()))?
        .to_string();
    let bitnet = match architecture.as_str() {
        "BitNetForCausalLM" => true,
        "LlamaForCausalLM" => false,
        other => {
            return Err(err(format!(
                "architecture \"{other}\" is not supported (supported: BitNetForCausalLM, LlamaForCausalLM)"
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
    let rope_params = cfg.get("rope_parameters").filter(|v| !v.is_null());
    let theta_default = if bitnet { 500000.0 } else { 10000.0 };
    let rope_theta = match rope_params {
        Some(p) => {
            if let Some(t) = string(p, "rope_type", file)?
                && t != "default"
            {
                return Err(err(format!(
                    "rope_parameters.rope_type \"{t}\" is not supported (default only)"
                )));
            }
            float(p, "rope_theta", theta_default, file)?
        }
        None => float(cfg, "rope_theta", theta_default, file)?,
    };
    if let Some(scaling) = cfg.get("rope_scaling").filter(|v| !v.is_null()) {
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str);
        if kind != Some("default") {
            return Err(err(format!("\"rope_scaling\" {scaling} is not supported")));
        }
    }
    if cfg.get("attention_bias").and_then(Value::as_bool) == Some(true) {
        return Err(err("\"attention_bias\": true is not supported".into()));
    }
    let max_positions = size(cfg, "max_position_embeddings", file)?;
    let context = opts.context.unwrap_or(max_positions);
    if context == 0 || context > max_positions {
        return Err(err(format!(
            "a context of {context} tokens is outside 1..={max_positions} (max_position_embeddings): the prompt is too long or empty"
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
    if !bitnet && form != Form::FullPrecision {
        return Err(err(
            "a quantization_config on LlamaForCausalLM is not supported".into(),
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
        rope_theta,
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
    })
}

/// Opens the shards named by `model.safetensors.index.json`, or `model.safetensors`.
fn open_shards(
    dir: &Path,
) -> Result<(Vec<SafetensorsStore>, BTreeMap<String, usize>), FrontendError> {
    let index = dir.join("model.safetensors.index.json");
    let mut shards = Vec::new();
    let mut owner = BTreeMap::new();
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|source| FrontendError::Io {
            path: index.clone(),
            source,
        })?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| FrontendError::format(&index, format!("malformed JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| FrontendError::format(&index, "missing object \"weight_map\""))?;
        let mut files: BTreeMap<String, usize> = BTreeMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                FrontendError::format(
                    &index,
                    format!("weight_map[\"{tensor}\"] is not a file name"),
                )
            })?;
            let rel = Path::new(file);
            if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(FrontendError::format(
                    &index,
                    format!(
                        "weight_map[\"{tensor}\"] = \"{file}\" leaves the model folder (only plain file names are allowed)"
                    ),
                ));
            }
            let n = files.len();
            let id = *files.entry(file.to_string()).or_insert(n);
            if id == shards.len() {
                shards.push(SafetensorsStore::open(&dir.join(rel))?);
            }
            owner.insert(tensor.clone(), id);
        }
        for (tensor, &id) in &owner {
            if shards[id].info(tensor).is_none() {
                return Err(FrontendError::format(
                    shards[id].path(),
                    format!("tensor \"{tensor}\" is listed in the index but not in this shard"),
                ));
            }
        }
        for (id, shard) in shards.iter().enumerate() {
            for name in shard.tensors().keys() {
                if owner.get(name) != Some(&id) {
                    return Err(FrontendError::format(
                        shard.path(),
                        format!("tensor \"{name}\" is not listed in the index"),
                    ));
                }
            }
        }
    } else {
        let store = SafetensorsStore::open(&dir.join("model.safetensors"))?;
        for name in store.tensors().keys() {
            owner.insert(name.clone(), 0);
        }
        shards.push(store);
    }
    Ok((shards, owner))
}

/// The kind of tensor the importer expects under a name.
enum Expect {
    Float(Vec<u64>),
    Packed { out: u64, inp: u64 },
}

/// Imports an HF checkpoint folder.
pub fn import_hf(dir: &Path, opts: &ImportOptions) -> Result<ImportedModel, FrontendError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|source| FrontendError::Io {
        path: cfg_path.clone(),
        source,
    })?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| FrontendError::format(&cfg_path, format!("malformed JSON: {e}")))?;
    if !cfg.is_object() {
        return Err(FrontendError::format(
            &cfg_path,
            "expected a JSON object (the model's configuration)",
        ));
    }
    let p = parse_config(&cfg, &cfg_path, opts)?;
    let (shards, owner) = open_shards(dir)?;
    // The file that lists the tensors: the index of a sharded checkpoint, or the single file.
    let index = dir.join("model.safetensors.index.json");
    let listing = if index.exists() {
        index
    } else {
        dir.join("model.safetensors")
    };
    let c = &p.config;
    let mut expect: BTreeMap<String, Expect> = BTreeMap::new();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let plain = |name: &str, shape: Vec<u64>, expect: &mut BTreeMap<String, Expect>| {
        expect.insert(name.to_string(), Expect::Float(shape));
    };
    let linear =
        |name: &str, out: u64, inp: u64, expect: &mut BTreeMap<String, Expect>| -> Linear {
            let weight = format!("{name}.weight");
            let converted = !p.not_converted.iter().any(|m| name.contains(m.as_str()));
            let form = if converted {
                p.form
            } else {
                Form::FullPrecision
            };
            match form {
                Form::FullPrecision => {
                    expect.insert(weight.clone(), Expect::Float(vec![out, inp]));
                    Linear::Dense { weight }
                }
                Form::Online => {
                    expect.insert(weight.clone(), Expect::Float(vec![out, inp]));
                    Linear::Online { master: weight }
                }
                Form::PackedScaleMul | Form::PackedScaleDiv => {
                    let scale = format!("{name}.weight_scale");
                    expect.insert(weight.clone(), Expect::Packed { out, inp });
                    expect.insert(scale.clone(), Expect::Float(vec![1]));
                    if form == Form::PackedScaleMul {
                        Linear::TernaryScaleMul { weight, scale }
                    } else {
                        Linear::TernaryScaleDiv { weight, scale }
                    }
                }
            }
        };
    let (h, kvw, qw) = (c.hidden, c.kv_heads * c.head_dim, c.heads * c.head_dim);
    let embed = "model.embed_tokens.weight".to_string();
    plain(&embed, vec![c.vocab, h], &mut expect);
    let mut layers = Vec::new();
    for l in 0..c.layers {
        let pre = format!("model.layers.{l}");
        let norm = |n: &str, w: u64, e: &mut BTreeMap<String, Expect>| {
            let name = format!("{pre}.{n}.weight");
            plain(&name, vec![w], e);
            name
        };
        let input_norm = norm("input_layernorm", h, &mut expect);
        let post_norm = norm("post_attention_layernorm", h, &mut expect);
        let attn_sub_norm = c
            .sub_norms
            .then(|| norm("self_attn.attn_sub_norm", qw, &mut expect));
        let ffn_sub_norm = c
            .sub_norms
            .then(|| norm("mlp.ffn_sub_norm", c.intermediate, &mut expect));
        layers.push(LayerWeights {
            input_norm,
            q: linear(&format!("{pre}.self_attn.q_proj"), qw, h, &mut expect),
            k: linear(&format!("{pre}.self_attn.k_proj"), kvw, h, &mut expect),
            v: linear(&format!("{pre}.self_attn.v_proj"), kvw, h, &mut expect),
            o: linear(&format!("{pre}.self_attn.o_proj"), h, qw, &mut expect),
            attn_sub_norm,
            post_norm,
            gate: linear(
                &format!("{pre}.mlp.gate_proj"),
                c.intermediate,
                h,
                &mut expect,
            ),
            up: linear(
                &format!("{pre}.mlp.up_proj"),
                c.intermediate,
                h,
                &mut expect,
            ),
            down: linear(
                &format!("{pre}.mlp.down_proj"),
                h,
                c.intermediate,
                &mut expect,
            ),
            ffn_sub_norm,
        });
    }
    let final_norm = "model.norm.weight".to_string();
    plain(&final_norm, vec![h], &mut expect);
    let lm_head = if p.tied {
        embed.clone()
    } else {
        let name = "lm_head.weight".to_string();
        plain(&name, vec![c.vocab, h], &mut expect);
        name
    };
    // Check every expected tensor, then that nothing unexpected is there.
    for (name, want) in &expect {
        let shard = owner.get(name).and_then(|&i| shards.get(i).map(|s| (i, s)));
        let Some((id, store)) = shard else {
            return Err(FrontendError::format(
                &listing,
                format!("missing tensor \"{name}\" (the config implies it)"),
            ));
        };
        let info = store.info(name).ok_or_else(|| {
            FrontendError::format(store.path(), format!("missing tensor \"{name}\""))
        })?;
        let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        let packing = match want {
            Expect::Float(s) => {
                if !info.elem.is_some_and(ElemType::is_float) || &shape != s {
                    return Err(FrontendError::format(
                        store.path(),
                        format!(
                            "tensor \"{name}\" is {} {shape:?}; expected a float tensor {s:?}",
                            info.dtype
                        ),
                    ));
                }
                Packing::Plain
            }
            Expect::Packed { out, inp } => {
                let want_shape = vec![out.div_ceil(4), *inp];
                if info.elem != Some(ElemType::U8) || shape != want_shape {
                    return Err(FrontendError::format(
                        store.path(),
                        format!(
                            "tensor \"{name}\" is {} {shape:?}; a packed ternary [{out}, {inp}] weight is U8 {want_shape:?}",
                            info.dtype
                        ),
                    ));
                }
                Packing::Packed2Bit
            }
        };
        entries.insert(name.clone(), Entry { shard: id, packing });
    }
    let ignorable =
        |n: &str| n.ends_with("rotary_emb.inv_freq") || (p.tied && n == "lm_head.weight");
    let extra: Vec<&String> = owner
        .keys()
        .filter(|n| !expect.contains_key(*n) && !ignorable(n))
        .collect();
    if !extra.is_empty() {
        let list: Vec<&str> = extra.iter().take(5).map(|s| s.as_str()).collect();
        // Name the shard that holds the first one.
        let file = extra
            .first()
            .and_then(|n| owner.get(*n))
            .and_then(|&i| shards.get(i))
            .map_or(listing.as_path(), SafetensorsStore::path);
        return Err(FrontendError::format(
            file,
            format!(
                "{} unexpected tensor(s), e.g. {list:?}: the config ({} layers) does not use them",
                extra.len(),
                c.layers
            ),
        ));
    }
    let mut spec = DecoderSpec {
        config: p.config.clone(),
        embed,
        layers,
        final_norm,
        lm_head,
    };
    let quantized = crate::ternarize::apply(&mut spec, opts);
    let module = emit(&spec)
        .map_err(|m| FrontendError::format(dir, format!("internal error building the IR: {m}")))?;
    let mut summary = summarize(&p, &shards, &cfg_path, &expect);
    crate::ternarize::note(&mut summary, quantized);
    Ok(ImportedModel {
        module,
        weights: Box::new(HfWeights {
            dir: dir.to_path_buf(),
            shards,
            entries,
        }),
        summary,
    })
}

fn summarize(
    p: &Parsed,
    shards: &[SafetensorsStore],
    cfg_path: &Path,
    expect: &BTreeMap<String, Expect>,
) -> ModelSummary {
    let c = &p.config;
    let mut tensors = Vec::new();
    let mut parameters = 0u64;
    for store in shards {
        for (name, info) in store.tensors() {
            let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
            let n: u64 = shape.iter().product();
            let bytes = n.saturating_mul(info.elem.map_or(8, |e| e.bits()) / 8);
            // A packed tensor holds out × in ternary weights (up to four per byte).
            parameters += match expect.get(name) {
                Some(Expect::Packed { out, inp }) => out * inp,
                _ => n,
            };
            tensors.push(TensorSummary {
                name: name.clone(),
                dtype: info.dtype.clone(),
                shape,
                bytes,
            });
        }
    }
    let form = match p.form {
        Form::FullPrecision => "full precision",
        Form::Online => "online (float master weights, absmean ternarization at run time)",
        Form::PackedScaleMul => "packed ternary, weight_scale = gamma (autobitlinear)",
        Form::PackedScaleDiv => "packed ternary, weight_scale = 1/gamma (bitlinear)",
    };
    let mut config = BTreeMap::new();
    for (k, v) in [
        ("config", cfg_path.display().to_string()),
        ("quantization", form.to_string()),
        ("vocab", c.vocab.to_string()),
        ("hidden", c.hidden.to_string()),
        ("intermediate", c.intermediate.to_string()),
        ("layers", c.layers.to_string()),
        ("heads", c.heads.to_string()),
        ("kv_heads", c.kv_heads.to_string()),
        ("head_dim", c.head_dim.to_string()),
        ("activation", format!("{:?}", c.activation).to_lowercase()),
        ("rope_theta", c.rope_theta.to_string()),
        ("rms_eps", c.rms_eps.to_string()),
        ("max_positions", p.max_positions.to_string()),
        ("tied_embeddings", p.tied.to_string()),
    ] {
        config.insert(k.to_string(), v);
    }
    ModelSummary {
        format: "hf".into(),
        architecture: p.architecture.clone(),
        config,
        parameters,
        tensors,
    }
}
