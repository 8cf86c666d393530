//! The training function: the decoder's forward step with every projection in the `Qat` form, its
//! logits scored against the next tokens by `nn.cross_entropy`.
//!
//! ```text
//! func @forward[T<=L](%tokens: tensor<Txi64>, %pos, %k_cache.0, %v_cache.0, …, %targets: tensor<Txi64>)
//!     -> (tensor<f32>)   // the mean cross-entropy of the T predictions
//! ```
//! A sequence runs from position 0 with empty caches of `L` rows (the training length), so the
//! attention is the causal attention over the sequence itself.

use crate::TrainError;
use bitnet_frontend::decoder::{DecoderConfig, DecoderSpec, LayerWeights, Linear, emit};
use bitnet_ir::attr::Attrs;
use bitnet_ir::verify::verify_function;
use bitnet_ir::{Dim, ElemType, Function, OpKind, Tensor, TensorType};

/// The HF BitNet names of a decoder's tensors, every projection in the `Qat` form, the head tied
/// to the embedding (as 2B-4T and `bitnetc synth` checkpoints).
pub fn qat_spec(config: DecoderConfig) -> DecoderSpec {
    let qat = |name: String| Linear::Qat {
        master: format!("{name}.weight"),
    };
    let layers = (0..config.layers)
        .map(|l| {
            let pre = format!("model.layers.{l}");
            LayerWeights {
                input_norm: format!("{pre}.input_layernorm.weight"),
                q: qat(format!("{pre}.self_attn.q_proj")),
                k: qat(format!("{pre}.self_attn.k_proj")),
                v: qat(format!("{pre}.self_attn.v_proj")),
                o: qat(format!("{pre}.self_attn.o_proj")),
                bias: Default::default(),
                attn_sub_norm: config
                    .sub_norms
                    .then(|| format!("{pre}.self_attn.attn_sub_norm.weight")),
                post_norm: format!("{pre}.post_attention_layernorm.weight"),
                gate: qat(format!("{pre}.mlp.gate_proj")),
                up: qat(format!("{pre}.mlp.up_proj")),
                down: qat(format!("{pre}.mlp.down_proj")),
                ffn_sub_norm: config
                    .sub_norms
                    .then(|| format!("{pre}.mlp.ffn_sub_norm.weight")),
            }
        })
        .collect();
    DecoderSpec {
        config,
        embed: "model.embed_tokens.weight".into(),
        layers,
        final_norm: "model.norm.weight".into(),
        lm_head: "model.embed_tokens.weight".into(),
    }
}

/// The training function of `spec` (see the module doc).
pub fn training_function(spec: &DecoderSpec) -> Result<Function, TrainError> {
    let module = emit(spec).map_err(|m| TrainError::Graph(format!("building the IR: {m}")))?;
    let mut f = module
        .functions
        .into_iter()
        .next()
        .ok_or_else(|| TrainError::Graph("the decoder emitted no function".into()))?;
    let logits = *f
        .returns
        .first()
        .ok_or_else(|| TrainError::Graph("the decoder returns no logits".into()))?;
    let targets = f.add_arg(
        Some("targets"),
        TensorType::new(vec![Dim::Sym("T".into())], ElemType::I64),
    );
    let loss_ty = TensorType::new(Vec::new(), ElemType::F32);
    let loss = f.push_op(
        OpKind::CrossEntropy,
        vec![logits, targets],
        Attrs::new(),
        vec![loss_ty.clone()],
    );
    let loss = *loss
        .first()
        .ok_or_else(|| TrainError::Graph("nn.cross_entropy gave no result".into()))?;
    f.returns = vec![loss];
    f.result_types = vec![loss_ty];
    let diags = verify_function(&f);
    if let Some(d) = diags.first() {
        return Err(TrainError::Graph(format!(
            "internal: the training function does not verify: {}",
            d.message
        )));
    }
    Ok(f)
}

/// The inputs of the training function for one sequence: `tokens` predict `targets` (the same
/// tokens shifted by one), from position 0 with zeroed caches of `context` rows.
pub fn step_inputs(
    config: &DecoderConfig,
    tokens: &[u32],
    targets: &[u32],
) -> Result<Vec<Tensor>, TrainError> {
    let ids = |v: &[u32]| {
        Tensor::new(
            vec![v.len()],
            bitnet_ir::Data::I64(v.iter().map(|&t| i64::from(t)).collect()),
        )
        .ok_or_else(|| TrainError::Graph("internal: token tensor".into()))
    };
    let rows = usize::try_from(config.context)
        .map_err(|_| TrainError::Options("the sequence length does not fit in memory".into()))?;
    let width = usize::try_from(config.kv_heads * config.head_dim)
        .map_err(|_| TrainError::Options("the key/value width does not fit in memory".into()))?;
    let mut inputs = vec![
        ids(tokens)?,
        Tensor::new(Vec::new(), bitnet_ir::Data::I64(vec![0]))
            .ok_or_else(|| TrainError::Graph("internal: position tensor".into()))?,
    ];
    let zeros = Tensor::from_f32(vec![rows, width], vec![0.0; rows * width])
        .ok_or_else(|| TrainError::Graph("internal: cache tensor".into()))?;
    for _ in 0..config.layers {
        inputs.push(zeros.clone());
        inputs.push(zeros.clone());
    }
    inputs.push(ids(targets)?);
    Ok(inputs)
}
