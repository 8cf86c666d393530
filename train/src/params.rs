//! The trained parameters: f32 master weights by HF name, their shapes from the decoder, and their
//! deterministic initialization.
//!
//! Initialization (the run's `seed`): projections and the embedding from a normal distribution with
//! standard deviation 0.02 (transformers' `initializer_range` for BitNet and Llama), norms at 1.

use bitnet_frontend::decoder::{DecoderSpec, Linear};
use bitnet_ir::Tensor;
use std::collections::BTreeMap;

/// A parameter's shape and whether it is a matrix (projections and the embedding: weight decay
/// applies) or a norm's scale (no decay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// The shape, outermost first.
    pub shape: Vec<usize>,
    /// True for matrices.
    pub decays: bool,
}

/// Every parameter `spec` reads, by name (the lm_head tied to the embedding is one parameter).
pub fn param_table(spec: &DecoderSpec) -> BTreeMap<String, ParamInfo> {
    let c = &spec.config;
    let n = |v: u64| v as usize;
    let (h, f) = (n(c.hidden), n(c.intermediate));
    let (qw, kvw) = (n(c.heads * c.head_dim), n(c.kv_heads * c.head_dim));
    let mut t = BTreeMap::new();
    let mut put = |name: &str, shape: Vec<usize>, decays: bool| {
        t.insert(name.to_string(), ParamInfo { shape, decays });
    };
    put(&spec.embed, vec![n(c.vocab), h], true);
    put(&spec.lm_head, vec![n(c.vocab), h], true);
    put(&spec.final_norm, vec![h], false);
    for l in &spec.layers {
        put(&l.input_norm, vec![h], false);
        put(&l.post_norm, vec![h], false);
        if let Some(w) = &l.attn_sub_norm {
            put(w, vec![qw], false);
        }
        if let Some(w) = &l.ffn_sub_norm {
            put(w, vec![f], false);
        }
        for (lin, out, inp) in [
            (&l.q, qw, h),
            (&l.k, kvw, h),
            (&l.v, kvw, h),
            (&l.o, h, qw),
            (&l.gate, f, h),
            (&l.up, f, h),
            (&l.down, h, f),
        ] {
            let name = match lin {
                Linear::Qat { master } | Linear::Online { master } => master,
                Linear::Dense { weight }
                | Linear::TernaryScaleMul { weight, .. }
                | Linear::TernaryScaleDiv { weight, .. } => weight,
            };
            put(name, vec![out, inp], true);
        }
    }
    t
}

/// A seeded generator: splitmix64 (its whole state is one `u64`, saved in checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A standard normal value (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Fresh parameters for `table`: matrices ~ N(0, 0.02²), norms 1.
pub fn initialize(table: &BTreeMap<String, ParamInfo>, seed: u64) -> BTreeMap<String, Tensor> {
    let mut rng = Rng(seed);
    table
        .iter()
        .filter_map(|(name, info)| {
            let n: usize = info.shape.iter().product();
            let v: Vec<f32> = if info.decays {
                (0..n).map(|_| (0.02 * rng.normal()) as f32).collect()
            } else {
                vec![1.0; n]
            };
            Tensor::from_f32(info.shape.clone(), v).map(|t| (name.clone(), t))
        })
        .collect()
}
