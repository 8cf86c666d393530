//! Post-training ternarization (`--quantize ternary`): every dense projection of a decoder becomes
//! BitNet b1.58's online form, its weights ternarized by absmean per tensor and its input quantized
//! to int8 per token, as the seed describes (`W̃ = clamp(round(W / mean|W|), -1, 1) · mean|W|`).
//!
//! This is lossy: the model computes something else than its checkpoint did, and nothing trains it
//! to recover. The embedding and the lm_head stay as they are; projections that are ternary already
//! are left alone. The compile path then folds the online form into packed ternary weights, exactly
//! as for a BitNet checkpoint stored in full precision.

use crate::decoder::{DecoderSpec, Linear};
use crate::model::{ImportOptions, ModelSummary, PostQuantize};

/// Applies `opts.quantize` to `spec`. Call `note` on the summary afterwards.
pub fn apply(spec: &mut DecoderSpec, opts: &ImportOptions) -> Option<usize> {
    match opts.quantize? {
        PostQuantize::Ternary => Some(ternarize_dense(spec)),
    }
}

/// Notes in `summary.config` (`quantize`) what `apply` did: `changed` projections, if any ran.
pub fn note(summary: &mut ModelSummary, changed: Option<usize>) {
    if let Some(changed) = changed {
        summary.config.insert(
            "quantize".into(),
            format!(
                "ternary: {changed} dense projection(s) ternarized after training (absmean; lossy)"
            ),
        );
    }
}

/// Turns every `Linear::Dense` projection of `spec`'s layers into `Linear::Online` on the same
/// weight; returns how many it turned.
pub fn ternarize_dense(spec: &mut DecoderSpec) -> usize {
    let mut changed = 0;
    for layer in &mut spec.layers {
        for linear in [
            &mut layer.q,
            &mut layer.k,
            &mut layer.v,
            &mut layer.o,
            &mut layer.gate,
            &mut layer.up,
            &mut layer.down,
        ] {
            if let Linear::Dense { weight } = linear {
                *linear = Linear::Online {
                    master: std::mem::take(weight),
                };
                changed += 1;
            }
        }
    }
    changed
}
