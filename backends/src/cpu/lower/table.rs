//! What the CPU backend does with each `OpKind`, as data: one `match` with one arm per op, so a new
//! op does not build until it has an entry here, and an entry that produces kernels names the
//! `KernelOp`s it may emit (the driver refuses a launch of any other) and whether its launches are
//! row-wise (what the last-token analysis may cut to one row). Weights and literals are `Free`:
//! they are what "constant" means for the folding below.
//!
//! Before the table is consulted, an op whose operands are all constants is skipped: its value is
//! evaluated at compile time, through the op's reference `eval`, by the op that reads it
//! (`Blob::evaluate`). So every entry below is about an op with a run-time operand (or none).

use super::{Lowering, Site, ops};
use crate::BackendError;
use crate::kernel::KernelOp;
use bitnet_ir::OpKind;

/// A per-op lowering function: it appends the op's launches (and their constants) to the lowering.
pub(super) type LowerFn = fn(&mut Lowering<'_>, &Site<'_>) -> Result<(), BackendError>;

/// An op that becomes kernel launches.
#[derive(Clone, Copy)]
pub(super) struct KernelLowering {
    /// Lowers one op of this kind.
    pub(super) lower: LowerFn,
    /// Every kind of kernel `lower` may launch.
    pub(super) emits: &'static [KernelOp],
    /// Its launches compute each token's row from that token's row of operand 0 and constants
    /// alone, so when only the logits need its result they may run for the last token alone
    /// (`super::last_token`).
    pub(super) row_wise: bool,
}

