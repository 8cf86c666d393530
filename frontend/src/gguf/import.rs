//! The GGUF importer: `bitnet-b1.58` / `bitnet-25` (bitnet.cpp), `bitnet` (upstream llama.cpp) and
//! `llama` files into the same decoder IR as the HF importer (`crate::decoder`).
//!
//! The metadata gives the sizes (`<arch>.block_count`, `embedding_length`, …); the activation follows
//! formats.md §4.6 (`bitnet-b1.58`/`bitnet-25` ⇒ relu², `bitnet` ⇒ `<arch>.hidden_activation` or SiLU,
//! `llama` ⇒ SiLU). BitNet architectures get the sub-norms and per-token int8 activations; each
//! projection is imported as stored: TQ1_0/TQ2_0/I2_S with one scale per tensor become a ternary weight
//! times that scale, everything else (float, Q4_x/Q5_x/Q8_0, the K-quants, or TQ blocks with different
//! scales) is dequantized to f32 when loaded, as are the embedding and the output head. Llama files store q/k rows permuted for ggml's adjacent-pair RoPE
//! (llama.cpp's converter); the store undoes that so the IR's NeoX `nn.rope` applies, as it does to HF
//! tensors. BitNet files are not permuted (NeoX in ggml too).

use super::{GgmlType, GgufFile, TernaryScale};
use crate::decoder::{
    Activation, AttentionBias, DecoderConfig, DecoderSpec, LayerWeights, Linear, emit,
};
use crate::error::FrontendError;
use crate::model::{ImportOptions, ImportedModel, ModelSummary, TensorSummary};
use bitnet_ir::weights::finish_load;
use bitnet_ir::{Data, ElemType, Tensor, WeightError, WeightStore};
use std::collections::BTreeMap;
use std::path::Path;

/// The suffix of the synthetic weight name that holds a ternary tensor's scale.
const SCALE_SUFFIX: &str = ":scale";

/// How a weight is read from the file.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Read {
    /// Dequantized to f32.
    Dense,
    /// Dequantized, then q/k rows un-permuted for `heads` heads (llama files).
    DenseUnpermute { heads: usize },
    /// Ternary values.
    Ternary,
    /// The per-tensor scale of a ternary tensor, as f32 `[1]`: found when the model was imported
    /// (which had to read it to know the tensor has one), so loading it reads nothing.
    Scale(f32),
}

/// The weights of a GGUF file, by IR name.
pub struct GgufWeights {
    file: GgufFile,
    entries: BTreeMap<String, (String, Read)>,
}

/// Inverts llama.cpp's `permute(w, n_head)`: rows `[h, 2, d/2]` of the file back to HF's `[h, d/2, 2]`…
/// that is, file row `h·d + 2·i + j` holds HF row `h·d + j·d/2 + i`.
fn unpermute(v: &[f32], rows: usize, cols: usize, heads: usize) -> Option<Vec<f32>> {
    if heads == 0 || !rows.is_multiple_of(heads) || v.len() != rows * cols {
        return None;
    }
    let d = rows / heads;
    if !d.is_multiple_of(2) {
        return None;
    }
    let mut out = vec![0f32; v.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let file_row = h * d + 2 * i + j;
                let hf_row = h * d + j * (d / 2) + i;
                out[hf_row * cols..(hf_row + 1) * cols]
                    .copy_from_slice(&v[file_row * cols..(file_row + 1) * cols]);
            }
        }
    }
    Some(out)
}

/// The element type of a tensor stored as plain numbers (F32, F16, BF16).
fn dense_elem(t: GgmlType) -> Option<ElemType> {
    match t {
        GgmlType::F32 => Some(ElemType::F32),
        GgmlType::F16 => Some(ElemType::F16),
        GgmlType::BF16 => Some(ElemType::BF16),
        _ => None,
    }
}

impl WeightStore for GgufWeights {
    fn describe(&self) -> String {
        self.file.path().display().to_string()
    }

    /// A dense F32, F16 or BF16 tensor's bytes in the map, its pages released afterwards.
    fn visit_stored(&self, name: &str, f: &mut dyn FnMut(ElemType, &[u8])) -> bool {
        let Some((tensor, Read::Dense)) = self.entries.get(name) else {
            return false;
        };
        let Ok(info) = self.file.tensor_info(tensor) else {
            return false;
        };
        let Some(elem) = dense_elem(info.ggml_type) else {
            return false;
        };
        let bytes = self.file.tensor_bytes(info);
        let size = elem.bits().div_ceil(8) as usize;
        if info.numel.checked_mul(size) != Some(bytes.len()) {
            return false;
        }
        f(elem, bytes);
        self.file.release(tensor);
        true
    }

