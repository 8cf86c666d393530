//! `bitnetc export`: a decoder that bitnetc imports (an HF BitNet folder in any of its forms, a BitNet
//! GGUF, or a dense one ternarized with `--quantize ternary`) written back out as an HF folder in
//! BitNet's packed form (`hf`) or a GGUF file with ternary projections (`gguf_file`).
//!
//! Every BitNet projection becomes ternary values and one scale:
//! - `Online` (float master weights): absmean ternarization exactly as the IR's online chain computes
//!   it (`bitnet_ir::absmean`), γ = 1/s;
//! - `TernaryScaleMul` (γ) and `TernaryScaleDiv` (1/γ): the values and the scale as stored;
//! - `Dense` in a BitNet model (a GGUF storing γ·T as floats): the values when they are exactly
//!   {-γ, 0, +γ}, else an error naming the tensor.
//!
//! A dense model (no BitNet projections) is refused: `--quantize ternary` ternarizes it first.
//! Nothing is written until the whole model has been read; the HF folder goes through a staging
//! folder (`crate::staging`), the GGUF bytes go to the caller, who writes them whole.

mod gguf;
pub mod gguf_writer;
mod hf;
mod vocab;

pub use gguf::{GgufTernary, gguf_file};
pub use hf::{MASTERS_FILE, hf};

use crate::decoder::{DecoderSpec, Linear};
use crate::detect::ModelFormat;
use crate::error::FrontendError;
use crate::model::{ImportOptions, ModelSummary, PostQuantize};
use bitnet_ir::{Data, ElemType, WeightStore};
use std::path::{Path, PathBuf};

/// The floor on mean|W| in BitNet's absmean ternarization (the online chain's `clip(min = 1e-5)`).
pub const ABSMEAN_EPS: f32 = 1e-5;

/// How a projection's scale is stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scale {
    /// γ: `y = (x̂·Tᵀ)·γ` (autobitlinear, GGUF).
    Gamma(f32),
    /// 1/γ: `y = (x_q·Tᵀ) / (scale·s)` (transformers' `bitlinear`).
    InvGamma(f32),
}

impl Scale {
    /// γ (for `InvGamma`, `1/scale` rounded to f32: not exact).
    pub fn gamma(self) -> f32 {
        match self {
            Scale::Gamma(g) => g,
            Scale::InvGamma(s) => 1.0 / s,
        }
    }
}

/// A projection as exported: `[out, in]` ternary values (row-major) and the scale.
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryProjection {
    /// Rows.
    pub out: usize,
    /// Columns.
    pub inp: usize,
    /// The values, each in {-1, 0, +1}.
    pub values: Vec<i8>,
    /// The scale.
    pub scale: Scale,
}

/// The seven projections of a layer, in the order they are written, with their role names.
pub(crate) const ROLES: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

/// A model opened for export.
pub struct Source {
    /// The model's path.
    pub path: PathBuf,
    /// Its format.
    pub format: ModelFormat,
    /// The decoder.
    pub spec: DecoderSpec,
    /// Its weights.
    pub weights: Box<dyn WeightStore>,
    /// What the importer says about it.
    pub summary: ModelSummary,
}

impl Source {
    /// Imports `path` (at the model's full context) and checks that it can be exported: a decoder
    /// whose projections are BitNet's (any form), or `quantize` to make them so.
    pub fn open(path: &Path, quantize: Option<PostQuantize>) -> Result<Source, FrontendError> {
        if !path.exists() {
            return Err(FrontendError::format(path, "no such file or folder"));
        }
        let format = crate::detect::detect(path)?;
        let opts = ImportOptions {
            context: None,
            quantize,
        };
        let m = crate::import_model(path, &opts)?;
        let spec = m.decoder.ok_or_else(|| {
            FrontendError::format(
                path,
                "an ONNX graph is not a decoder bitnetc can export (export takes HF folders and GGUF files)",
            )
        })?;
        let dense = spec
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .find_map(|p| match p {
                Linear::Dense { weight } if !spec.config.act_quant => Some(weight.clone()),
                _ => None,
            });
        if let Some(w) = dense {
            return Err(FrontendError::format(
                path,
                format!(
                    "a dense model ({}; projection \"{w}\" is full precision): export writes BitNet \
                     b1.58 models; add --quantize ternary to ternarize its projections (absmean, \
                     lossy) on the way",
                    m.summary.architecture
                ),
            ));
        }
        Ok(Source {
            path: path.to_path_buf(),
            format,
            spec,
            weights: m.weights,
            summary: m.summary,
        })
    }

    /// Whether any projection holds float master weights (what `--with-masters` keeps).
    pub fn has_masters(&self) -> bool {
        self.spec
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .any(|p| matches!(p, Linear::Online { .. }))
    }

