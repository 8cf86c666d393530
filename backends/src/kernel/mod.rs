//! The kernel layer both backends implement: `KernelKind` (what a kernel computes, with every static
//! parameter, as one typed params struct per variant), its contract, and the weight layouts that
//! kernels read (`layout`).
//!
//! ABI (both backends): a kernel gets its buffers in the order its `KernelKind` variant documents,
//! and two scalars, T (the number of tokens of this call) and pos (the position of token 0). A
//! launch covers rows `0..rows` (the variant says what a row is and how many there are); a kernel
//! computes exactly the rows it is given and writes nothing else. All shapes except T are static and
//! baked into the code, so each distinct `KernelKind` is one kernel, named `KernelKind::symbol()`.
//! - CPU (`crate::cpu`): the C ABI `bitnet_runtime::program::KernelFn`,
//!   `extern "C" fn(bufs: *const *mut u8, scalars: *const i64, row_begin: i64, row_end: i64)` with
//!   `scalars = [T, pos]`; the runtime splits the row range across threads, so a kernel computes
//!   exactly the rows `row_begin..row_end`.
//! - CUDA (`crate::cuda`): one NVPTX `.entry` taking one global pointer per buffer, then a global
//!   pointer to `[T, pos]` (two i64); a launch of `rows` rows runs `ceil(rows / rows_per_block)` blocks (`CudaLaunch`), and a
//!   kernel computes exactly the rows of its block.
//!
//! Numerics: each kernel computes what the op's reference `eval` in `bitnet_ir::ops` computes. Where
//! the backends keep that promise differently, the variant says so per backend.
//! - CPU: integer parts are exact; the f32 element-by-element parts use the same operations in the
//!   same order, so they are bit-identical; sums that the interpreter does in f64 are done in f64 in
//!   the same order where the variant says "exact", and with f32 SIMD accumulators (documented
//!   tolerance) where it says so. Transcendental functions the kernels need (`exp` in f64) are called
//!   through the runtime's math symbols (`bitnet_runtime::math`), so JIT and AOT code use the same
//!   implementation as the interpreter.
//! - CUDA: integer parts are exact; element-wise f32 parts round as the interpreter does (no
//!   contraction into fused multiply-adds, no fast-math); sums run in a fixed tree order across the
//!   threads of a warp or block, deterministic from run to run but not the interpreter's index
//!   order, so a sum that the CPU promises exact may differ in its last bits (each variant says
//!   where). Each CUDA kernel file's header details its order.

pub mod layout;
mod op;
mod params;

pub use layout::HalfFormat;
pub use op::KernelOp;
pub use params::{
    ActQuantParams, AddParams, AttentionParams, BiasAddParams, EmbeddingParams, KvStoreParams,
    MatmulI8Params, MatmulNtHalfParams, MatmulNtParams, MatmulQ4Params, Relu2MulParams,
    RmsNormParams, RmsNormQuantParams, RopeParams, SiluMulParams, TernaryMatmulParams,
};

