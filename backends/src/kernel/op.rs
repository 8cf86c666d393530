//! `KernelOp`: the variants of `KernelKind` without their parameters, so that tests and tables can
//! iterate every kind of kernel, and the file that holds a kind's kernel in each backend.

/// A `KernelKind` variant without its parameters (`KernelKind::op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelOp {
    /// `KernelKind::Embedding`.
    Embedding,
    /// `KernelKind::RmsNormQuant`.
    RmsNormQuant,
    /// `KernelKind::ActQuant`.
    ActQuant,
    /// `KernelKind::TernaryMatmul`.
    TernaryMatmul,
    /// `KernelKind::Relu2Mul`.
    Relu2Mul,
    /// `KernelKind::Add`.
    Add,
    /// `KernelKind::RmsNorm`.
    RmsNorm,
    /// `KernelKind::Rope`.
    Rope,
    /// `KernelKind::KvStore`.
    KvStore,
    /// `KernelKind::Attention`.
    Attention,
    /// `KernelKind::MatmulNt`.
    MatmulNt,
    /// `KernelKind::MatmulNtHalf`.
    MatmulNtHalf,
    /// `KernelKind::MatmulI8`.
    MatmulI8,
    /// `KernelKind::SiluMul`.
    SiluMul,
    /// `KernelKind::BiasAdd`.
    BiasAdd,
    /// `KernelKind::MatmulQ4`.
    MatmulQ4,
}

impl KernelOp {
    /// Every op, in `KernelKind`'s variant order.
    pub const ALL: [KernelOp; 16] = [
        KernelOp::Embedding,
        KernelOp::RmsNormQuant,
        KernelOp::ActQuant,
        KernelOp::TernaryMatmul,
        KernelOp::Relu2Mul,
        KernelOp::Add,
        KernelOp::RmsNorm,
        KernelOp::Rope,
        KernelOp::KvStore,
        KernelOp::Attention,
        KernelOp::MatmulNt,
        KernelOp::MatmulNtHalf,
        KernelOp::MatmulI8,
        KernelOp::SiluMul,
        KernelOp::BiasAdd,
        KernelOp::MatmulQ4,
    ];

    /// Whether this kind's rows depend on the sequence, not only on each token's own rows: the
    /// position (`Rope`) or the KV cache (`KvStore`, `Attention`). Every other kind computes each
    /// token's rows from that token's rows and the weights alone, so the tokens of several
    /// sequences may share one launch of it (`bitnet_runtime::Launch::per_sequence`).
    pub fn per_sequence(self) -> bool {
        match self {
            KernelOp::Rope | KernelOp::KvStore | KernelOp::Attention => true,
            KernelOp::Embedding
            | KernelOp::RmsNormQuant
            | KernelOp::ActQuant
            | KernelOp::TernaryMatmul
            | KernelOp::Relu2Mul
            | KernelOp::Add
            | KernelOp::RmsNorm
            | KernelOp::MatmulNt
            | KernelOp::MatmulNtHalf
            | KernelOp::MatmulI8
            | KernelOp::SiluMul
            | KernelOp::BiasAdd
            | KernelOp::MatmulQ4 => false,
        }
    }

    /// The variant's name in snake case (`rms_norm_quant`).
    pub fn name(self) -> &'static str {
        match self {
            KernelOp::Embedding => "embedding",
            KernelOp::RmsNormQuant => "rms_norm_quant",
            KernelOp::ActQuant => "act_quant",
            KernelOp::TernaryMatmul => "ternary_matmul",
            KernelOp::Relu2Mul => "relu2_mul",
            KernelOp::Add => "add",
            KernelOp::RmsNorm => "rms_norm",
            KernelOp::Rope => "rope",
            KernelOp::KvStore => "kv_store",
            KernelOp::Attention => "attention",
            KernelOp::MatmulNt => "matmul_nt",
            KernelOp::MatmulNtHalf => "matmul_nt_half",
            KernelOp::MatmulI8 => "matmul_i8",
            KernelOp::SiluMul => "silu_mul",
            KernelOp::BiasAdd => "bias_add",
            KernelOp::MatmulQ4 => "matmul_q4",
        }
    }

    /// The stem of the file that holds this op's kernel, the same in `cpu/kernels/` and
    /// `cuda/kernels/` (the three norms share `norm`).
    pub fn file_stem(self) -> &'static str {
        match self {
            KernelOp::Embedding => "embedding",
            KernelOp::RmsNormQuant | KernelOp::ActQuant | KernelOp::RmsNorm => "norm",
            KernelOp::TernaryMatmul => "ternary_matmul",
            KernelOp::Relu2Mul => "relu2_mul",
            KernelOp::Add => "add",
            KernelOp::Rope => "rope",
            KernelOp::KvStore => "kv_store",
            KernelOp::Attention => "attention",
            KernelOp::MatmulNt => "matmul",
            KernelOp::MatmulNtHalf => "matmul_half",
            KernelOp::MatmulI8 => "matmul_i8",
            KernelOp::SiluMul => "silu_mul",
            KernelOp::BiasAdd => "bias_add",
            KernelOp::MatmulQ4 => "matmul_q4",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KernelOp;

    /// `ALL` lists every op once, in order, and the names are distinct.
    #[test]
    fn all_is_complete_and_ordered() {
        assert!(KernelOp::ALL.windows(2).all(|w| w[0] < w[1]));
        let mut names: Vec<&str> = KernelOp::ALL.iter().map(|op| op.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KernelOp::ALL.len());
    }
}