    /// Loads a float tensor as f32.
    pub fn float(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, FrontendError> {
        let t = self
            .weights
            .load(name, ElemType::F32, shape)
            .map_err(|e| self.err(name, e.to_string()))?;
        // The store widens to f32; taking the vector avoids a copy of a large embedding.
        Ok(match t.data {
            Data::F32(v) => v,
            other => other.to_f32(),
        })
    }

    fn err(&self, name: &str, m: String) -> FrontendError {
        FrontendError::format(&self.path, format!("tensor \"{name}\": {m}"))
    }

    /// Projection `p` (`[out, in]`) as ternary values and a scale.
    pub fn projection(
        &self,
        p: &Linear,
        out: usize,
        inp: usize,
    ) -> Result<TernaryProjection, FrontendError> {
        let shape = [out, inp];
        let (values, scale) = match p {
            // The training form computes the same forward values as the online one.
            Linear::Online { master } | Linear::Qat { master } => {
                let w = self.float(master, &shape)?;
                let (t, g) = bitnet_ir::absmean::absmean_ternarize(&w, ABSMEAN_EPS);
                (t, Scale::Gamma(g))
            }
            Linear::TernaryScaleMul { weight, scale }
            | Linear::TernaryScaleDiv { weight, scale } => {
                let t = self
                    .weights
                    .load(weight, ElemType::Ternary, &shape)
                    .map_err(|e| self.err(weight, e.to_string()))?;
                let Data::Ternary(t) = t.data else {
                    return Err(self.err(weight, "the store did not give ternary values".into()));
                };
                let s = self.float(scale, &[1])?;
                let s = s.first().copied().unwrap_or(f32::NAN);
                if !s.is_finite() {
                    return Err(self.err(scale, format!("the scale is {s}")));
                }
                let s = if matches!(p, Linear::TernaryScaleMul { .. }) {
                    Scale::Gamma(s)
                } else {
                    Scale::InvGamma(s)
                };
                (t, s)
            }
            Linear::Dense { weight } => {
                let w = self.float(weight, &shape)?;
                let (t, g) = crate::gguf::float_ternary(&w).map_err(|m| {
                    self.err(
                        weight,
                        format!("a full-precision projection in a BitNet model that is not ternary ({m})"),
                    )
                })?;
                (t, Scale::Gamma(g))
            }
        };
        if let Some(i) = values.iter().position(|v| !(-1..=1).contains(v)) {
            return Err(self.err(
                p_name(p),
                format!("element {i} is {}, not ternary", values[i]),
            ));
        }
        Ok(TernaryProjection {
            out,
            inp,
            values,
            scale,
        })
    }

    /// Every projection, layer by layer in `q, k, v, o, gate, up, down` order, as `export` writes it.
    pub fn projections(&self) -> Result<Vec<TernaryProjection>, FrontendError> {
        let sizes = self.sizes();
        let mut out = Vec::new();
        for l in &self.spec.layers {
            for (p, &(o, i)) in layer_projections(l).iter().zip(&sizes) {
                out.push(self.projection(p, o, i)?);
            }
        }
        Ok(out)
    }

    /// The `[out, in]` sizes of the seven projections of a layer, in `ROLES` order.
    pub(crate) fn sizes(&self) -> [(usize, usize); 7] {
        let c = &self.spec.config;
        let (h, f) = (c.hidden as usize, c.intermediate as usize);
        let qw = (c.heads * c.head_dim) as usize;
        let kvw = (c.kv_heads * c.head_dim) as usize;
        [(qw, h), (kvw, h), (kvw, h), (h, qw), (f, h), (f, h), (h, f)]
    }

    /// The source's stored dtype of tensor `name` as safetensors names it, when it is a 16-bit float
    /// (written back the same, exactly); `F32` otherwise.
    pub(crate) fn float_dtype(&self, name: &str) -> &'static str {
        match self
            .summary
            .tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.dtype.as_str())
        {
            Some("BF16") => "BF16",
            Some("F16") => "F16",
            _ => "F32",
        }
    }
}

/// The weight name a projection reads its values from.
fn p_name(p: &Linear) -> &str {
    match p {
        Linear::Dense { weight }
        | Linear::TernaryScaleMul { weight, .. }
        | Linear::TernaryScaleDiv { weight, .. } => weight,
        Linear::Online { master } | Linear::Qat { master } => master,
    }
}

/// The projections of a layer in `ROLES` order.
pub(crate) fn layer_projections(l: &crate::decoder::LayerWeights) -> [&Linear; 7] {
    [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportSummary {
    /// Files written (for a folder, each file in it).
    pub files: Vec<PathBuf>,
    /// Ternary projections written.
    pub projections: usize,
    /// Things the user should know: what was not written, what is not exact.
    pub notes: Vec<String>,
}
