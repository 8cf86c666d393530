//! The static parameters of each `KernelKind` variant, one struct per variant, and the symbol each
//! gives its kernel. The contract of a kernel (buffers, rows, numerics) is on its `KernelKind`
//! variant; a kernel builder receives its struct directly.

use super::layout::HalfFormat;

/// `"suffix"` when `flag`, else `""`: the optional parts of a symbol.
fn suffix(flag: bool, suffix: &'static str) -> &'static str {
    if flag { suffix } else { "" }
}

/// The parameters of `KernelKind::Embedding`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmbeddingParams {
    /// Rows of the table.
    pub vocab: u64,
    /// Row width.
    pub hidden: u64,
    /// The table's 16-bit format, rows in `layout::layout` order (`None`: f32 rows in index order);
    /// the lowering chooses it, when the caller allows it (`LowerOptions::half_embedding`), where
    /// every value is exactly such a number (`layout::layout_exact`).
    pub half: Option<HalfFormat>,
    /// A 16-bit table's rows are in index order, as the model file stores them, rather than in
    /// `layout::layout` order: the lowering maps such a table from the file instead of copying it,
    /// when no 16-bit lm_head reads the same weight in `layout` order.
    pub in_order: bool,
}

/// The manifest text artifacts have always stored (`KernelKind::describe`): an f32 table
/// `bf16: false`, a bf16 one `bf16: true`, an f16 one (added later) `f16: true`; a 16-bit table in
/// index order (added later still) adds `, in order`.
impl std::fmt::Debug for EmbeddingParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let EmbeddingParams {
            vocab,
            hidden,
            half,
            in_order,
        } = self;
        let table = match half {
            None => "bf16: false",
            Some(HalfFormat::Bf16) => "bf16: true",
            Some(HalfFormat::F16) => "f16: true",
        };
        let order = if *in_order && half.is_some() {
            ", in order"
        } else {
            ""
        };
        write!(
            f,
            "EmbeddingParams {{ vocab: {vocab}, hidden: {hidden}, {table}{order} }}"
        )
    }
}

impl EmbeddingParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let EmbeddingParams {
            vocab,
            hidden,
            half,
            in_order,
        } = self;
        let order = if *in_order { "_rows" } else { "" };
        let half = half
            .map(|h| format!("_{}{order}", h.name()))
            .unwrap_or_default();
        format!("bitnet_embedding_{vocab}x{hidden}{half}")
    }
}

/// The parameters of `KernelKind::RmsNormQuant`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RmsNormQuantParams {
    /// Row length.
    pub k: u64,
    /// The norm's epsilon, as f32 bits.
    pub eps_norm_bits: u32,
    /// The quantizer's floor, as f32 bits.
    pub eps_bits: u32,
    /// The scale is `(1/max(m, eps))·127` (`reciprocal = true`) rather than `127/max(m, eps)`.
    pub reciprocal: bool,
}

impl RmsNormQuantParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let RmsNormQuantParams {
            k,
            eps_norm_bits,
            eps_bits,
            reciprocal,
        } = self;
        format!(
            "bitnet_rms_norm_quant_{k}_{eps_norm_bits:08x}_{eps_bits:08x}{}",
            suffix(*reciprocal, "_r")
        )
    }
}

/// The parameters of `KernelKind::ActQuant`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActQuantParams {
    /// Row length.
    pub k: u64,
    /// The quantizer's floor, as f32 bits.
    pub eps_bits: u32,
    /// As in `RmsNormQuantParams`.
    pub reciprocal: bool,
}

impl ActQuantParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let ActQuantParams {
            k,
            eps_bits,
            reciprocal,
        } = self;
        format!(
            "bitnet_act_quant_{k}_{eps_bits:08x}{}",
            suffix(*reciprocal, "_r")
        )
    }
}

/// The parameters of `KernelKind::TernaryMatmul`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TernaryMatmulParams {
    /// Inner dimension.
    pub k: u64,
    /// Output features.
    pub n: u64,
    /// Whether a residual is added.
    pub residual: bool,
}

impl TernaryMatmulParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let TernaryMatmulParams { k, n, residual } = self;
        format!(
            "bitnet_ternary_matmul_{n}x{k}{}",
            suffix(*residual, "_residual")
        )
    }
}

/// The parameters of `KernelKind::Relu2Mul`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Relu2MulParams {
    /// Row length.
    pub n: u64,
}

impl Relu2MulParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        format!("bitnet_relu2_mul_{}", self.n)
    }
}

/// The parameters of `KernelKind::SiluMul`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiluMulParams {
    /// Row length.
    pub n: u64,
}

