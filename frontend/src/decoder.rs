//! The decoder emitter: turns a Llama-family decoder description (`DecoderSpec`: sizes, activation,
//! and where each weight lives and in which form) into `nn.*` IR that states the model's math as the
//! reference (transformers' `BitNetForCausalLM` / `LlamaForCausalLM`) writes it. Both the HF and the GGUF
//! importers end here; recognizing BitLinear and lowering it to `bit.*` is the passes' job.
//!
//! The function it emits (one decode/prefill step, see the KV-cache model in `bitnet_ir::module`):
//! ```text
//! func @forward[T<=C](%tokens: tensor<Txi64>, %pos: tensor<i64>,
//!                     %k_cache.0: tensor<Cx(Hkv·d)xf32>, %v_cache.0: …, …)
//!     -> (tensor<TxVxf32>, k_cache.0', v_cache.0', …)
//! ```
//! Per layer (formats.md §1.2): `rms_norm → q,k,v [+ bias] → rope(q,k) → attention → [attn_sub_norm] →
//! o [+ bias] → +h → rms_norm → act(gate)·up → [ffn_sub_norm] → down → +h`; then the final norm and the
//! lm_head (tied: the embedding table). A projection's bias (Llama's `attention_bias`, Qwen2's q/k/v)
//! is added after the projection's own scaling, as transformers' `BitLinear` and `nn.Linear` do; scaled
//! rope frequencies (Llama 3's `llama3` type) go into `nn.rope` as its `inv_freq` attribute. Each BitNet projection is one of the forms of formats.md §1.5:
//! - online (master weights): activation fake-quant chain and the absmean weight chain, then matmul;
//!   for training (`Qat`), each quantizer wrapped as `x + stop_gradient(q(x) − x)`;
//! - offline `autobitlinear`: activation fake-quant, matmul with the ternary weight, times γ;
//! - `bitlinear` (inverted scale): int8 activations, matmul with the ternary weight, ÷ (1/γ · s);
//! - dense (Llama, or a BitNet GGUF whose projections are stored as f32 γ·t): matmul, with the activation
//!   fake-quant first for BitNet.

use bitnet_ir::attr::{Attr, Attrs};
use bitnet_ir::builder::FunctionBuilder;
use bitnet_ir::module::Module;
use bitnet_ir::{Dim, ElemType, OpKind, TensorType, ValueId};

/// The nonlinearity of the feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `relu(x)²` (BitNet b1.58).
    Relu2,
    /// `x·σ(x)` (Llama, 1bitLLM BitNet).
    Silu,
}

/// Sizes and hyperparameters of a decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    /// Vocabulary size.
    pub vocab: u64,
    /// Hidden size.
    pub hidden: u64,
    /// Feed-forward size.
    pub intermediate: u64,
    /// Number of decoder layers.
    pub layers: u64,
    /// Attention heads.
    pub heads: u64,
    /// Key/value heads (GQA).
    pub kv_heads: u64,
    /// Size of one head.
    pub head_dim: u64,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Scaled RoPE frequencies (`head_dim/2` values, e.g. Llama 3's `llama3` rope type), replacing the
    /// ones `rope_theta` gives; `None` for the default rope.
    pub rope_inv_freq: Option<Vec<f32>>,
    /// The context length the function is built for (cache rows, bound of T).
    pub context: u64,
    /// Feed-forward activation.
    pub activation: Activation,
    /// BitNet's extra RMSNorms before o_proj (`attn_sub_norm`) and down_proj (`ffn_sub_norm`).
    pub sub_norms: bool,
    /// BitNet's per-token int8 activation quantization at the input of every projection.
    pub act_quant: bool,
}

