//! The CPU kernels: one Cranelift function per distinct `KernelKind`.
//!
//! Every kernel has the C ABI `bitnet_runtime::program::KernelFn`:
//! `extern "C" fn(bufs: *const *mut u8, scalars: *const i64, row_begin: i64, row_end: i64)`.
//! `bufs` lists the kernel's buffers in the order its `KernelKind` variant documents; `scalars[0]` is
//! T (the number of tokens of this call) and `scalars[1]` is pos (the position of token 0). A launch
//! covers rows `0..rows` (the variant says what a row is and how many there are); the runtime splits
//! that range across threads, so a kernel must compute exactly its rows `row_begin..row_end` and write
//! nothing else. All shapes except T are static and baked into the code.
//!
//! Numerics: each kernel computes what the op's reference `eval` in `bitnet_ir::ops` computes. Integer
//! parts are exact; the f32 element-by-element parts use the same operations in the same order, so they
//! are bit-identical; sums that the interpreter does in f64 are done in f64 in the same order where the
//! variant says "exact", and with f32 SIMD accumulators (documented tolerance) where it says so.
//! Transcendental functions the kernels need (`exp` in f64) are called through the runtime's math
//! symbols (`bitnet_runtime::math`), so JIT and AOT code use the same implementation as the interpreter.

pub mod add;
pub mod attention;
pub mod elementwise;
pub mod embedding;
mod emit;
mod loops;
pub mod matmul;
pub mod matmul_half;
pub mod matmul_i8;
pub mod norm;
pub mod rope;
pub mod ternary;

use crate::BackendError;
use cranelift_module::{FuncId, Module};

