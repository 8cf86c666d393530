//! The rotary embedding a Hugging Face config asks for: its base and rope type, read from either
//! layout (transformers 5's `rope_parameters`, or the older top-level `rope_theta` with
//! `rope_scaling`), and the frequencies of the scaled types computed exactly as transformers does.
//!
//! Where both are present, `rope_scaling` wins, as in transformers (`self.rope_parameters =
//! rope_scaling or self.rope_parameters`); `rope_theta` comes from the chosen object, else the top
//! level, else the architecture's default. Supported types: `default` (nothing to compute: `nn.rope`
//! derives the frequencies from theta) and `llama3` (Llama 3.1 / 3.2), whose frequencies
//! (`llama3_inv_freq`) replay `_compute_llama3_parameters` operation by operation in f32, because the
//! wavelength tests against the two thresholds decide which formula each frequency takes.
//! Any other type, or a `partial_rotary_factor` below 1, is refused naming the config field.

use crate::error::FrontendError;
use bitnet_ir::ops::rope::default_inv_freq;
use serde_json::Value;
use std::path::Path;

/// The rope of a model: its base and, for a scaled type, the frequencies that replace the base's.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    /// The base (`rope_theta`).
    pub theta: f64,
    /// `head_dim/2` scaled frequencies, or `None` for the default rope.
    pub inv_freq: Option<Vec<f32>>,
    /// The rope type (`default`, `llama3`).
    pub kind: &'static str,
}

/// A number field of the rope object `obj` (called `field` in messages; `""` for the config's top
/// level), which must be finite.
fn number(obj: &Value, key: &str, field: &str, file: &Path) -> Result<Option<f64>, FrontendError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| {
                let within = if field.is_empty() {
                    String::new()
                } else {
                    format!("\"{field}\": ")
                };
                FrontendError::format(
                    file,
                    format!("{within}\"{key}\" must be a number, found {v}"),
                )
            }),
    }
}

/// Reads the rope of `cfg` for heads of `head_dim`; `theta_default` is the architecture's base.
pub fn parse(
    cfg: &Value,
    file: &Path,
    head_dim: u64,
    max_positions: u64,
    theta_default: f64,
) -> Result<RopeConfig, FrontendError> {
    let err = |m: String| FrontendError::format(file, m);
    let scaling = cfg.get("rope_scaling").filter(|v| !v.is_null());
    let (field, params) = match (scaling, cfg.get("rope_parameters").filter(|v| !v.is_null())) {
        (Some(s), _) => ("rope_scaling", Some(s)),
        (None, Some(p)) => ("rope_parameters", Some(p)),
        (None, None) => ("rope_parameters", None),
    };
    let empty = Value::Object(Default::default());
    let params = params.unwrap_or(&empty);
    if !params.is_object() {
        return Err(err(format!(
            "\"{field}\" must be an object, found {params}"
        )));
    }
    let kind = match params.get("rope_type").or_else(|| params.get("type")) {
        None | Some(Value::Null) => "default",
        Some(Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(err(format!(
                "\"{field}\": \"rope_type\" must be a string, found {v}"
            )));
        }
    };
    let theta = match number(params, "rope_theta", field, file)? {
        Some(t) => t,
        None => number(cfg, "rope_theta", "", file)?.unwrap_or(theta_default),
    };
    if theta <= 0.0 {
        return Err(err(format!(
            "the rope base (rope_theta) must be positive, found {theta}"
        )));
    }
    for (obj, name) in [(params, field), (cfg, "")] {
        if let Some(f) = number(obj, "partial_rotary_factor", name, file)?
            && f != 1.0
        {
            return Err(err(format!(
                "\"partial_rotary_factor\" = {f} is not supported (rope over the whole head only)"
            )));
        }
    }
    let (kind, inv_freq) = match kind {
        "default" => ("default", None),
        "llama3" => {
            let need = |key: &str| -> Result<f64, FrontendError> {
                number(params, key, field, file)?.ok_or_else(|| {
                    err(format!(
                        "\"{field}\": \"{key}\" is missing (rope_type llama3)"
                    ))
                })
            };
            // transformers prefers a top-level `original_max_position_embeddings`, then the rope
            // object's, then `max_position_embeddings`.
            let original = match number(cfg, "original_max_position_embeddings", "", file)? {
                Some(o) => o,
                None => number(params, "original_max_position_embeddings", field, file)?
                    .unwrap_or(max_positions as f64),
            };
            let p = Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_positions: original,
            };
            if p.factor <= 0.0
                || p.low_freq_factor <= 0.0
                || p.high_freq_factor <= p.low_freq_factor
            {
                return Err(err(format!(
                    "\"{field}\": llama3 needs factor > 0 and high_freq_factor > low_freq_factor > 0, found {params}"
                )));
            }
            let freqs = llama3_inv_freq(theta, head_dim, &p);
            if freqs.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
                return Err(err(format!(
                    "\"{field}\": the llama3 parameters and rope_theta {theta} give frequencies that are zero or not finite in f32"
                )));
            }
            ("llama3", Some(freqs))
        }
        other => {
            return Err(err(format!(
                "\"{field}\": rope_type \"{other}\" is not supported (supported rope types: default, llama3)"
            )));
        }
    };
    Ok(RopeConfig {
        theta,
        inv_freq,
        kind,
    })
}

/// The parameters of the `llama3` rope type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3 {
    /// `factor`.
    pub factor: f64,
    /// `low_freq_factor`.
    pub low_freq_factor: f64,
    /// `high_freq_factor`.
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings`.
    pub original_max_positions: f64,
}

/// transformers' `_compute_llama3_parameters`, in its operation order: tensor arithmetic in f32
/// with each Python number narrowed to f32 where it meets a tensor (`a / tensor` is
/// `reciprocal(tensor) · a`), and the two wavelength thresholds computed in f64 before that.
pub fn llama3_inv_freq(theta: f64, head_dim: u64, p: &Llama3) -> Vec<f32> {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let low_wavelen = (p.original_max_positions / p.low_freq_factor) as f32;
    let high_wavelen = (p.original_max_positions / p.high_freq_factor) as f32;
    let factor = p.factor as f32;
    let old = p.original_max_positions as f32;
    let low = p.low_freq_factor as f32;
    let span = (p.high_freq_factor - p.low_freq_factor) as f32;
    default_inv_freq(theta, head_dim as usize)
        .into_iter()
        .map(|f| {
            let wavelen = (1.0 / f) * two_pi;
            let scaled = if wavelen > low_wavelen { f / factor } else { f };
            let smooth = ((1.0 / wavelen) * old - low) / span;
            let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
            // `~(wavelen < high) * ~(wavelen > low)`; no wavelength is NaN (every frequency is a
            // positive finite f32), so the negated comparisons are these.
            let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
            if medium { smoothed } else { scaled }
        })
        .collect()
}