/// Where a projection's weight lives and in which form. Names are weight-store names.
#[derive(Clone, Debug, PartialEq)]
pub enum Linear {
    /// A float `[out, in]` weight used as is.
    Dense {
        /// The weight.
        weight: String,
    },
    /// Float master weights ternarized at run time (absmean per tensor).
    Online {
        /// The master weight `[out, in]`.
        master: String,
    },
    /// The online form as quantization-aware training computes it: the same forward values, with the
    /// straight-through estimator of BitNet's recipe on both quantizers
    /// (`x + stop_gradient(q(x) − x)`), so gradients reach the master weights and the activations.
    Qat {
        /// The master weight `[out, in]`.
        master: String,
    },
    /// Ternary `[out, in]` weights with a `[1]` scale: `y = (x̂ · Tᵀ) · scale`.
    TernaryScaleMul {
        /// The ternary weight.
        weight: String,
        /// γ.
        scale: String,
    },
    /// Ternary weights with an inverted scale (HF `bitlinear`): `y = (x_q · Tᵀ) / (scale · s)`.
    TernaryScaleDiv {
        /// The ternary weight.
        weight: String,
        /// 1/γ.
        scale: String,
    },
}

/// The biases of a layer's attention projections (float `[out]` weights), where the model has them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttentionBias {
    /// Query bias.
    pub q: Option<String>,
    /// Key bias.
    pub k: Option<String>,
    /// Value bias.
    pub v: Option<String>,
    /// Output bias.
    pub o: Option<String>,
}

/// The weights of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// Pre-attention RMSNorm weight.
    pub input_norm: String,
    /// Query projection.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Output projection.
    pub o: Linear,
    /// Biases of q, k, v and o.
    pub bias: AttentionBias,
    /// BitNet's norm before o_proj.
    pub attn_sub_norm: Option<String>,
    /// Pre-FFN RMSNorm weight.
    pub post_norm: String,
    /// Gate projection.
    pub gate: Linear,
    /// Up projection.
    pub up: Linear,
    /// Down projection.
    pub down: Linear,
    /// BitNet's norm before down_proj.
    pub ffn_sub_norm: Option<String>,
}

/// A whole decoder: configuration and weights.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderSpec {
    /// Sizes and hyperparameters.
    pub config: DecoderConfig,
    /// The embedding table `[vocab, hidden]`.
    pub embed: String,
    /// The layers.
    pub layers: Vec<LayerWeights>,
    /// The final RMSNorm weight.
    pub final_norm: String,
    /// The output projection `[vocab, hidden]` (the embedding's name when tied).
    pub lm_head: String,
}

/// Emits the IR of `spec` as a module with one function, `@forward`.
pub fn emit(spec: &DecoderSpec) -> Result<Module, String> {
    let mut e = Emitter::new(&spec.config);
    let f = e.forward(spec)?;
    Ok(Module {
        functions: vec![f],
        source_name: None,
    })
}

struct Emitter<'a> {
    c: &'a DecoderConfig,
    b: FunctionBuilder,
    t: Dim,
}

fn s(n: u64) -> Dim {
    Dim::Static(n)
}

fn f32_ty(dims: Vec<Dim>) -> TensorType {
    TensorType::new(dims, ElemType::F32)
}

impl<'a> Emitter<'a> {
    fn new(c: &'a DecoderConfig) -> Self {
        let mut b = FunctionBuilder::new("forward");
        let t = b.symbol("T", c.context);
        Emitter { c, b, t }
    }

    fn op(&mut self, kind: OpKind, operands: &[ValueId], attrs: Attrs) -> Result<ValueId, String> {
        self.b.op1(kind, operands, attrs)
    }

    fn weight(&mut self, name: &str, ty: TensorType) -> Result<ValueId, String> {
        let r = self.b.op_typed(
            OpKind::Weight,
            &[],
            Attrs::new().with("name", Attr::Str(name.into())),
            vec![ty],
        )?;
        r.first()
            .copied()
            .ok_or_else(|| "nn.weight has no result".to_string())
    }