/// What a kernel computes, with every static parameter. Buffers are listed in ABI order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelKind {
    /// `nn.embedding`. Buffers: `[table [vocab, hidden], ids i64 [T], out f32 [T, hidden]]`, the
    /// table f32, or with `bf16` u16 rows in `matmul_half::layout` order (the bf16 lm_head's layout,
    /// so a tied head shares it). Rows: T (one token each). Exact (a copy; bf16 widens exactly). Ids
    /// are validated by the runtime before the launch (`0..vocab`).
    Embedding {
        /// Rows of the table.
        vocab: u64,
        /// Row width.
        hidden: u64,
        /// The table is bf16 in `matmul_half::layout` order; the lowering chooses it, when the
        /// caller allows it (`lower::plan_program_compact`), where every value is exactly a bf16.
        bf16: bool,
    },
    /// `bit.rms_norm_quant` (f32): `act_quant(rms_norm(x, w))` per row. Buffers:
    /// `[x f32 [T, k], w f32 [k], q i8 [T, k], s f32 [T]]`. Rows: T. Exact: mean of squares summed in
    /// f64 in index order then rounded to f32, `inv = 1/sqrt(mean + eps_norm)` in f32, `y = x·inv·w`
    /// in f32 (left to right), then `m = max|y|`, `s = 127/max(m, eps)`, `q = clamp(round_even(y·s))`.
    /// Nothing but `q` and `s` is written; `x` and `w` are only read.
    RmsNormQuant {
        /// Row length.
        k: u64,
        /// The norm's epsilon, as f32 bits.
        eps_norm_bits: u32,
        /// The quantizer's floor, as f32 bits.
        eps_bits: u32,
        /// The scale is `(1/max(m, eps))·127` (`reciprocal = true`) rather than `127/max(m, eps)`.
        reciprocal: bool,
    },
    /// `bit.act_quant` (f32): buffers `[x f32 [T, k], q i8 [T, k], s f32 [T]]`. Rows: T. Exact.
    ActQuant {
        /// Row length.
        k: u64,
        /// The quantizer's floor, as f32 bits.
        eps_bits: u32,
        /// As in `RmsNormQuant`.
        reciprocal: bool,
    },
    /// `bit.ternary_matmul` on weights packed in `PACK_LAYOUT` (see `ternary.rs`). Buffers:
    /// `[xq i8 [T, k], xs f32 [T], w packed u8 [n, k_padded/4], ws f32 [1], out f32 [T, n]]`, plus
    /// `residual f32 [T, n]` before `out` when `residual`. Rows: n (output features); each row loops
    /// over all T tokens. Exact: `acc` in i32, `y = f32(acc) / xs[t] · ws[0]` (+ `residual[t, n]`).
    /// `xq`, `xs`, `w`, `ws` must not be written during the launch; `residual` may be `out` itself.
    TernaryMatmul {
        /// Inner dimension.
        k: u64,
        /// Output features.
        n: u64,
        /// Whether a residual is added.
        residual: bool,
    },
    /// `bit.relu2_mul` (f32, same shapes): buffers `[g, u, out]` of `[T, n]`. Rows: T. Exact:
    /// `r = max(g, 0)` (NaN stays NaN), `out = (r·r)·u` in f32.
    Relu2Mul {
        /// Row length.
        n: u64,
    },
    /// `nn.add` (f32, same shapes, no broadcasting): buffers `[a, b, out]` of `[T, n]`. Rows: T.
    /// Exact: `out = a + b` in f32. `out` may be `a` or `b` itself.
    Add {
        /// Row length.
        n: u64,
    },
    /// `nn.rms_norm` (f32, last axis): buffers `[x f32 [T, k], w f32 [k], out f32 [T, k]]`. Rows: T.
    /// Exact (as `RmsNormQuant` without the quantizer). `out` may be `x` itself (no partial overlap).
    RmsNorm {
        /// Row length.
        k: u64,
        /// Epsilon as f32 bits.
        eps_bits: u32,
    },
    /// `nn.rope`: buffers `[x f32 [T, width], table f32 [context, head_dim], out f32 [T, width]]`,
    /// where `table[p]` holds `cos(p·inv_freq[i])` for `i < d/2` then `sin(p·inv_freq[i])`, computed at
    /// compile time exactly as the interpreter does. Rows: T; token t is at position `pos + t`. Exact.
    Rope {
        /// Row width (heads × head_dim).
        width: u64,
        /// Head size (even).
        head_dim: u64,
    },
    /// The cache write of `nn.attention`: buffers `[k f32 [T, kvw], v f32 [T, kvw], kc f32 [C, kvw],
    /// vc f32 [C, kvw]]`. Rows: T; copies row t into cache row `pos + t`. The runtime checks
    /// `pos + T <= C` before the launch.
    KvStore {
        /// Cache row width (kv_heads × head_dim).
        kvw: u64,
    },
    /// The attention of `nn.attention` after `KvStore`: buffers `[q f32 [T, heads·d], kc, vc f32
    /// [C, kv_heads·d], out f32 [T, heads·d]]`. Rows: T·heads (row r = token r / heads, head r % heads).
    /// Exact: scores `dot(q, k)` in f64 (index order) times `scale` (f64), softmax in f64 with `exp`
    /// from the runtime, `out = Σ_j w_j·v_j` in f64 in index order, rounded to f32.
    Attention {
        /// Query heads.
        heads: u64,
        /// Key/value heads.
        kv_heads: u64,
        /// Head size.
        head_dim: u64,
        /// Cache rows.
        context: u64,
        /// Score scale as f64 bits.
        scale_bits: u64,
    },
    /// `nn.matmul(x, transpose(W))` with a float weight `W [n, k]` stored as f32 (the lm_head):
    /// buffers `[x f32 [T, k], w f32 [n, k], out f32 [T, n]]`. Rows: n. f32 SIMD accumulation; agrees
    /// with the interpreter's f64 sum to about 1e-6 relative. `out` must not alias `x`.
    MatmulNt {
        /// Inner dimension.
        k: u64,
        /// Output features.
        n: u64,
        /// `w` is stored as bf16 (`[n, k]` u16, widened exactly to f32 in the kernel) instead of f32;
        /// the backend chooses it when every weight is exactly a bf16 value, halving the bytes read
        /// (for the lm_head it chooses `MatmulNtHalf` instead).
        bf16: bool,
    },
    /// `MatmulNt` on 16-bit float weights (the lm_head: f16 with `HeadDtype::F16`, bf16 with
    /// `HeadDtype::Auto` when the weights are exactly bf16): buffers `[x f32 [T, k], w [n, k] (u16,
    /// each row in `matmul_half::layout` order), out f32 [T, n]]`. Rows: n. Each weight widens
    /// exactly to f32; the dot runs in f32 SIMD (fused multiply-adds where the ISA has them), within
    /// `MatmulNt`'s tolerance of the interpreter's f64 sum over the rounded weights. `out` must not
    /// alias `x`.
    MatmulNtHalf {
        /// Inner dimension.
        k: u64,
        /// Output features.
        n: u64,
        /// The weights' format.
        format: matmul_half::HalfFormat,
    },
    /// The int8 lm_head (`HeadDtype::I8`): buffers `[xq i8 [T, k], xs f32 [T], w u8 [n, k] (each
    /// weight q + 128, q in −127..=127), ws f32 [n], out f32 [T, n]]`, `xq`/`xs` as `ActQuant` makes
    /// them (`xs` the quantizer's multiplier). Rows: n. Exact: `acc = Σ_k q[n, k]·xq[t, k]` in i32,
    /// `y = f32(acc) / xs[t] · ws[n]`. Only `out` is written.
    MatmulI8 {
        /// Inner dimension.
        k: u64,
        /// Output features.
        n: u64,
    },
}

