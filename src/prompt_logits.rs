//! Running a whole prompt through the reference interpreter, the numerical oracle: on any module and
//! weights (`prompt_logits`), or on the compiled IR and weights an artifact carries
//! (`artifact_prompt_logits`).

use crate::Error;
use crate::artifact_weights::ArtifactWeights;
use bitnet_ir::{Data, ElemType, Tensor, interp};
use std::path::Path;

/// Runs a whole prompt through the compiled IR an artifact carries, with the reference interpreter
/// reading the artifact's weights (`prompt_logits`); the logits are `[1, T, vocab]`.
pub fn artifact_prompt_logits(path: &Path, tokens: &[i64]) -> Result<Tensor, Error> {
    let (ir, index, bytes) = bitnet_runtime::artifact::read_ir(path)?;
    let module = bitnet_ir::parse_and_verify(&ir, &format!("{}:ir", path.display()))?;
    if let Some(f) = module.functions.first()
        && let Some(s) = f.symbols.first()
        && tokens.len() as u64 > s.max
    {
        return Err(bitnet_runtime::RuntimeError::ContextOverflow {
            pos: 0,
            tokens: tokens.len(),
            context: s.max,
        }
        .into());
    }
    let weights = ArtifactWeights {
        path: path.to_path_buf(),
        index,
        bytes,
    };
    prompt_logits(&module, &weights, tokens)
}

/// Runs a whole prompt through a decoder-style function (`@forward`, or else the module's only
/// function) with the reference interpreter, reading `weights` (a model's, or an overlay with the
/// weights passes derived), and returns the logits as `[1, T, vocab]`.
///
/// The first argument takes the token ids (`[T]` or `[1, T]`, i64); a scalar i64 argument is the
/// position (0); every other argument (the KV caches) starts as zeros.
pub fn prompt_logits(
    m: &bitnet_ir::Module,
    weights: &dyn bitnet_ir::WeightStore,
    tokens: &[i64],
) -> Result<Tensor, Error> {
    let f = m
        .function("forward")
        .or_else(|| {
            if m.functions.len() == 1 {
                m.functions.first()
            } else {
                None
            }
        })
        .ok_or_else(|| Error::Signature("the model has no @forward function".into()))?;
    let mut inputs = Vec::with_capacity(f.args.len());
    for (i, &arg) in f.args.iter().enumerate() {
        let ty = f.ty(arg);
        let t = if i == 0 {
            let shape = match ty.rank() {
                1 => vec![tokens.len()],
                2 => vec![1, tokens.len()],
                _ => {
                    return Err(Error::Signature(format!(
                        "the token argument has type {ty}"
                    )));
                }
            };
            Tensor::new(shape, Data::I64(tokens.to_vec()))
        } else if ty.elem == ElemType::I64 && ty.rank() == 0 {
            Tensor::new(Vec::new(), Data::I64(vec![0]))
        } else {
            let shape: Vec<usize> = ty
                .static_shape()
                .ok_or_else(|| Error::Signature(format!("argument {i} has a symbolic type {ty}")))?
                .into_iter()
                .map(|d| d as usize)
                .collect();
            let n = shape.iter().product();
            Tensor::new(shape, Data::from_f64(ty.elem, vec![0.0; n]))
        };
        inputs.push(t.ok_or_else(|| Error::Signature(format!("cannot build argument {i}")))?);
    }
    let results = interp::run_function(f, &inputs, weights)?;
    let logits = results
        .into_iter()
        .next()
        .ok_or_else(|| Error::Signature("no results".into()))?;
    let mut shape = logits.shape.clone();
    if shape.len() == 2 {
        shape.insert(0, 1);
    }
    Tensor::new(shape, logits.data).ok_or_else(|| Error::Signature("bad logits shape".into()))
}
