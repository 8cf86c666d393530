//! The folder a training run writes, and reads back to resume:
//! - `config.json`, `generation_config.json`, `model.safetensors` (the f32 master weights):
//!   an HF BitNet checkpoint in the online form (`quantization_config`: `autobitlinear`, `online`),
//!   which `bitnetc` (and transformers) load as a model;
//! - `tokenizer.json`, the run's tokenizer;
//! - `optimizer.safetensors` (AdamW's moments, `m.NAME` and `v.NAME`, f32) and `trainer_state.json`
//!   (the step, the sampler's state, the options, the model's sizes and the loss history), from which
//!   a run resumes bit for bit.
//!
//! A folder is written whole: into a staging folder beside it (`.NAME.PID.partial`, see
//! `bitnet_frontend::staging`), each file synced, then renamed into place; a folder that holds
//! anything is never replaced.

use crate::TrainError;
use crate::optim::Moments;
use bitnet_frontend::decoder::{Activation, DecoderConfig};
use bitnet_frontend::safetensors_writer::{TensorEntry, write_safetensors};
use bitnet_ir::{Data, Tensor};
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The sizes of the trained decoder (BitNet b1.58: relu², sub-norms, tied head), as saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Vocabulary size.
    pub vocab: u64,
    /// Hidden size.
    pub hidden: u64,
    /// Feed-forward size.
    pub intermediate: u64,
    /// Layers.
    pub layers: u64,
    /// Attention heads.
    pub heads: u64,
    /// Key/value heads.
    pub kv_heads: u64,
    /// The longest sequence the model is configured for (`max_position_embeddings`).
    pub max_positions: u64,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Begin-of-sequence id.
    pub bos: u64,
    /// End-of-sequence id.
    pub eos: u64,
}

impl ModelShape {
    /// The decoder configuration for sequences of `context` tokens.
    pub fn decoder_config(&self, context: u64) -> DecoderConfig {
        DecoderConfig {
            vocab: self.vocab,
            hidden: self.hidden,
            intermediate: self.intermediate,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.hidden.checked_div(self.heads).unwrap_or(0),
            rms_eps: self.rms_eps,
            rope_theta: self.rope_theta,
            rope_inv_freq: None,
            context,
            activation: Activation::Relu2,
            sub_norms: true,
            act_quant: true,
        }
    }
}

/// Everything a checkpoint holds besides the weights, moments and tokenizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// The format's version.
    pub format: u32,
    /// Steps done.
    pub step: u64,
    /// The data sampler's state.
    pub rng: u64,
    /// The model's sizes.
    pub model: ModelShape,
    /// The run's options.
    pub options: crate::trainer::TrainOptions,
    /// (step, training loss) of every step, and (step, held-out loss) of every evaluation.
    pub history: crate::trainer::History,
}

/// What `load` reads.
pub struct Checkpoint {
    /// The state.
    pub state: TrainerState,
    /// The master weights.
    pub params: BTreeMap<String, Tensor>,
    /// AdamW's moments.
    pub moments: BTreeMap<String, Moments>,
    /// The tokenizer, as JSON.
    pub tokenizer_json: String,
}

/// One tensor to write: its name, shape and f32 values.
type F32Tensor<'a> = (String, Vec<usize>, Cow<'a, [f32]>);

/// Writes `tensors` as the safetensors file `path`, tensor by tensor
/// through the frontend's writer (sizes checked, flushed to disk).
fn write_f32_safetensors(path: &Path, tensors: &[F32Tensor<'_>]) -> Result<(), TrainError> {
    let entries: Vec<TensorEntry> = tensors
        .iter()
        .map(|(name, shape, _)| TensorEntry {
            name: name.clone(),
            dtype: "F32",
            shape: shape.iter().map(|&d| d as u64).collect(),
        })
        .collect();
    Ok(write_safetensors(path, &entries, |i, w| {
        let values = tensors.get(i).map_or(&[][..], |t| &t.2[..]);
        values
            .iter()
            .try_for_each(|v| w.write_all(&v.to_le_bytes()))
            .map_err(|source| bitnet_frontend::FrontendError::Io {
                path: path.to_path_buf(),
                source,
            })
    })?)
}

/// The HF `config.json` of the online BitNet form for `m`.
fn hf_config(m: &ModelShape) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BitNetForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": m.bos,
        "eos_token_id": m.eos,
        "hidden_act": "relu2",
        "hidden_size": m.hidden,
        "initializer_range": 0.02,
        "intermediate_size": m.intermediate,
        "max_position_embeddings": m.max_positions,
        "model_type": "bitnet",
        "num_attention_heads": m.heads,
        "num_hidden_layers": m.layers,
        "num_key_value_heads": m.kv_heads,
        "quantization_config": {
            "linear_class": "autobitlinear",
            "quant_method": "bitnet",
            "quantization_mode": "online",
        },
        "rms_norm_eps": m.rms_eps,
        "rope_scaling": null,
        "rope_theta": m.rope_theta,
        "tie_word_embeddings": true,
        "torch_dtype": "float32",
        "use_cache": true,
        "vocab_size": m.vocab,
    })
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), TrainError> {
    Ok(bitnet_frontend::staging::write_new(&dir.join(name), bytes)?)
}