impl KernelKind {
    /// The symbol name of this kernel (stable, unique per kind and parameters).
    pub fn symbol(&self) -> String {
        match self {
            KernelKind::Embedding {
                vocab,
                hidden,
                bf16,
            } => format!(
                "bitnet_embedding_{vocab}x{hidden}{}",
                if *bf16 { "_bf16" } else { "" }
            ),
            KernelKind::RmsNormQuant {
                k,
                eps_norm_bits,
                eps_bits,
                reciprocal,
            } => format!(
                "bitnet_rms_norm_quant_{k}_{eps_norm_bits:08x}_{eps_bits:08x}{}",
                if *reciprocal { "_r" } else { "" }
            ),
            KernelKind::ActQuant {
                k,
                eps_bits,
                reciprocal,
            } => {
                format!(
                    "bitnet_act_quant_{k}_{eps_bits:08x}{}",
                    if *reciprocal { "_r" } else { "" }
                )
            }
            KernelKind::TernaryMatmul { k, n, residual } => {
                format!(
                    "bitnet_ternary_matmul_{n}x{k}{}",
                    if *residual { "_residual" } else { "" }
                )
            }
            KernelKind::Relu2Mul { n } => format!("bitnet_relu2_mul_{n}"),
            KernelKind::Add { n } => format!("bitnet_add_{n}"),
            KernelKind::RmsNorm { k, eps_bits } => format!("bitnet_rms_norm_{k}_{eps_bits:08x}"),
            KernelKind::Rope { width, head_dim } => format!("bitnet_rope_{width}_{head_dim}"),
            KernelKind::KvStore { kvw } => format!("bitnet_kv_store_{kvw}"),
            KernelKind::Attention {
                heads,
                kv_heads,
                head_dim,
                context,
                scale_bits,
            } => {
                format!(
                    "bitnet_attention_{heads}_{kv_heads}_{head_dim}_{context}_{scale_bits:016x}"
                )
            }
            KernelKind::MatmulNt { k, n, bf16 } => {
                format!(
                    "bitnet_matmul_nt_{n}x{k}{}",
                    if *bf16 { "_bf16" } else { "" }
                )
            }
            KernelKind::MatmulNtHalf { k, n, format } => {
                format!("bitnet_matmul_nt_{n}x{k}_{}_pairs", format.name())
            }
            KernelKind::MatmulI8 { k, n } => format!("bitnet_matmul_i8_{n}x{k}"),
        }
    }
}

/// Defines the kernel `kind` in `module` under `kind.symbol()` and returns its id.
pub fn build_kernel(module: &mut dyn Module, kind: &KernelKind) -> Result<FuncId, BackendError> {
    match kind {
        KernelKind::Embedding { .. } => embedding::build(module, kind),
        KernelKind::RmsNormQuant { .. }
        | KernelKind::ActQuant { .. }
        | KernelKind::RmsNorm { .. } => norm::build(module, kind),
        KernelKind::TernaryMatmul { .. } => ternary::build(module, kind),
        KernelKind::Relu2Mul { .. } => elementwise::build(module, kind),
        KernelKind::Add { .. } => add::build(module, kind),
        KernelKind::Rope { .. } => rope::build(module, kind),
        KernelKind::KvStore { .. } | KernelKind::Attention { .. } => attention::build(module, kind),
        KernelKind::MatmulNt { .. } => matmul::build(module, kind),
        KernelKind::MatmulNtHalf { .. } => matmul_half::build(module, kind),
        KernelKind::MatmulI8 { .. } => matmul_i8::build(module, kind),
    }
}