/// What a kernel computes, with every static parameter. Buffers are listed in ABI order.
///
/// The derived order (variant, then the params' fields in order) is the order in which a backend
/// numbers its distinct kernels, so variants and fields keep their order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelKind {
    /// `nn.embedding`. Buffers: `[table [vocab, hidden], ids i64 [T], out f32 [T, hidden]]`, the
    /// table f32, or with `half` u16 rows of that format in `layout::layout` order (the 16-bit
    /// lm_head's layout, so a tied head shares it). Rows: T (one token each). Exact on both
    /// backends (a copy; bf16 and finite f16 widen exactly). Ids are validated by the runtime
    /// before the launch (`0..vocab`). CUDA: the kernel reads an f32 table only (the CUDA lowering
    /// keeps the embedding f32; a 16-bit table is refused when the kernel is built).
    Embedding(EmbeddingParams),
    /// `bit.rms_norm_quant` (f32): `act_quant(rms_norm(x, w))` per row. Buffers:
    /// `[x f32 [T, k], w f32 [k], q i8 [T, k], s f32 [T]]`. Rows: T. Nothing but `q` and `s` is
    /// written; `x` and `w` are only read.
    /// - CPU: exact: mean of squares summed in f64 in index order then rounded to f32,
    ///   `inv = 1/sqrt(mean + eps_norm)` in f32, `y = x·inv·w` in f32 (left to right), then
    ///   `m = max|y|`, `s = 127/max(m, eps)`, `q = clamp(round_even(y·s))`.
    /// - CUDA: the same, except that the squares are summed in f64 in a block tree: the f32 mean
    ///   differs from the CPU's only when the two f64 sums round to different sides of an f32
    ///   rounding boundary (one ulp of `inv` at worst).
    RmsNormQuant(RmsNormQuantParams),
    /// `bit.act_quant` (f32): buffers `[x f32 [T, k], q i8 [T, k], s f32 [T]]`. Rows: T. Exact on
    /// both backends (the maximum does not depend on the order).
    ActQuant(ActQuantParams),
    /// `bit.ternary_matmul` on weights packed in `layout::PACK_BLOCK` / `layout::PACK_ORDER`.
    /// Buffers: `[xq i8 [T, k], xs f32 [T], w packed u8 [n, k_padded/4], ws f32 [1], out f32
    /// [T, n]]`, plus `residual f32 [T, n]` before `out` when `residual`. Rows: n (output
    /// features); each row loops over all T tokens. Exact on both backends: `acc` in i32,
    /// `y = f32(acc) / xs[t] · ws[0]` (+ `residual[t, n]`). `xq`, `xs`, `w`, `ws` must not be
    /// written during the launch; `residual` may be `out` itself.
    TernaryMatmul(TernaryMatmulParams),
    /// `bit.relu2_mul` (f32, same shapes): buffers `[g, u, out]` of `[T, n]`. Rows: T. Exact on
    /// both backends: `r = max(g, 0)` (NaN stays NaN), `out = (r·r)·u` in f32.
    Relu2Mul(Relu2MulParams),
    /// `nn.add` (f32, same shapes, no broadcasting): buffers `[a, b, out]` of `[T, n]`. Rows: T.
    /// Exact on both backends: `out = a + b` in f32. `out` may be `a` or `b` itself.
    Add(AddParams),
    /// `nn.rms_norm` (f32, last axis): buffers `[x f32 [T, k], w f32 [k], out f32 [T, k]]`. Rows: T.
    /// As `RmsNormQuant` without the quantizer, on each backend (CPU exact; CUDA's block-tree sum of
    /// squares). `out` may be `x` itself (no partial overlap).
    RmsNorm(RmsNormParams),
    /// `nn.rope`: buffers `[x f32 [T, width], table f32 [context, head_dim], out f32 [T, width]]`,
    /// where `table[p]` holds `cos(p·inv_freq[i])` for `i < d/2` then `sin(p·inv_freq[i])`, computed
    /// at compile time exactly as the interpreter does. Rows: T; token t is at position `pos + t`.
    /// Exact on both backends.
    Rope(RopeParams),
    /// The cache write of `nn.attention`: buffers `[k f32 [T, kvw], v f32 [T, kvw], kc f32
    /// [kv_heads, C, d], vc f32 [kv_heads, C, d]]`. Rows: T; copies row t into cache row `pos + t`
    /// of every head (head g's `d` values of the row to `(g·C + pos + t)·d`). The caches are
    /// head-major, not the IR's `[C, kv_heads·d]` (nothing outside the kernels reads them): each
    /// head's rows are contiguous, so attention streams them. The runtime checks `pos + T <= C`
    /// before the launch.
    KvStore(KvStoreParams),
    /// The attention of `nn.attention` after `KvStore`: buffers `[q f32 [T, heads·d], kc, vc f32
    /// [kv_heads, C, d] (head-major, see `KvStore`), out f32 [T, heads·d]]`. Rows: T·heads (row r =
    /// token r / heads, head r % heads).
    /// - CPU: exact: scores `dot(q, k)` in f64 (index order) times `scale` (f64), softmax in f64
    ///   with `exp` from the runtime, `out = Σ_j w_j·v_j` in f64 in index order, rounded to f32.
    /// - CUDA: f32 throughout (dots by warp shuffles, `ex2.approx`, block-tree max and sum): the
    ///   error is that of f32 scores, so it grows with `scale·Σ|q·k|`: each output is within
    ///   `max|v|·(4δ + 2(L + 1)·u + 1e-5)` of the interpreter's, `δ = (d + 2)·u·scale·Σ|q·k|`,
    ///   `u = 2⁻²⁴`, L the keys attended (about 1e-5 relative for small scores; the kernel
    ///   harness checks this bound). The context is at most 12288 rows (the scores live in
    ///   shared memory).
    Attention(AttentionParams),
    /// `nn.matmul(x, transpose(W))` with a float weight `W [n, k]` stored as f32 (the lm_head):
    /// buffers `[x f32 [T, k], w f32 [n, k], out f32 [T, n]]`. Rows: n. f32 accumulation (SIMD
    /// lanes on the CPU, warp lanes and shuffles on CUDA); agrees with the interpreter's f64 sum to
    /// about 1e-6 relative (more for long rows with cancellation). `out` must not alias `x`.
    MatmulNt(MatmulNtParams),
    /// `MatmulNt` on 16-bit float weights (the lm_head: f16 with `HeadDtype::F16`, bf16 with
    /// `HeadDtype::Auto` when the weights are exactly bf16): buffers `[x f32 [T, k], w [n, k] (u16,
    /// each row in `layout::layout` order), out f32 [T, n]]`. Rows: n. Each weight widens exactly
    /// to f32; the dot runs in f32 (CPU: SIMD, fused multiply-adds where the ISA has them; CUDA:
    /// warp lanes), within `MatmulNt`'s tolerance of the interpreter's f64 sum over the rounded
    /// weights. `out` must not alias `x`.
    MatmulNtHalf(MatmulNtHalfParams),
    /// The int8 lm_head (`HeadDtype::I8`), CPU only: buffers `[xq i8 [T, k], xs f32 [T], w u8
    /// [n, k] (each weight q + 128, q in −127..=127), ws f32 [n], out f32 [T, n]]`, `xq`/`xs` as
    /// `ActQuant` makes them (`xs` the quantizer's multiplier). Rows: n. Exact: `acc = Σ_k q[n,
    /// k]·xq[t, k]` in i32, `y = f32(acc) / xs[t] · ws[n]`. Only `out` is written.
    MatmulI8(MatmulI8Params),
    /// `bit.silu_mul` (f32, same shapes): buffers `[g, u, out]` of `[T, n]`. Rows: T.
    /// - CPU: exact: `s = g·σ(g)` in f64 from the f32 gate, `σ` as the interpreter computes it
    ///   (`1/(1 + exp(-g))` for `g ≥ 0`, else `e/(1 + e)` with `e = exp(g)`, `exp` from the
    ///   runtime), rounded to f32, then `out = s·u` in f32. `out` may be `g` or `u` itself.
    /// - CUDA: the same in f64, except that `exp` is the kernel's own (f64 arithmetic, a few f64
    ///   ulps from the runtime's, see `cuda/kernels/silu_mul.rs`): `s` can be one f32 ulp from the
    ///   interpreter's, so `out` is within 3 ulps of it; the kernel harness checks this bound.
    SiluMul(SiluMulParams),
    /// `nn.add` of a `[T, n]` value and a constant `[n]` row (a projection's bias), f32: buffers
    /// `[x f32 [T, n], b f32 [n], out f32 [T, n]]`. Rows: T. Exact on both backends:
    /// `out[t] = x[t] + b` in f32. `out` may be `x` itself.
    BiasAdd(BiasAddParams),
    /// The 4-bit lm_head (`HeadDtype::Q4`), CPU only: buffers `[xq i8 [T, k], xs f32 [T], w u8
    /// [n, kp / 2] (nibbles), m u8 [n, kp / 32] (group multipliers), ws f32 [n], corr i32 [n],
    /// out f32 [T, n]]` (`kp` = k rounded up to 128; the layout is
    /// `bitnet_runtime::native::matmul_q4`'s), `xq`/`xs` as `ActQuant` makes them. Rows: n. Exact:
    /// `acc = Σ_g m[n, g]·Σ_{i∈g} q[n, i]·xq[t, i]` in i32, `y = f32(acc) / xs[t] · ws[n]`. Only
    /// `out` is written.
    MatmulQ4(MatmulQ4Params),
}