    fn scalar(&mut self, v: f64) -> Result<ValueId, String> {
        let r = self.b.op_typed(
            OpKind::Constant,
            &[],
            Attrs::new().with("value", Attr::Floats(vec![v])),
            vec![f32_ty(Vec::new())],
        )?;
        r.first()
            .copied()
            .ok_or_else(|| "nn.constant has no result".to_string())
    }

    fn rms_norm(&mut self, x: ValueId, weight: &str, width: u64) -> Result<ValueId, String> {
        let w = self.weight(weight, f32_ty(vec![s(width)]))?;
        self.op(
            OpKind::RmsNorm,
            &[x, w],
            Attrs::new().with("eps", Attr::Float(self.c.rms_eps)),
        )
    }

    /// `s = 127 / clamp(max|x|, 1e-5)` per row (formats.md §1.5).
    fn act_scale(&mut self, x: ValueId) -> Result<ValueId, String> {
        let a = self.op(OpKind::Abs, &[x], Attrs::new())?;
        let m = self.op(
            OpKind::ReduceMax,
            &[a],
            Attrs::new()
                .with("axes", Attr::Ints(vec![-1]))
                .with("keepdims", Attr::Bool(true)),
        )?;
        let m = self.op(
            OpKind::Clip,
            &[m],
            Attrs::new().with("min", Attr::Float(1e-5)),
        )?;
        let c127 = self.scalar(127.0)?;
        self.op(OpKind::Div, &[c127, m], Attrs::new())
    }

    /// `clamp(round(x·s), -128, 127)`: the int8 activation values, as floats.
    fn act_int(&mut self, x: ValueId, scale: ValueId) -> Result<ValueId, String> {
        let xs = self.op(OpKind::Mul, &[x, scale], Attrs::new())?;
        let r = self.op(OpKind::Round, &[xs], Attrs::new())?;
        self.op(
            OpKind::Clip,
            &[r],
            Attrs::new()
                .with("min", Attr::Float(-128.0))
                .with("max", Attr::Float(127.0)),
        )
    }

    /// `x̂ = clamp(round(x·s), -128, 127) / s` (fake-quant).
    fn act_fake_quant(&mut self, x: ValueId) -> Result<ValueId, String> {
        let scale = self.act_scale(x)?;
        let q = self.act_int(x, scale)?;
        self.op(OpKind::Div, &[q, scale], Attrs::new())
    }

    /// `s_w = 1 / clamp(mean|W|, 1e-5); Ŵ = clamp(round(W·s_w), -1, 1) / s_w` (absmean per tensor).
    fn absmean_ternarize(&mut self, w: ValueId) -> Result<ValueId, String> {
        let a = self.op(OpKind::Abs, &[w], Attrs::new())?;
        let mean = self.op(
            OpKind::ReduceMean,
            &[a],
            Attrs::new().with("keepdims", Attr::Bool(false)),
        )?;
        let mean = self.op(
            OpKind::Clip,
            &[mean],
            Attrs::new().with("min", Attr::Float(1e-5)),
        )?;
        let one = self.scalar(1.0)?;
        let sw = self.op(OpKind::Div, &[one, mean], Attrs::new())?;
        let ws = self.op(OpKind::Mul, &[w, sw], Attrs::new())?;
        let r = self.op(OpKind::Round, &[ws], Attrs::new())?;
        let t = self.op(
            OpKind::Clip,
            &[r],
            Attrs::new()
                .with("min", Attr::Float(-1.0))
                .with("max", Attr::Float(1.0)),
        )?;
        self.op(OpKind::Div, &[t, sw], Attrs::new())
    }

    /// `x + stop_gradient(q − x)`: `q` forward, the gradient of `x` backward.
    fn straight_through(&mut self, x: ValueId, q: ValueId) -> Result<ValueId, String> {
        let d = self.op(OpKind::Sub, &[q, x], Attrs::new())?;
        let d = self.op(OpKind::StopGradient, &[d], Attrs::new())?;
        self.op(OpKind::Add, &[x, d], Attrs::new())
    }