fn json_text(v: &impl Serialize, path: &Path) -> Result<String, TrainError> {
    serde_json::to_string_pretty(v)
        .map(|t| format!("{t}\n"))
        .map_err(|e| TrainError::format(path, e.to_string()))
}

/// Writes a checkpoint to `dir`, which must not exist (or be empty), whole or not at all (the
/// frontend's staging folders, shared with `synth` and `export`: a killed run leaves only a
/// staging folder, which the next write beside it removes).
pub fn save(
    dir: &Path,
    state: &TrainerState,
    params: &BTreeMap<String, Tensor>,
    moments: &BTreeMap<String, Moments>,
    tokenizer_json: &str,
) -> Result<(), TrainError> {
    // The staging writer speaks the frontend's errors; a training error inside is carried out whole.
    let mut inner: Option<TrainError> = None;
    let written = bitnet_frontend::staging::write_folder(
        dir,
        false,
        "a checkpoint never replaces a folder",
        |staging| {
            write_into(staging, state, params, moments, tokenizer_json).map_err(|e| {
                let message = e.to_string();
                inner = Some(e);
                bitnet_frontend::FrontendError::format(staging, message)
            })
        },
    );
    match (written, inner) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
    }
}

fn write_into(
    dir: &Path,
    state: &TrainerState,
    params: &BTreeMap<String, Tensor>,
    moments: &BTreeMap<String, Moments>,
    tokenizer_json: &str,
) -> Result<(), TrainError> {
    let m = &state.model;
    write_file(
        dir,
        "config.json",
        json_text(&hf_config(m), dir)?.as_bytes(),
    )?;
    let generation = serde_json::json!({"bos_token_id": m.bos, "eos_token_id": m.eos});
    write_file(
        dir,
        "generation_config.json",
        json_text(&generation, dir)?.as_bytes(),
    )?;
    let weights: Vec<_> = params
        .iter()
        .map(|(n, t)| (n.clone(), t.shape.clone(), Cow::Owned(t.data.to_f32())))
        .collect();
    write_f32_safetensors(&dir.join("model.safetensors"), &weights)?;
    let mut opt = Vec::with_capacity(2 * moments.len());
    for (n, mo) in moments {
        let shape = params.get(n).map_or(vec![mo.m.len()], |t| t.shape.clone());
        opt.push((format!("m.{n}"), shape.clone(), Cow::Borrowed(&mo.m[..])));
        opt.push((format!("v.{n}"), shape, Cow::Borrowed(&mo.v[..])));
    }
    write_f32_safetensors(&dir.join("optimizer.safetensors"), &opt)?;
    write_file(dir, "tokenizer.json", tokenizer_json.as_bytes())?;
    write_file(
        dir,
        "trainer_state.json",
        json_text(state, &dir.join("trainer_state.json"))?.as_bytes(),
    )
}

fn read(path: &Path) -> Result<Vec<u8>, TrainError> {
    std::fs::read(path).map_err(|e| TrainError::io(path, e))
}

/// Every tensor of an F32 safetensors file, by name.
pub fn f32_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>, TrainError> {
    let bytes = read(path)?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| TrainError::format(path, e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(TrainError::format(
                path,
                format!(
                    "tensor \"{name}\" is {:?}; a checkpoint holds F32",
                    view.dtype()
                ),
            ));
        }
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let t = Tensor::new(view.shape().to_vec(), Data::F32(v))
            .ok_or_else(|| TrainError::format(path, format!("tensor \"{name}\": bad size")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Reads the checkpoint in `dir`.
pub fn load(dir: &Path) -> Result<Checkpoint, TrainError> {
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| {
        TrainError::format(&state_path, format!("not a bitnetc training state: {e}"))
    })?;
    let params = f32_tensors(&dir.join("model.safetensors"))?;
    let opt_path = dir.join("optimizer.safetensors");
    let mut opt = f32_tensors(&opt_path)?;
    let mut moments = BTreeMap::new();
    for (name, t) in &params {
        let mut take = |k: &str| -> Result<Vec<f32>, TrainError> {
            let key = format!("{k}.{name}");
            let m = opt.remove(&key).ok_or_else(|| {
                TrainError::format(&opt_path, format!("missing tensor \"{key}\""))
            })?;
            if m.shape != t.shape {
                return Err(TrainError::format(
                    &opt_path,
                    format!(
                        "tensor \"{key}\" is {:?}; the weight is {:?}",
                        m.shape, t.shape
                    ),
                ));
            }
            Ok(m.data.to_f32())
        };
        let m = take("m")?;
        let v = take("v")?;
        moments.insert(name.clone(), Moments { m, v });
    }
    let tk_path = dir.join("tokenizer.json");
    let tokenizer_json =
        std::fs::read_to_string(&tk_path).map_err(|e| TrainError::io(&tk_path, e))?;
    Ok(Checkpoint {
        state,
        params,
        moments,
        tokenizer_json,
    })
}

/// The folder of the checkpoint after `step` steps inside a run's output folder.
pub fn step_dir(out: &Path, step: u64) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:06}"))
}