impl SiluMulParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        format!("bitnet_silu_mul_{}", self.n)
    }
}

/// The parameters of `KernelKind::Add`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddParams {
    /// Row length.
    pub n: u64,
}

impl AddParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        format!("bitnet_add_{}", self.n)
    }
}

/// The parameters of `KernelKind::BiasAdd`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BiasAddParams {
    /// Row length (the bias's length).
    pub n: u64,
}

impl BiasAddParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        format!("bitnet_bias_add_{}", self.n)
    }
}

/// The parameters of `KernelKind::RmsNorm`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RmsNormParams {
    /// Row length.
    pub k: u64,
    /// Epsilon as f32 bits.
    pub eps_bits: u32,
}

impl RmsNormParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let RmsNormParams { k, eps_bits } = self;
        format!("bitnet_rms_norm_{k}_{eps_bits:08x}")
    }
}

/// The parameters of `KernelKind::Rope`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RopeParams {
    /// Row width (heads × head_dim).
    pub width: u64,
    /// Head size (even).
    pub head_dim: u64,
}

impl RopeParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let RopeParams { width, head_dim } = self;
        format!("bitnet_rope_{width}_{head_dim}")
    }
}

/// The parameters of `KernelKind::KvStore`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KvStoreParams {
    /// Width of a k or v row (kv_heads × head_dim).
    pub kvw: u64,
    /// Head size (the caches are head-major: `[kv_heads, context, head_dim]`).
    pub head_dim: u64,
    /// Cache rows.
    pub context: u64,
}

impl KvStoreParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let KvStoreParams {
            kvw,
            head_dim,
            context,
        } = self;
        format!("bitnet_kv_store_{kvw}_{head_dim}_{context}")
    }

    /// The KV heads of a row (`kvw / head_dim`), or `None` when the head size is zero or does not
    /// divide the row width.
    pub fn kv_heads(&self) -> Option<u64> {
        (self.head_dim != 0 && self.kvw.is_multiple_of(self.head_dim))
            .then(|| self.kvw / self.head_dim)
    }
}

/// The parameters of `KernelKind::Attention`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttentionParams {
    /// Query heads.
    pub heads: u64,
    /// Key/value heads.
    pub kv_heads: u64,
    /// Head size.
    pub head_dim: u64,
    /// Cache rows.
    pub context: u64,
    /// Score scale as f64 bits.
    pub scale_bits: u64,
}

impl AttentionParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let AttentionParams {
            heads,
            kv_heads,
            head_dim,
            context,
            scale_bits,
        } = self;
        format!("bitnet_attention_{heads}_{kv_heads}_{head_dim}_{context}_{scale_bits:016x}")
    }
}

/// The parameters of `KernelKind::MatmulNt`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatmulNtParams {
    /// Inner dimension.
    pub k: u64,
    /// Output features.
    pub n: u64,
    /// `w` is stored as bf16 (`[n, k]` u16, widened exactly to f32 in the kernel) instead of f32;
    /// the backend chooses it when every weight is exactly a bf16 value, halving the bytes read
    /// (for the lm_head it chooses `MatmulNtHalf` instead).
    pub bf16: bool,
}

impl MatmulNtParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let MatmulNtParams { k, n, bf16 } = self;
        format!("bitnet_matmul_nt_{n}x{k}{}", suffix(*bf16, "_bf16"))
    }
}

/// The parameters of `KernelKind::MatmulNtHalf`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatmulNtHalfParams {
    /// Inner dimension.
    pub k: u64,
    /// Output features.
    pub n: u64,
    /// The weights' format.
    pub format: HalfFormat,
}

impl MatmulNtHalfParams {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let MatmulNtHalfParams { k, n, format } = self;
        format!("bitnet_matmul_nt_{n}x{k}_{}_pairs", format.name())
    }
}

/// The parameters of `KernelKind::MatmulI8`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatmulI8Params {
    /// Inner dimension.
    pub k: u64,
    /// Output features.
    pub n: u64,
}

impl MatmulI8Params {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let MatmulI8Params { k, n } = self;
        format!("bitnet_matmul_i8_{n}x{k}")
    }
}

/// The parameters of `KernelKind::MatmulQ4`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatmulQ4Params {
    /// Inner dimension.
    pub k: u64,
    /// Output features.
    pub n: u64,
}

impl MatmulQ4Params {
    /// The kernel's symbol (see `KernelKind::symbol`).
    pub fn symbol(&self) -> String {
        let MatmulQ4Params { k, n } = self;
        format!("bitnet_matmul_q4_{n}x{k}")
    }
}
