//! `bitnetc train --init MODEL`: the starting point of a run taken from a model bitnetc imports (an
//! HF BitNet folder in any of its forms, a BitNet GGUF), its weights as f32 masters by the training
//! graph's names.
//!
//! Master weights of the online form are taken as they are; a ternary projection starts from its
//! dequantized values `γ·t` (the latent weights it was trained from are gone); norms and the
//! embedding as stored. The model must be what `bitnetc train` trains: BitNet b1.58 with relu², the
//! sub-norms, a tied head and no biases, on the default rope.

use crate::TrainError;
use crate::checkpoint::ModelShape;
use crate::graph::qat_spec;
use bitnet_frontend::decoder::{Activation, DecoderSpec, LayerWeights, Linear};
use bitnet_frontend::model::ImportedModel;
use bitnet_ir::{Data, ElemType, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// The model's sizes and its weights under the training graph's names.
pub struct Init {
    /// The sizes.
    pub model: ModelShape,
    /// Master weights by HF name.
    pub params: BTreeMap<String, Tensor>,
}

fn refuse(path: &Path, why: &str) -> TrainError {
    TrainError::format(
        path,
        format!(
            "{why}: bitnetc train trains BitNet b1.58 decoders (relu² gate, attention and FFN sub-norms, \
             tied head, no biases, default rope)"
        ),
    )
}

fn layers_pair<'a>(
    src: &'a LayerWeights,
    dst: &'a LayerWeights,
) -> impl Iterator<Item = (&'a Linear, &'a Linear)> {
    [
        (&src.q, &dst.q),
        (&src.k, &dst.k),
        (&src.v, &dst.v),
        (&src.o, &dst.o),
        (&src.gate, &dst.gate),
        (&src.up, &dst.up),
        (&src.down, &dst.down),
    ]
    .into_iter()
}

/// Reads `model` (imported from `path`, with `max_positions`, `bos` and `eos` from its config).
pub fn from_model(
    path: &Path,
    model: &ImportedModel,
    max_positions: u64,
    bos: u64,
    eos: u64,
) -> Result<Init, TrainError> {
    let src: &DecoderSpec = model
        .decoder
        .as_ref()
        .ok_or_else(|| refuse(path, "not a decoder"))?;
    let c = &src.config;
    if c.activation != Activation::Relu2 || !c.sub_norms || !c.act_quant {
        return Err(refuse(path, "another architecture"));
    }
    if src.lm_head != src.embed {
        return Err(refuse(path, "an untied lm_head"));
    }
    if c.rope_inv_freq.is_some() {
        return Err(refuse(path, "a scaled rope"));
    }
    let shape = ModelShape {
        vocab: c.vocab,
        hidden: c.hidden,
        intermediate: c.intermediate,
        layers: c.layers,
        heads: c.heads,
        kv_heads: c.kv_heads,
        max_positions,
        rms_eps: c.rms_eps,
        rope_theta: c.rope_theta,
        bos,
        eos,
    };
    if shape.decoder_config(c.context).head_dim != c.head_dim {
        return Err(refuse(path, "a head size other than hidden/heads"));
    }
    let dst = qat_spec(shape.decoder_config(c.context));
    let w = model.weights.as_ref();
    let load = |name: &str, dims: &[usize]| -> Result<Vec<f32>, TrainError> {
        w.load(name, ElemType::F32, dims)
            .map(|t| t.data.to_f32())
            .map_err(|e| TrainError::format(path, format!("tensor \"{name}\": {e}")))
    };
    let n = |v: u64| v as usize;
    let (h, f) = (n(c.hidden), n(c.intermediate));
    let (qw, kvw) = (n(c.heads * c.head_dim), n(c.kv_heads * c.head_dim));
    let mut params = BTreeMap::new();
    let mut put = |name: &str, dims: Vec<usize>, v: Vec<f32>| -> Result<(), TrainError> {
        let t = Tensor::from_f32(dims, v)
            .ok_or_else(|| TrainError::format(path, format!("tensor \"{name}\": bad size")))?;
        params.insert(name.to_string(), t);
        Ok(())
    };
    put(
        &dst.embed,
        vec![n(c.vocab), h],
        load(&src.embed, &[n(c.vocab), h])?,
    )?;
    put(&dst.final_norm, vec![h], load(&src.final_norm, &[h])?)?;
    for (sl, dl) in src.layers.iter().zip(&dst.layers) {
        if sl.bias.q.is_some() || sl.bias.k.is_some() || sl.bias.v.is_some() || sl.bias.o.is_some()
        {
            return Err(refuse(path, "attention biases"));
        }
        put(&dl.input_norm, vec![h], load(&sl.input_norm, &[h])?)?;
        put(&dl.post_norm, vec![h], load(&sl.post_norm, &[h])?)?;
        for (s, d, width) in [
            (&sl.attn_sub_norm, &dl.attn_sub_norm, qw),
            (&sl.ffn_sub_norm, &dl.ffn_sub_norm, f),
        ] {
            let (Some(s), Some(d)) = (s, d) else {
                return Err(refuse(path, "no sub-norms"));
            };
            put(d, vec![width], load(s, &[width])?)?;
        }
        let dims = [(qw, h), (kvw, h), (kvw, h), (h, qw), (f, h), (f, h), (h, f)];
        for ((sp, dp), (out, inp)) in layers_pair(sl, dl).zip(dims) {
            let Linear::Qat { master } = dp else {
                return Err(TrainError::Graph(
                    "internal: the training spec is not Qat".into(),
                ));
            };
            let v = match sp {
                Linear::Online { master: m } | Linear::Qat { master: m } => load(m, &[out, inp])?,
                Linear::Dense { .. } => return Err(refuse(path, "dense projections")),
                Linear::TernaryScaleMul { weight, scale }
                | Linear::TernaryScaleDiv { weight, scale } => {
                    let t = w
                        .load(weight, ElemType::Ternary, &[out, inp])
                        .map_err(|e| {
                            TrainError::format(path, format!("tensor \"{weight}\": {e}"))
                        })?;
                    let Data::Ternary(t) = t.data else {
                        return Err(TrainError::format(
                            path,
                            format!("tensor \"{weight}\" is not ternary"),
                        ));
                    };
                    let s = load(scale, &[1])?.first().copied().unwrap_or(f32::NAN);
                    let gamma = if matches!(sp, Linear::TernaryScaleMul { .. }) {
                        s
                    } else {
                        1.0 / s
                    };
                    if !gamma.is_finite() {
                        return Err(TrainError::format(
                            path,
                            format!("tensor \"{scale}\" gives the scale {gamma}"),
                        ));
                    }
                    t.iter().map(|&v| f32::from(v) * gamma).collect()
                }
            };
            put(master, vec![out, inp], v)?;
        }
    }
    Ok(Init {
        model: shape,
        params,
    })
}
