//! The matcher both gated-product fusions share (`fuse-relu2-mul`, `fuse-silu-mul`): every
//! `nn.mul(act(g), u)` or `nn.mul(u, act(g))` whose activation result has no other use (not even
//! being returned) becomes one fused op `fused(g, u)` with the product's type and name, where the
//! fused op's type rule accepts the operands. Multiplication is commutative in IEEE arithmetic, so
//! the commuted form fuses too (NaN payloads aside). The activation ops left dead are removed by the
//! pass driver (`fuse_each_function`).

use bitnet_ir::attr::Attrs;
use bitnet_ir::module::{Function, OpId};
use bitnet_ir::{OpKind, TensorType, ValueId};

/// One gated-product fusion.
pub(crate) struct GatedProduct {
    /// The gate's activation (`nn.relu2`, `nn.silu`).
    pub activation: OpKind,
    /// The fused op that replaces the product.
    pub fused: OpKind,
    /// The fused op's type rule on (gate, up, product): the pair is left alone when it says no.
    pub accepts: fn(gate: &TensorType, up: &TensorType, product: &TensorType) -> bool,
}

impl GatedProduct {
    /// The gate `g` if `v` is `activation %g` used exactly once.
    fn single_use_gate(&self, f: &Function, v: ValueId, counts: &[usize]) -> Option<ValueId> {
        let op = f.op(f.def_op(v)?);
        (op.kind == self.activation && counts.get(v.index()) == Some(&1))
            .then(|| op.operands.first().copied())
            .flatten()
    }

    /// Fuses every matching product of `f`; returns how many.
    pub(crate) fn fuse(&self, f: &mut Function) -> usize {
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
            let Some((g, u)) = self
                .single_use_gate(f, a, &counts)
                .map(|g| (g, b))
                .or_else(|| self.single_use_gate(f, b, &counts).map(|g| (g, a)))
            else {
                continue;
            };
            let ty = f.ty(y).clone();
            if !(self.accepts)(f.ty(g), f.ty(u), &ty) {
                continue;
            }
            let new = f.insert_op_before(mul, self.fused, vec![g, u], Attrs::new(), vec![ty]);
            f.replace_uses(y, new[0]);
            f.values[new[0].index()].name = f.values[y.index()].name.take();
            fused += 1;
        }
        fused
    }
}
