//! The Hugging Face importer: a folder with `config.json` and `model.safetensors` (or a sharded
//! `model.safetensors.index.json`), architectures `BitNetForCausalLM` (every on-disk form, formats.md §1),
//! `LlamaForCausalLM` (full precision, or BitNet-quantized as the published ternary Llamas are) and
//! `Qwen2ForCausalLM` (full precision).
//!
//! It reads the config (`hf_config`: consistency, rope, biases), decides each projection's form from
//! the `quantization_config` (`autobitlinear` offline: packed ternary × γ; `bitlinear` or absent linear
//! class: packed ternary ÷ (1/γ); `online`: float master weights) and checks that every tensor the model
//! needs is present with the right dtype and shape and that nothing unexpected is there, before it emits
//! IR through `decoder`. Weights stay in the files: `HfWeights` maps each IR weight name to a tensor of
//! a shard and unpacks 2-bit packed weights only when the interpreter or a pass asks.

use crate::decoder::{AttentionBias, DecoderSpec, LayerWeights, Linear, emit};
use crate::error::FrontendError;
use crate::hf_config::{Biases, Form, Parsed, parse_config};
use crate::hf_packing;
use crate::model::{ImportOptions, ImportedModel, ModelSummary, TensorSummary};
use crate::safetensors_store::SafetensorsStore;
use bitnet_ir::weights::finish_load;
use bitnet_ir::{Data, ElemType, Tensor, WeightError, WeightStore};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

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

    fn visit_stored(&self, name: &str, f: &mut dyn FnMut(ElemType, &[u8])) -> bool {
        match self.entries.get(name) {
            Some(Entry {
                shard,
                packing: Packing::Plain,
            }) => self
                .shards
                .get(*shard)
                .is_some_and(|s| s.visit_stored(name, f)),
            Some(_) | None => false,
        }
    }

    fn stored_file(&self, name: &str) -> Option<bitnet_ir::StoredFile> {
        match self.entries.get(name) {
            Some(Entry {
                shard,
                packing: Packing::Plain,
            }) => self.shards.get(*shard).and_then(|s| s.stored_file(name)),
            Some(_) | None => None,
        }
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
        let mut bias = |proj: &str, width: u64, on: bool| {
            on.then(|| {
                let name = format!("{pre}.self_attn.{proj}.bias");
                plain(&name, vec![width], &mut expect);
                name
            })
        };
        let qkv = p.biases != Biases::None;
        let bias = AttentionBias {
            q: bias("q_proj", qw, qkv),
            k: bias("k_proj", kvw, qkv),
            v: bias("v_proj", kvw, qkv),
            o: bias("o_proj", h, p.biases == Biases::Qkvo),
        };
        layers.push(LayerWeights {
            input_norm,
            q: linear(&format!("{pre}.self_attn.q_proj"), qw, h, &mut expect),
            k: linear(&format!("{pre}.self_attn.k_proj"), kvw, h, &mut expect),
            v: linear(&format!("{pre}.self_attn.v_proj"), kvw, h, &mut expect),
            o: linear(&format!("{pre}.self_attn.o_proj"), h, qw, &mut expect),
            bias,
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
        decoder: Some(spec),
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
        ("rope_type", p.rope_type.to_string()),
        (
            "attention_bias",
            match p.biases {
                Biases::None => "none",
                Biases::Qkv => "q, k, v",
                Biases::Qkvo => "q, k, v, o",
            }
            .to_string(),
        ),
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