/// What the CPU backend does with an op that has a run-time operand (or no operand).
#[derive(Clone, Copy)]
pub(super) enum OpLowering {
    /// No launch and no buffer of its own: a weight or a literal, placed in the blob where an op
    /// reads it.
    Free,
    /// No launch: the result is its operand's bytes (the memory plan gives both the same buffer).
    View,
    /// An op that, in the models this backend compiles, only computes on weights (scales, layouts,
    /// the lm_head's transpose): it is evaluated at compile time; on a run-time operand it has no
    /// kernel.
    FoldOnly,
    /// Launches of kernels.
    Kernel(KernelLowering),
    /// An op that can reach the backend with a run-time operand but has no kernel, and why.
    Unsupported(&'static str),
}

/// Why an op evaluated only at compile time cannot be lowered with a run-time operand.
pub(super) const FOLD_ONLY: &str =
    "no cpu kernel yet (this op is only evaluated at compile time, on constants)";

/// An entry of launches that may not run for the last token alone.
const fn kernel(lower: LowerFn, emits: &'static [KernelOp]) -> OpLowering {
    OpLowering::Kernel(KernelLowering {
        lower,
        emits,
        row_wise: false,
    })
}

/// An entry of row-wise launches (`KernelLowering::row_wise`).
const fn row_wise_kernel(lower: LowerFn, emits: &'static [KernelOp]) -> OpLowering {
    OpLowering::Kernel(KernelLowering {
        lower,
        emits,
        row_wise: true,
    })
}

/// The CPU backend's entry for `op`.
pub(super) fn lowering(op: OpKind) -> OpLowering {
    match op {
        OpKind::Weight | OpKind::Constant => OpLowering::Free,
        // `nn.stop_gradient` is the identity forward (it only matters to training's backward sweep).
        OpKind::Reshape | OpKind::Squeeze | OpKind::Unsqueeze | OpKind::StopGradient => {
            OpLowering::View
        }
        OpKind::Embedding => kernel(ops::embedding, &[KernelOp::Embedding]),
        OpKind::RmsNormQuant => kernel(ops::rms_norm_quant, &[KernelOp::RmsNormQuant]),
        OpKind::ActQuant => kernel(ops::act_quant, &[KernelOp::ActQuant]),
        OpKind::RmsNorm => row_wise_kernel(ops::rms_norm, &[KernelOp::RmsNorm]),
        OpKind::TernaryMatmulPacked => kernel(ops::ternary_matmul, &[KernelOp::TernaryMatmul]),
        OpKind::Relu2Mul => kernel(ops::relu2_mul, &[KernelOp::Relu2Mul]),
        OpKind::SiluMul => kernel(ops::silu_mul, &[KernelOp::SiluMul]),
        OpKind::Add => kernel(ops::add, &[KernelOp::Add, KernelOp::BiasAdd]),
        OpKind::Rope => kernel(ops::rope, &[KernelOp::Rope]),
        OpKind::Attention => kernel(ops::attention, &[KernelOp::KvStore, KernelOp::Attention]),
        // x·Wᵀ: `head` picks the kernel of the lm_head (f32 or bf16, 16-bit, or int8 or 4-bit with
        // the activation quantization); another such matmul reads f32 or exactly-bf16 weights.
        OpKind::MatMul => row_wise_kernel(
            ops::matmul,
            &[
                KernelOp::MatmulNt,
                KernelOp::MatmulNtHalf,
                KernelOp::ActQuant,
                KernelOp::MatmulI8,
                KernelOp::MatmulQ4,
            ],
        ),
        OpKind::TernaryMatmul => OpLowering::Unsupported(
            "ternary weights must be packed first (run pack-weights with the cpu layout)",
        ),
        // Arithmetic, comparisons, reductions and data movement on weights: absmean scales,
        // reciprocals, rounding and clipping of online-quantized weights, the lm_head's transpose.
        OpKind::Sub
        | OpKind::Mul
        | OpKind::Div
        | OpKind::Pow
        | OpKind::Max
        | OpKind::Min
        | OpKind::Equal
        | OpKind::Neg
        | OpKind::Sqrt
        | OpKind::Reciprocal
        | OpKind::Abs
        | OpKind::Round
        | OpKind::Clip
        | OpKind::ReduceMean
        | OpKind::ReduceMax
        | OpKind::ReduceSum
        | OpKind::Expand
        | OpKind::Transpose
        | OpKind::Concat
        | OpKind::Slice
        | OpKind::Gather
        | OpKind::Cast
        | OpKind::Where => OpLowering::FoldOnly,
        OpKind::Relu | OpKind::Relu2 => OpLowering::Unsupported(
            "no cpu kernel yet (relu²(g)·u runs fused as bit.relu2_mul, after the default pipeline)",
        ),
        OpKind::Silu => OpLowering::Unsupported(
            "no cpu kernel yet (silu(g)·u runs fused as bit.silu_mul, after the default pipeline)",
        ),
        OpKind::Softmax => OpLowering::Unsupported(
            "no cpu kernel yet (the softmax of attention runs inside nn.attention)",
        ),
        OpKind::CrossEntropy => OpLowering::Unsupported(
            "a training loss: it runs in the reference training step (bitnetc train), not in inference",
        ),
        OpKind::Vjp => OpLowering::Unsupported(
            "a backward function's op: it runs in the reference training step (bitnetc train), no cpu kernel yet",
        ),
        OpKind::Sigmoid | OpKind::Tanh | OpKind::Erf | OpKind::Exp | OpKind::LayerNorm => {
            OpLowering::Unsupported("no cpu kernel yet")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::blob::is_constant_source;
    use super::{OpLowering, lowering};
    use crate::kernel::KernelOp;
    use bitnet_ir::OpKind;
    use std::collections::BTreeSet;

    /// The kernel ops each op may emit, for every op with kernels.
    fn emitted() -> Vec<(OpKind, &'static [KernelOp])> {
        OpKind::ALL
            .into_iter()
            .filter_map(|op| match lowering(op) {
                OpLowering::Kernel(k) => Some((op, k.emits)),
                OpLowering::Free
                | OpLowering::View
                | OpLowering::FoldOnly
                | OpLowering::Unsupported(_) => None,
            })
            .collect()
    }

    /// Every op's entry is consistent: a kernel entry names at least one kernel op, each once; an
    /// unsupported entry says why; only weights and literals are free.
    #[test]
    fn every_op_has_a_consistent_entry() {
        for op in OpKind::ALL {
            match lowering(op) {
                OpLowering::Kernel(k) => {
                    assert!(!k.emits.is_empty(), "{op:?} emits no kernel");
                    let distinct: BTreeSet<KernelOp> = k.emits.iter().copied().collect();
                    assert_eq!(distinct.len(), k.emits.len(), "{op:?} names a kernel twice");
                }
                OpLowering::Unsupported(reason) => {
                    assert!(!reason.is_empty(), "{op:?} is unsupported without a reason");
                }
                OpLowering::Free | OpLowering::View | OpLowering::FoldOnly => {}
            }
            // The blob treats exactly the free ops as constants by themselves.
            assert_eq!(
                matches!(lowering(op), OpLowering::Free),
                is_constant_source(op),
                "{op:?}: the table and the blob disagree on whether it is a constant"
            );
        }
    }

    /// Every kind of kernel is emitted by some op: a new `KernelKind` that no op lowers to fails
    /// here, as a new `OpKind` without an entry fails to build.
    #[test]
    fn every_kernel_op_is_emitted_by_some_op() {
        let emitted: BTreeSet<KernelOp> = emitted()
            .into_iter()
            .flat_map(|(_, emits)| emits.iter().copied())
            .collect();
        for k in KernelOp::ALL {
            assert!(emitted.contains(&k), "no op lowers to {k:?}");
        }
    }

    /// The ops the default pipeline leaves for the backend each have kernels.
    #[test]
    fn the_pipeline_ops_have_kernels() {
        let with_kernels: BTreeSet<OpKind> = emitted().into_iter().map(|(op, _)| op).collect();
        for op in [
            OpKind::Embedding,
            OpKind::RmsNormQuant,
            OpKind::TernaryMatmulPacked,
            OpKind::Relu2Mul,
            OpKind::SiluMul,
            OpKind::Add,
            OpKind::RmsNorm,
            OpKind::Rope,
            OpKind::Attention,
            OpKind::MatMul,
        ] {
            assert!(with_kernels.contains(&op), "{op:?} has no kernel");
        }
    }
}