    /// `x · Wᵀ` for a float `[out, in]` weight.
    fn matmul_t(&mut self, x: ValueId, w: ValueId) -> Result<ValueId, String> {
        let wt = self.op(
            OpKind::Transpose,
            &[w],
            Attrs::new().with("perm", Attr::Ints(vec![1, 0])),
        )?;
        self.op(OpKind::MatMul, &[x, wt], Attrs::new())
    }

    fn ternary_as_f32(&mut self, name: &str, out: u64, inp: u64) -> Result<ValueId, String> {
        let t = self.weight(
            name,
            TensorType::new(vec![s(out), s(inp)], ElemType::Ternary),
        )?;
        self.op(
            OpKind::Cast,
            &[t],
            Attrs::new().with("to", Attr::Type(ElemType::F32)),
        )
    }

    /// A projection, then its bias `[out]` if it has one.
    fn projection(
        &mut self,
        x: ValueId,
        l: &Linear,
        bias: &Option<String>,
        out: u64,
        inp: u64,
    ) -> Result<ValueId, String> {
        let y = self.linear(x, l, out, inp)?;
        match bias {
            Some(name) => {
                let b = self.weight(name, f32_ty(vec![s(out)]))?;
                self.op(OpKind::Add, &[y, b], Attrs::new())
            }
            None => Ok(y),
        }
    }

    fn linear(&mut self, x: ValueId, l: &Linear, out: u64, inp: u64) -> Result<ValueId, String> {
        let quant = self.c.act_quant;
        match l {
            Linear::Dense { weight } => {
                let w = self.weight(weight, f32_ty(vec![s(out), s(inp)]))?;
                let x = if quant { self.act_fake_quant(x)? } else { x };
                self.matmul_t(x, w)
            }
            Linear::Online { master } => {
                let x = self.act_fake_quant(x)?;
                let w = self.weight(master, f32_ty(vec![s(out), s(inp)]))?;
                let wq = self.absmean_ternarize(w)?;
                self.matmul_t(x, wq)
            }
            Linear::Qat { master } => {
                let xq = self.act_fake_quant(x)?;
                let x = self.straight_through(x, xq)?;
                let w = self.weight(master, f32_ty(vec![s(out), s(inp)]))?;
                let wq = self.absmean_ternarize(w)?;
                let w = self.straight_through(w, wq)?;
                self.matmul_t(x, w)
            }
            Linear::TernaryScaleMul { weight, scale } => {
                let x = self.act_fake_quant(x)?;
                let w = self.ternary_as_f32(weight, out, inp)?;
                let y = self.matmul_t(x, w)?;
                let g = self.weight(scale, f32_ty(vec![s(1)]))?;
                self.op(OpKind::Mul, &[y, g], Attrs::new())
            }
            Linear::TernaryScaleDiv { weight, scale } => {
                let sx = self.act_scale(x)?;
                let q = self.act_int(x, sx)?;
                let w = self.ternary_as_f32(weight, out, inp)?;
                let y = self.matmul_t(q, w)?;
                let ws = self.weight(scale, f32_ty(vec![s(1)]))?;
                let denom = self.op(OpKind::Mul, &[ws, sx], Attrs::new())?;
                self.op(OpKind::Div, &[y, denom], Attrs::new())
            }
        }
    }