    /// A dense tensor's place in the file (as `visit_stored` reads it).
    fn stored_file(&self, name: &str) -> Option<bitnet_ir::StoredFile> {
        let Some((tensor, Read::Dense)) = self.entries.get(name) else {
            return None;
        };
        let info = self.file.tensor_info(tensor).ok()?;
        self.file.stored_file(info, dense_elem(info.ggml_type)?)
    }

    fn load(&self, name: &str, elem: ElemType, shape: &[usize]) -> Result<Tensor, WeightError> {
        let (tensor, read) = self.entries.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            store: self.describe(),
        })?;
        let fail = |e: FrontendError| WeightError::Read {
            name: name.to_string(),
            store: self.describe(),
            reason: e.to_string(),
        };
        let t = match read {
            Read::Dense => self.file.dequantize(tensor).map_err(fail)?,
            Read::DenseUnpermute { heads } => {
                let t = self.file.dequantize(tensor).map_err(fail)?;
                let (rows, cols) = match t.shape.as_slice() {
                    [r, c] => (*r, *c),
                    _ => (0, 0),
                };
                let v = unpermute(&t.data.to_f32(), rows, cols, *heads).ok_or_else(|| {
                    WeightError::Read {
                        name: name.to_string(),
                        store: self.describe(),
                        reason: format!(
                            "cannot undo the q/k permutation of a {:?} tensor for {heads} heads",
                            t.shape
                        ),
                    }
                })?;
                Tensor::new(t.shape.clone(), Data::F32(v))
                    .ok_or_else(|| fail(FrontendError::format(self.file.path(), "shape")))?
            }
            Read::Ternary => self.file.ternary(tensor).map_err(fail)?.0,
            Read::Scale(s) => {
                let t = Tensor::new(vec![1], Data::F32(vec![*s]))
                    .ok_or_else(|| fail(FrontendError::format(self.file.path(), "scale")))?;
                return finish_load(self, name, t, elem, shape);
            }
        };
        self.file.release(tensor);
        finish_load(self, name, t, elem, shape)
    }
}

/// Collects the weights the decoder needs, checking each one's shape.
struct Collector<'a> {
    file: &'a GgufFile,
    path: &'a Path,
    entries: BTreeMap<String, (String, Read)>,
    used: Vec<String>,
}

impl Collector<'_> {
    fn check(&mut self, name: &str, shape: &[u64]) -> Result<GgmlType, FrontendError> {
        let info = self.file.tensor_info(name)?;
        let have: Vec<u64> = info.shape().iter().map(|&d| d as u64).collect();
        if have != shape {
            return Err(FrontendError::format(
                self.path,
                format!("tensor '{name}' has shape {have:?}, expected {shape:?}"),
            ));
        }
        self.used.push(name.to_string());
        Ok(info.ggml_type)
    }

    /// A norm or embedding: read as f32.
    fn plain(&mut self, name: &str, shape: &[u64]) -> Result<String, FrontendError> {
        self.check(name, shape)?;
        self.entries
            .insert(name.to_string(), (name.to_string(), Read::Dense));
        Ok(name.to_string())
    }

    /// A projection `[out, in]`: ternary × per-tensor scale when the file stores it so, else dense
    /// (un-permuted for `permute_heads` heads in llama files).
    fn linear(
        &mut self,
        name: &str,
        out: u64,
        inp: u64,
        permute_heads: Option<u64>,
    ) -> Result<Linear, FrontendError> {
        let ty = self.check(name, &[out, inp])?;
        let ternary = matches!(ty, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S);
        let mut per_tensor = None;
        if ternary {
            if let TernaryScale::PerTensor(s) = self.file.ternary_scale(name)? {
                per_tensor = Some(s);
            }
            self.file.release(name);
        }
        if let Some(s) = per_tensor {
            let scale = format!("{name}{SCALE_SUFFIX}");
            self.entries
                .insert(name.to_string(), (name.to_string(), Read::Ternary));
            self.entries
                .insert(scale.clone(), (name.to_string(), Read::Scale(s)));
            return Ok(Linear::TernaryScaleMul {
                weight: name.to_string(),
                scale,
            });
        }
        let read = match permute_heads {
            Some(h) => Read::DenseUnpermute { heads: h as usize },
            None => Read::Dense,
        };
        self.entries
            .insert(name.to_string(), (name.to_string(), read));
        Ok(Linear::Dense {
            weight: name.to_string(),
        })
    }
}

