//! The launches only the logits need: `Executor::forward_last` runs them for the last token alone,
//! so each such launch carries the row stride of each of its buffers (`Launch::last_token`).

use super::table::{OpLowering, lowering};
use bitnet_ir::module::{Function, OpId};
use bitnet_runtime::{Launch, Region};
use std::collections::BTreeSet;

/// The ops whose launches `Executor::forward_last` may run for the last token alone: walking back
/// from the logits along operand 0, each op whose table entry is row-wise (`nn.matmul`,
/// `nn.rms_norm`) and whose result only the op after it uses.
pub(super) fn last_token_ops(f: &Function) -> BTreeSet<OpId> {
    let uses = f.use_counts();
    let mut ops = BTreeSet::new();
    let mut v = f.returns.first().copied();
    while let Some(value) = v {
        let Some(id) = f.def_op(value) else { break };
        let op = f.op(id);
        let row_wise = match lowering(op.kind) {
            OpLowering::Kernel(k) => k.row_wise,
            OpLowering::Free
            | OpLowering::View
            | OpLowering::FoldOnly
            | OpLowering::Unsupported(_) => false,
        };
        if uses.get(value.index()) != Some(&1) || !row_wise {
            break;
        }
        ops.insert(id);
        v = op.operands.first().copied();
    }
    ops
}

/// Marks `launches[i]` for each `i` of `tail` as runnable for the last token alone, with each
/// buffer's row stride: every activation buffer holds `context` rows of equal size (no stride when
/// its size is not a multiple of `context`); weights are shared by all tokens (stride 0).
pub(super) fn mark_last_token(launches: &mut [Launch], tail: &[usize], context: u64) {
    for &i in tail {
        if let Some(l) = launches.get_mut(i) {
            let strides = l
                .bufs
                .iter()
                .map(|b| match b.region {
                    Region::Weights => Some(0),
                    Region::Arena | Region::Kv => {
                        (b.bytes % context.max(1) == 0).then(|| b.bytes / context.max(1))
                    }
                })
                .collect();
            l.last_token = strides;
        }
    }
}
