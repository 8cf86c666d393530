//! `fuse-relu2-mul`: `nn.mul(nn.relu2(g), u)` (or `nn.mul(u, nn.relu2(g))`) becomes one
//! `bit.relu2_mul %g, %u`: BitNet's gated FFN activation in one elementwise op, so the squared gate is
//! never written to memory.
//!
//! Needs: nothing but the module. Guarantees: results are bit-identical, because `bit.relu2_mul` is
//! defined as exactly the unfused pair (f64 products rounded once, the square rounded to the element
//! type first); multiplication is commutative in IEEE arithmetic, so the commuted form fuses too (NaN
//! payloads aside). The relu2 result must have no other use (not even being returned); otherwise the
//! pair is left alone.
//!
//! Before → after (`tests/filetests/passes/fuse_relu2_mul.bir`):
//! ```text
//! %r = nn.relu2 %g : tensor<Tx8xf32>
//! %h = nn.mul %r, %u : tensor<Tx8xf32>          →   %h = bit.relu2_mul %g, %u : tensor<Tx8xf32>
//! ```

use crate::{Pass, PassContext, PassError};
use bitnet_ir::attr::Attrs;
use bitnet_ir::module::{Function, Module, OpId};
use bitnet_ir::{OpKind, ValueId};

/// The `fuse-relu2-mul` pass.
pub struct FuseRelu2Mul;

impl Pass for FuseRelu2Mul {
    fn name(&self) -> &'static str {
        "fuse-relu2-mul"
    }

    fn summary(&self) -> &'static str {
        "fuse nn.mul(nn.relu2(g), u) into bit.relu2_mul (the squared-ReLU gated FFN)"
    }

    fn run(&self, module: &mut Module, cx: &mut PassContext) -> Result<bool, PassError> {
        Ok(crate::fuse_each_function(
            module,
            cx,
            self.name(),
            "relu2 × up product(s)",
            fuse_function,
        ))
    }
}

/// The gate `g` if `v` is `nn.relu2 %g` used exactly once.
fn single_use_relu2(f: &Function, v: ValueId, counts: &[usize]) -> Option<ValueId> {
    let op = f.op(f.def_op(v)?);
    (op.kind == OpKind::Relu2 && counts.get(v.index()) == Some(&1))
        .then(|| op.operands.first().copied())
        .flatten()
}

/// Fuses every matching product of `f`; returns how many.
fn fuse_function(f: &mut Function) -> usize {
    let counts = f.use_counts();
    let muls: Vec<OpId> = f
        .op_order()
        .filter(|&id| f.op(id).kind == OpKind::Mul)
        .collect();
    let mut fused = 0;
    for mul in muls {
        let op = f.op(mul).clone();
        let (&[a, b], &[y]) = (op.operands.as_slice(), op.results.as_slice()) else {
            continue;
        };
        let Some((g, u)) = single_use_relu2(f, a, &counts)
            .map(|g| (g, b))
            .or_else(|| single_use_relu2(f, b, &counts).map(|g| (g, a)))
        else {
            continue;
        };
        // The same type rule as the product, on the gate itself (relu2 keeps its operand's type).
        let ty = f.ty(y).clone();
        if !ty.elem.is_float() || f.ty(g).elem != ty.elem || f.ty(u).elem != ty.elem {
            continue;
        }
        let new = f.insert_op_before(mul, OpKind::Relu2Mul, vec![g, u], Attrs::new(), vec![ty]);
        f.replace_uses(y, new[0]);
        f.values[new[0].index()].name = f.values[y.index()].name.take();
        fused += 1;
    }
    fused
}