    fn forward(&mut self, spec: &DecoderSpec) -> Result<bitnet_ir::Function, String> {
        let c = self.c;
        let t = self.t.clone();
        let (h, d, kvw) = (c.hidden, c.head_dim, c.kv_heads * c.head_dim);
        let qw = c.heads * c.head_dim;
        let tokens = self
            .b
            .arg("tokens", TensorType::new(vec![t.clone()], ElemType::I64));
        let pos = self
            .b
            .arg("pos", TensorType::new(Vec::new(), ElemType::I64));
        let mut caches = Vec::new();
        for l in 0..c.layers {
            let kc = self
                .b
                .arg(&format!("k_cache.{l}"), f32_ty(vec![s(c.context), s(kvw)]));
            let vc = self
                .b
                .arg(&format!("v_cache.{l}"), f32_ty(vec![s(c.context), s(kvw)]));
            caches.push((kc, vc));
        }
        let table = self.weight(&spec.embed, f32_ty(vec![s(c.vocab), s(h)]))?;
        let mut x = self.op(OpKind::Embedding, &[table, tokens], Attrs::new())?;
        let mut out_caches = Vec::new();
        for (l, (lw, &(kc, vc))) in spec.layers.iter().zip(&caches).enumerate() {
            let a = self.rms_norm(x, &lw.input_norm, h)?;
            let q = self.projection(a, &lw.q, &lw.bias.q, qw, h)?;
            let k = self.projection(a, &lw.k, &lw.bias.k, kvw, h)?;
            let v = self.projection(a, &lw.v, &lw.bias.v, kvw, h)?;
            let mut rope = Attrs::new()
                .with("head_dim", Attr::Int(d as i64))
                .with("theta", Attr::Float(c.rope_theta));
            if let Some(f) = &c.rope_inv_freq {
                rope = rope.with(
                    "inv_freq",
                    Attr::Floats(f.iter().map(|&v| f64::from(v)).collect()),
                );
            }
            let q = self.op(OpKind::Rope, &[q, pos], rope.clone())?;
            let k = self.op(OpKind::Rope, &[k, pos], rope)?;
            let attn = self.b.op(
                OpKind::Attention,
                &[q, k, v, kc, vc, pos],
                Attrs::new()
                    .with("heads", Attr::Int(c.heads as i64))
                    .with("kv_heads", Attr::Int(c.kv_heads as i64)),
            )?;
            let [o, kc2, vc2] = attn[..] else {
                return Err("nn.attention must have three results".into());
            };
            self.b.name(kc2, &format!("k_cache.{l}.out"));
            self.b.name(vc2, &format!("v_cache.{l}.out"));
            out_caches.extend([kc2, vc2]);
            let o = match &lw.attn_sub_norm {
                Some(w) => self.rms_norm(o, w, qw)?,
                None => o,
            };
            let o = self.projection(o, &lw.o, &lw.bias.o, h, qw)?;
            x = self.op(OpKind::Add, &[x, o], Attrs::new())?;
            let m = self.rms_norm(x, &lw.post_norm, h)?;
            let g = self.linear(m, &lw.gate, c.intermediate, h)?;
            let u = self.linear(m, &lw.up, c.intermediate, h)?;
            let act = match c.activation {
                Activation::Relu2 => OpKind::Relu2,
                Activation::Silu => OpKind::Silu,
            };
            let g = self.op(act, &[g], Attrs::new())?;
            let f = self.op(OpKind::Mul, &[g, u], Attrs::new())?;
            let f = match &lw.ffn_sub_norm {
                Some(w) => self.rms_norm(f, w, c.intermediate)?,
                None => f,
            };
            let down = self.linear(f, &lw.down, h, c.intermediate)?;
            x = self.op(OpKind::Add, &[x, down], Attrs::new())?;
            self.b.name(x, &format!("h.{l}"));
        }
        let x = self.rms_norm(x, &spec.final_norm, h)?;
        let head = if spec.lm_head == spec.embed {
            table
        } else {
            self.weight(&spec.lm_head, f32_ty(vec![s(c.vocab), s(h)]))?
        };
        let logits = self.matmul_t(x, head)?;
        self.b.name(logits, "logits");
        let mut returns = vec![logits];
        returns.extend(out_caches);
        let b = std::mem::replace(&mut self.b, FunctionBuilder::new("forward"));
        Ok(b.finish(&returns))
    }
}
