//! `fuse-residual`: `nn.add(h, y)` (or `nn.add(y, h)`) where `y` is a `bit.ternary_matmul` used only
//! there becomes `bit.ternary_matmul … , %h`: the residual add moves into the matmul's epilogue, so the
//! projection's output is written once, already summed.
//!
//! Needs: nothing but the module (run after `lower-bitlinear`). Guarantees: results are bit-identical,
//! because the residual operand is added in the same single f32 rounding as the separate `nn.add`
//! (IEEE addition is commutative, NaN payloads aside). Only when `h`, `y` and the sum have the same type
//! (no broadcasting) and the matmul has no residual yet; anything else is left alone.
//!
//! Before → after (`tests/filetests/passes/fuse_residual.bir`):
//! ```text
//! %y = bit.ternary_matmul %q, %s, %w, %g : tensor<Tx4xf32>
//! %z = nn.add %h, %y : tensor<Tx4xf32>          →   %z = bit.ternary_matmul %q, %s, %w, %g, %h : …
//! ```

use crate::{Pass, PassContext, PassError};
use bitnet_ir::attr::Attrs;
use bitnet_ir::module::{Function, Module, OpId};
use bitnet_ir::{OpKind, ValueId};

/// The `fuse-residual` pass.
pub struct FuseResidual;

impl Pass for FuseResidual {
    fn name(&self) -> &'static str {
        "fuse-residual"
    }

    fn summary(&self) -> &'static str {
        "fuse a residual nn.add into the epilogue of the bit.ternary_matmul it adds"
    }

    fn run(&self, module: &mut Module, cx: &mut PassContext) -> Result<bool, PassError> {
        Ok(crate::fuse_each_function(
            module,
            cx,
            self.name(),
            "residual add(s) into matmul epilogues",
            fuse_function,
        ))
    }
}

/// The operands of `v`'s matmul if `v` is a residual-free `bit.ternary_matmul` used exactly once.
fn single_use_matmul(f: &Function, v: ValueId, counts: &[usize]) -> Option<Vec<ValueId>> {
    let op = f.op(f.def_op(v)?);
    (op.kind == OpKind::TernaryMatmul
        && op.operands.len() == 4
        && counts.get(v.index()) == Some(&1))
    .then(|| op.operands.clone())
}

/// Fuses every matching add of `f`; returns how many.
fn fuse_function(f: &mut Function) -> usize {
    let counts = f.use_counts();
    let adds: Vec<OpId> = f
        .op_order()
        .filter(|&id| f.op(id).kind == OpKind::Add)
        .collect();
    let mut fused = 0;
    for add in adds {
        let op = f.op(add).clone();
        let (&[a, b], &[z]) = (op.operands.as_slice(), op.results.as_slice()) else {
            continue;
        };
        // The usual form is `h + proj(h')`: try the right operand first.
        let Some((mut operands, h)) = single_use_matmul(f, b, &counts)
            .map(|m| (m, a))
            .or_else(|| single_use_matmul(f, a, &counts).map(|m| (m, b)))
        else {
            continue;
        };
        let ty = f.ty(z).clone();
        if f.ty(a) != &ty || f.ty(b) != &ty {
            continue;
        }
        operands.push(h);
        let new = f.insert_op_before(add, OpKind::TernaryMatmul, operands, Attrs::new(), vec![ty]);
        f.replace_uses(z, new[0]);
        f.values[new[0].index()].name = f.values[z.index()].name.take();
        fused += 1;
    }
    fused
}