/// Imports a GGUF file.
pub fn import_gguf(path: &Path, opts: &ImportOptions) -> Result<ImportedModel, FrontendError> {
    let file = GgufFile::open(path)?;
    let err = |m: String| FrontendError::format(path, m);
    let arch = file.architecture()?.to_string();
    let (bitnet, activation) = match arch.as_str() {
        "bitnet-b1.58" | "bitnet-25" => (true, Activation::Relu2),
        "bitnet" => {
            let act = match file.get_str(&format!("{arch}.hidden_activation")) {
                Ok("relu2") => Activation::Relu2,
                Ok("silu") => Activation::Silu,
                Ok(other) => {
                    return Err(err(format!(
                        "{arch}.hidden_activation = \"{other}\" is not supported (relu2, silu)"
                    )));
                }
                // No key: upstream's rule for `bitnet` files is SiLU (1bitLLM models).
                Err(_) => Activation::Silu,
            };
            (true, act)
        }
        "llama" => (false, Activation::Silu),
        other => {
            return Err(err(format!(
                "general.architecture \"{other}\" is not supported (bitnet-b1.58, bitnet-25, bitnet, llama)"
            )));
        }
    };
    let key = |k: &str| format!("{arch}.{k}");
    let size = |k: &str| -> Result<u64, FrontendError> {
        let v = file.get_u64(&key(k))?;
        if v == 0 || v > 1 << 20 {
            return Err(err(format!(
                "{} = {v} is out of range (1..=1048576)",
                key(k)
            )));
        }
        Ok(v)
    };
    let hidden = size("embedding_length")?;
    let heads = size("attention.head_count")?;
    let kv_heads = if file.get(&key("attention.head_count_kv")).is_some() {
        size("attention.head_count_kv")?
    } else {
        heads
    };
    if hidden % heads != 0 || heads % kv_heads != 0 {
        return Err(err(format!(
            "inconsistent heads: embedding_length {hidden}, head_count {heads}, head_count_kv {kv_heads}"
        )));
    }
    let head_dim = if file.get(&key("rope.dimension_count")).is_some() {
        size("rope.dimension_count")?
    } else {
        hidden / heads
    };
    if head_dim != hidden / heads || head_dim % 2 != 0 {
        return Err(err(format!(
            "{} = {head_dim} does not match embedding_length / head_count",
            key("rope.dimension_count")
        )));
    }
    let max_positions = size("context_length")?;
    let context = opts.context.unwrap_or(max_positions);
    if context == 0 {
        return Err(err(
            "a context of 0 tokens: the context (--context) must hold at least 1 token".into(),
        ));
    }
    if context > max_positions {
        return Err(err(format!(
            "a context of {context} tokens is more than the model's {max_positions} ({})",
            key("context_length")
        )));
    }
    let embd = file.tensor_info("token_embd.weight")?;
    let vocab = match embd.shape().as_slice() {
        [v, h] if *h as u64 == hidden => *v as u64,
        s => {
            return Err(err(format!(
                "tensor 'token_embd.weight' has shape {s:?}, expected [vocab, {hidden}]"
            )));
        }
    };
    let config = DecoderConfig {
        vocab,
        hidden,
        intermediate: size("feed_forward_length")?,
        layers: size("block_count")?,
        heads,
        kv_heads,
        head_dim,
        rms_eps: f64::from(file.get_f32(&key("attention.layer_norm_rms_epsilon"))?),
        rope_theta: if file.get(&key("rope.freq_base")).is_some() {
            f64::from(file.get_f32(&key("rope.freq_base"))?)
        } else {
            10000.0
        },
        rope_inv_freq: None,
        context,
        activation,
        sub_norms: bitnet,
        act_quant: bitnet,
    };
    if let Some(kind) = file.get_str(&key("rope.scaling.type")).ok()
        && !(kind == "none"
            || (kind == "linear"
                && file.get_f32(&key("rope.scaling.factor")).unwrap_or(1.0) == 1.0))
    {
        return Err(err(format!(
            "{} = \"{kind}\" is not supported",
            key("rope.scaling.type")
        )));
    }
    let c = &config;
    let mut w = Collector {
        file: &file,
        path,
        entries: BTreeMap::new(),
        used: Vec::new(),
    };
    let (h, qw, kvw) = (c.hidden, c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let embed = w.plain("token_embd.weight", &[c.vocab, h])?;
    let llama = !bitnet;
    let mut layers = Vec::new();
    for l in 0..c.layers {
        let b = |n: &str| format!("blk.{l}.{n}.weight");
        layers.push(LayerWeights {
            input_norm: w.plain(&b("attn_norm"), &[h])?,
            q: w.linear(&b("attn_q"), qw, h, llama.then_some(c.heads))?,
            k: w.linear(&b("attn_k"), kvw, h, llama.then_some(c.kv_heads))?,
            v: w.linear(&b("attn_v"), kvw, h, None)?,
            o: w.linear(&b("attn_output"), h, qw, None)?,
            bias: AttentionBias::default(),
            attn_sub_norm: if bitnet {
                Some(w.plain(&b("attn_sub_norm"), &[qw])?)
            } else {
                None
            },
            post_norm: w.plain(&b("ffn_norm"), &[h])?,
            gate: w.linear(&b("ffn_gate"), c.intermediate, h, None)?,
            up: w.linear(&b("ffn_up"), c.intermediate, h, None)?,
            down: w.linear(&b("ffn_down"), h, c.intermediate, None)?,
            ffn_sub_norm: if bitnet {
                Some(w.plain(&b("ffn_sub_norm"), &[c.intermediate])?)
            } else {
                None
            },
        });
    }
    let final_norm = w.plain("output_norm.weight", &[h])?;
    let lm_head = if file.tensor_info("output.weight").is_ok() {
        w.plain("output.weight", &[c.vocab, h])?
    } else {
        embed.clone()
    };
    let Collector { entries, used, .. } = w;
    let extra: Vec<&str> = file
        .tensors()
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| {
            !used.iter().any(|u| u == n) && !n.ends_with(".scale") && *n != "rope_freqs.weight"
        })
        .collect();
    if !extra.is_empty() {
        return Err(err(format!(
            "{} unexpected tensor(s), e.g. {:?}: the metadata ({} blocks) does not use them",
            extra.len(),
            &extra[..extra.len().min(5)],
            c.layers
        )));
    }
    if file.tensors().iter().any(|t| t.name.ends_with(".scale")) {
        return Err(err(
            "separate `.scale` tensors (TL1/TL2 conversions) are not supported yet".into(),
        ));
    }
    let mut spec = DecoderSpec {
        config: config.clone(),
        embed,
        layers,
        final_norm,
        lm_head,
    };
    let quantized = crate::ternarize::apply(&mut spec, opts);
    let module = emit(&spec).map_err(|m| err(format!("internal error building the IR: {m}")))?;
    let mut summary = summarize(&file, &arch, &config, max_positions);
    crate::ternarize::note(&mut summary, quantized);
    Ok(ImportedModel {
        module,
        weights: Box::new(GgufWeights { file, entries }),
        summary,
        decoder: Some(spec),
    })
}