impl KernelKind {
    /// The symbol name of this kernel (stable, unique per kind and parameters).
    pub fn symbol(&self) -> String {
        match self {
            KernelKind::Embedding(p) => p.symbol(),
            KernelKind::RmsNormQuant(p) => p.symbol(),
            KernelKind::ActQuant(p) => p.symbol(),
            KernelKind::TernaryMatmul(p) => p.symbol(),
            KernelKind::Relu2Mul(p) => p.symbol(),
            KernelKind::Add(p) => p.symbol(),
            KernelKind::RmsNorm(p) => p.symbol(),
            KernelKind::Rope(p) => p.symbol(),
            KernelKind::KvStore(p) => p.symbol(),
            KernelKind::Attention(p) => p.symbol(),
            KernelKind::MatmulNt(p) => p.symbol(),
            KernelKind::MatmulNtHalf(p) => p.symbol(),
            KernelKind::MatmulI8(p) => p.symbol(),
            KernelKind::SiluMul(p) => p.symbol(),
            KernelKind::BiasAdd(p) => p.symbol(),
            KernelKind::MatmulQ4(p) => p.symbol(),
        }
    }

    /// The kind with its parameters as artifact manifests record it, `Variant { field: value, .. }`
    /// (the text `KernelKind`'s derived `Debug` gave before the params structs existed): stored in
    /// artifacts, so it must not change.
    pub fn describe(&self) -> String {
        let params = match self {
            KernelKind::Embedding(p) => format!("{p:?}"),
            KernelKind::RmsNormQuant(p) => format!("{p:?}"),
            KernelKind::ActQuant(p) => format!("{p:?}"),
            KernelKind::TernaryMatmul(p) => format!("{p:?}"),
            KernelKind::Relu2Mul(p) => format!("{p:?}"),
            KernelKind::Add(p) => format!("{p:?}"),
            KernelKind::RmsNorm(p) => format!("{p:?}"),
            KernelKind::Rope(p) => format!("{p:?}"),
            KernelKind::KvStore(p) => format!("{p:?}"),
            KernelKind::Attention(p) => format!("{p:?}"),
            KernelKind::MatmulNt(p) => format!("{p:?}"),
            KernelKind::MatmulNtHalf(p) => format!("{p:?}"),
            KernelKind::MatmulI8(p) => format!("{p:?}"),
            KernelKind::SiluMul(p) => format!("{p:?}"),
            KernelKind::BiasAdd(p) => format!("{p:?}"),
            KernelKind::MatmulQ4(p) => format!("{p:?}"),
        };
        // The params struct of variant `V` is `VParams`, so its `Debug` text starts with `VParams {`;
        // dropping the suffix gives `V { .. }`.
        params.replacen("Params", "", 1)
    }

