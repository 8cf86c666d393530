//! What every importer returns: the IR, the weights it refers to, and a description of the model for
//! `bitnetc inspect`.

use bitnet_ir::{Module, WeightStore};
use std::collections::BTreeMap;

/// Options that shape the imported function.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The context length to build the function for (KV-cache rows and the bound of T); the model's
    /// maximum when `None`.
    pub context: Option<u64>,
    /// A post-training quantization to apply to the model's dense projections (lossy), if any.
    pub quantize: Option<PostQuantize>,
}

/// A post-training quantization of a dense model (`--quantize`). Lossy: see `crate::ternarize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostQuantize {
    /// BitNet b1.58 ternarization: absmean ternary weights per tensor, int8 activations per token.
    Ternary,
}

impl PostQuantize {
    /// The name the CLI spells.
    pub fn name(self) -> &'static str {
        match self {
            PostQuantize::Ternary => "ternary",
        }
    }

    /// The quantization named `s`, if any.
    pub fn parse(s: &str) -> Option<PostQuantize> {
        [PostQuantize::Ternary].into_iter().find(|q| q.name() == s)
    }
}

/// One tensor of a model file, as `inspect` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSummary {
    /// The name in the file.
    pub name: String,
    /// The storage type as the format names it (`BF16`, `U8`, `TQ2_0`…).
    pub dtype: String,
    /// The shape in torch order (outermost first).
    pub shape: Vec<u64>,
    /// Bytes in the file.
    pub bytes: u64,
}

/// A model's description.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSummary {
    /// The format: `hf`, `gguf`, `onnx`, `bir`.
    pub format: String,
    /// The architecture as the file names it (`BitNetForCausalLM`, `bitnet-b1.58`…).
    pub architecture: String,
    /// Key hyperparameters, as text.
    pub config: BTreeMap<String, String>,
    /// Number of parameters (elements of all tensors, a packed ternary byte counting as 4).
    pub parameters: u64,
    /// Every tensor.
    pub tensors: Vec<TensorSummary>,
}

impl ModelSummary {
    /// Bytes by storage type.
    pub fn bytes_by_dtype(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for t in &self.tensors {
            *m.entry(t.dtype.clone()).or_insert(0) += t.bytes;
        }
        m
    }
}

/// An imported model.
pub struct ImportedModel {
    /// The IR: for decoders, one function `@forward` (see `decoder`).
    pub module: Module,
    /// The weights the IR's `nn.weight` ops name.
    pub weights: Box<dyn WeightStore>,
    /// The description.
    pub summary: ModelSummary,
    /// The decoder the IR was emitted from (HF and GGUF decoders; `None` for ONNX graphs): where
    /// each weight lives and in which form, for `export`.
    pub decoder: Option<crate::decoder::DecoderSpec>,
}