fn summarize(file: &GgufFile, arch: &str, c: &DecoderConfig, max_positions: u64) -> ModelSummary {
    let tensors: Vec<TensorSummary> = file
        .tensors()
        .iter()
        .map(|t| TensorSummary {
            name: t.name.clone(),
            dtype: t.ggml_type.name().to_string(),
            shape: t.shape().iter().map(|&d| d as u64).collect(),
            bytes: t.n_bytes as u64,
        })
        .collect();
    let parameters = file.tensors().iter().map(|t| t.numel as u64).sum();
    let mut config = BTreeMap::new();
    for (k, v) in [
        ("gguf_version", file.version().to_string()),
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
        ("max_positions", max_positions.to_string()),
    ] {
        config.insert(k.to_string(), v);
    }
    if let Ok(ft) = file.get_u64("general.file_type") {
        config.insert("file_type".into(), ft.to_string());
    }
    ModelSummary {
        format: "gguf".into(),
        architecture: arch.to_string(),
        config,
        parameters,
        tensors,
    }
}

#[cfg(test)]
mod tests {
    use super::unpermute;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(h, 2, d/2, cols).swapaxes(1, 2).reshape(rows, cols); here h = 2, d = 4.
        let (heads, d, cols) = (2usize, 4usize, 1usize);
        let hf: Vec<f32> = (0..(heads * d) as i32).map(|x| x as f32).collect();
        let mut permuted = vec![0f32; hf.len()];
        for h in 0..heads {
            for two in 0..2 {
                for i in 0..d / 2 {
                    // Source index in the [h, 2, d/2] view, destination in the swapped [h, d/2, 2] view.
                    permuted[h * d + i * 2 + two] = hf[h * d + two * (d / 2) + i];
                }
            }
        }
        assert_eq!(unpermute(&permuted, heads * d, cols, heads).unwrap(), hf);
    }
}