    /// The variant of this kind, without its parameters.
    pub fn op(&self) -> KernelOp {
        match self {
            KernelKind::Embedding(_) => KernelOp::Embedding,
            KernelKind::RmsNormQuant(_) => KernelOp::RmsNormQuant,
            KernelKind::ActQuant(_) => KernelOp::ActQuant,
            KernelKind::TernaryMatmul(_) => KernelOp::TernaryMatmul,
            KernelKind::Relu2Mul(_) => KernelOp::Relu2Mul,
            KernelKind::Add(_) => KernelOp::Add,
            KernelKind::RmsNorm(_) => KernelOp::RmsNorm,
            KernelKind::Rope(_) => KernelOp::Rope,
            KernelKind::KvStore(_) => KernelOp::KvStore,
            KernelKind::Attention(_) => KernelOp::Attention,
            KernelKind::MatmulNt(_) => KernelOp::MatmulNt,
            KernelKind::MatmulNtHalf(_) => KernelOp::MatmulNtHalf,
            KernelKind::MatmulI8(_) => KernelOp::MatmulI8,
            KernelKind::SiluMul(_) => KernelOp::SiluMul,
            KernelKind::BiasAdd(_) => KernelOp::BiasAdd,
            KernelKind::MatmulQ4(_) => KernelOp::MatmulQ4,
        }
    }

    /// The rows one thread computes together (`bitnet_runtime::Launch::row_group`): attention's
    /// query heads of one KV head, which share each read of that head's cache; 1 elsewhere.
    pub fn row_group(&self) -> u64 {
        match self {
            KernelKind::Attention(p) if p.kv_heads > 0 => (p.heads / p.kv_heads).max(1),
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One kind of every op, in `KernelOp::ALL` order, with the symbol it must keep: symbols name
    /// the functions of object files and PTX modules, so they never change.
    fn samples() -> Vec<(KernelKind, &'static str)> {
        vec![
            (
                KernelKind::Embedding(EmbeddingParams {
                    vocab: 10,
                    hidden: 4,
                    half: Some(HalfFormat::Bf16),
                    in_order: false,
                }),
                "bitnet_embedding_10x4_bf16",
            ),
            (
                KernelKind::RmsNormQuant(RmsNormQuantParams {
                    k: 8,
                    eps_norm_bits: 0x3727_c5ac,
                    eps_bits: 1,
                    reciprocal: true,
                }),
                "bitnet_rms_norm_quant_8_3727c5ac_00000001_r",
            ),
            (
                KernelKind::ActQuant(ActQuantParams {
                    k: 8,
                    eps_bits: 0x2b8c_bccc,
                    reciprocal: false,
                }),
                "bitnet_act_quant_8_2b8cbccc",
            ),
            (
                KernelKind::TernaryMatmul(TernaryMatmulParams {
                    k: 64,
                    n: 32,
                    residual: true,
                }),
                "bitnet_ternary_matmul_32x64_residual",
            ),
            (
                KernelKind::Relu2Mul(Relu2MulParams { n: 5 }),
                "bitnet_relu2_mul_5",
            ),
            (KernelKind::Add(AddParams { n: 6 }), "bitnet_add_6"),
            (
                KernelKind::RmsNorm(RmsNormParams { k: 7, eps_bits: 1 }),
                "bitnet_rms_norm_7_00000001",
            ),
            (
                KernelKind::Rope(RopeParams {
                    width: 8,
                    head_dim: 4,
                }),
                "bitnet_rope_8_4",
            ),
            (
                KernelKind::KvStore(KvStoreParams {
                    kvw: 16,
                    head_dim: 8,
                    context: 4,
                }),
                "bitnet_kv_store_16_8_4",
            ),
            (
                KernelKind::Attention(AttentionParams {
                    heads: 4,
                    kv_heads: 2,
                    head_dim: 8,
                    context: 32,
                    scale_bits: 0x3fd6_a09e_667f_3bcd,
                }),
                "bitnet_attention_4_2_8_32_3fd6a09e667f3bcd",
            ),
            (
                KernelKind::MatmulNt(MatmulNtParams {
                    k: 3,
                    n: 2,
                    bf16: true,
                }),
                "bitnet_matmul_nt_2x3_bf16",
            ),
            (
                KernelKind::MatmulNtHalf(MatmulNtHalfParams {
                    k: 3,
                    n: 2,
                    format: HalfFormat::F16,
                }),
                "bitnet_matmul_nt_2x3_f16_pairs",
            ),
            (
                KernelKind::MatmulI8(MatmulI8Params { k: 3, n: 2 }),
                "bitnet_matmul_i8_2x3",
            ),
            (
                KernelKind::SiluMul(SiluMulParams { n: 5 }),
                "bitnet_silu_mul_5",
            ),
            (
                KernelKind::BiasAdd(BiasAddParams { n: 7 }),
                "bitnet_bias_add_7",
            ),
            (
                KernelKind::MatmulQ4(MatmulQ4Params { k: 3, n: 2 }),
                "bitnet_matmul_q4_2x3",
            ),
        ]
    }

    /// A 16-bit embedding table in index order has a symbol and a manifest text of its own; the
    /// `layout`-order forms keep theirs, and an f32 table has no order to name.
    #[test]
    fn an_in_order_table_is_named_apart() {
        let kind = |half, in_order| {
            KernelKind::Embedding(EmbeddingParams {
                vocab: 10,
                hidden: 4,
                half,
                in_order,
            })
        };
        let in_order = kind(Some(HalfFormat::F16), true);
        assert_eq!(in_order.symbol(), "bitnet_embedding_10x4_f16_rows");
        assert_eq!(
            in_order.describe(),
            "Embedding { vocab: 10, hidden: 4, f16: true, in order }"
        );
        let paired = kind(Some(HalfFormat::F16), false);
        assert_eq!(paired.symbol(), "bitnet_embedding_10x4_f16");
        assert_eq!(
            paired.describe(),
            "Embedding { vocab: 10, hidden: 4, f16: true }"
        );
        assert_eq!(kind(None, true).symbol(), "bitnet_embedding_10x4");
    }

    /// The manifest text of every kind keeps the form artifacts have always stored.
    #[test]
    fn descriptions_are_stable() {
        let described: Vec<String> = samples().iter().map(|(k, _)| k.describe()).collect();
        assert_eq!(
            described,
            [
                "Embedding { vocab: 10, hidden: 4, bf16: true }",
                "RmsNormQuant { k: 8, eps_norm_bits: 925353388, eps_bits: 1, reciprocal: true }",
                "ActQuant { k: 8, eps_bits: 730643660, reciprocal: false }",
                "TernaryMatmul { k: 64, n: 32, residual: true }",
                "Relu2Mul { n: 5 }",
                "Add { n: 6 }",
                "RmsNorm { k: 7, eps_bits: 1 }",
                "Rope { width: 8, head_dim: 4 }",
                "KvStore { kvw: 16, head_dim: 8, context: 4 }",
                "Attention { heads: 4, kv_heads: 2, head_dim: 8, context: 32, \
                 scale_bits: 4600040671590431693 }",
                "MatmulNt { k: 3, n: 2, bf16: true }",
                "MatmulNtHalf { k: 3, n: 2, format: F16 }",
                "MatmulI8 { k: 3, n: 2 }",
                "SiluMul { n: 5 }",
                "BiasAdd { n: 7 }",
                "MatmulQ4 { k: 3, n: 2 }",
            ]
        );
    }

    /// Attention's launches keep the query heads of a KV head on one thread; nothing else groups.
    #[test]
    fn only_attention_groups_its_rows() {
        for (kind, _) in samples() {
            let want = if matches!(kind, KernelKind::Attention(_)) {
                2
            } else {
                1
            };
            assert_eq!(kind.row_group(), want, "{kind:?}");
        }
    }

    #[test]
    fn symbols_are_stable() {
        for (kind, symbol) in samples() {
            assert_eq!(kind.symbol(), symbol, "{kind:?}");
        }
    }

    /// `op` maps each variant to its `KernelOp`, and kinds order by variant first (the order in
    /// which a lowering numbers its kernels).
    #[test]
    fn kinds_map_to_their_ops_in_order() {
        let kinds: Vec<KernelKind> = samples().into_iter().map(|(k, _)| k).collect();
        let ops: Vec<KernelOp> = kinds.iter().map(KernelKind::op).collect();
        assert_eq!(ops, KernelOp::ALL);
        assert!(kinds.windows(2).all(|w| w[0] < w[1]));
    }

    /// Within a variant, kinds order by their fields in declaration order.
    #[test]
    fn kinds_order_by_fields_in_order() {
        let a = KernelKind::TernaryMatmul(TernaryMatmulParams {
            k: 1,
            n: 9,
            residual: true,
        });
        let b = KernelKind::TernaryMatmul(TernaryMatmulParams {
            k: 2,
            n: 1,
            residual: false,
        });
        assert!(a < b);
    }
}
