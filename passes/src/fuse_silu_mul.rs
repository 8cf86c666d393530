//! `fuse-silu-mul`: `nn.mul(nn.silu(g), u)` (or `nn.mul(u, nn.silu(g))`) becomes one
//! `bit.silu_mul %g, %u`: the SiLU-gated MLP activation of Llama-shaped models in one elementwise op,
//! so the gate's silu is never written to memory.
//!
//! Needs: nothing but the module. Guarantees: results are bit-identical, because `bit.silu_mul` is
//! defined as exactly the unfused pair (the silu rounded to f32 first, then the f32 product);
//! multiplication is commutative in IEEE arithmetic, so the commuted form fuses too (NaN payloads
//! aside). Only f32 operands of one shape fuse (the op's type rule); the silu result must have no other
//! use (not even being returned); otherwise the pair is left alone.
//!
//! Before → after (`tests/filetests/passes/fuse_silu_mul.bir`):
//! ```text
//! %s = nn.silu %g : tensor<Tx8xf32>
//! %h = nn.mul %s, %u : tensor<Tx8xf32>          →   %h = bit.silu_mul %g, %u : tensor<Tx8xf32>
//! ```

use crate::{Pass, PassContext, PassError};
use bitnet_ir::attr::Attrs;
use bitnet_ir::module::{Function, Module, OpId};
use bitnet_ir::{ElemType, OpKind, ValueId};

/// The `fuse-silu-mul` pass.
pub struct FuseSiluMul;

impl Pass for FuseSiluMul {
    fn name(&self) -> &'static str {
        "fuse-silu-mul"
    }

    fn summary(&self) -> &'static str {
        "fuse nn.mul(nn.silu(g), u) into bit.silu_mul (the SiLU-gated MLP)"
    }

    fn run(&self, module: &mut Module, cx: &mut PassContext) -> Result<bool, PassError> {
        Ok(crate::fuse_each_function(
            module,
            cx,
            self.name(),
            "silu × up product(s)",
            fuse_function,
        ))
    }
}

/// The gate `g` if `v` is `nn.silu %g` used exactly once.
fn single_use_silu(f: &Function, v: ValueId, counts: &[usize]) -> Option<ValueId> {
    let op = f.op(f.def_op(v)?);
    (op.kind == OpKind::Silu && counts.get(v.index()) == Some(&1))
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
        let Some((g, u)) = single_use_silu(f, a, &counts)
            .map(|g| (g, b))
            .or_else(|| single_use_silu(f, b, &counts).map(|g| (g, a)))
        else {
            continue;
        };
        // `bit.silu_mul`'s type rule: f32 operands of one shape, which is then the product's type.
        let ty = f.ty(y).clone();
        if ty.elem != ElemType::F32 || f.ty(g) != &ty || f.ty(u) != &ty {
            continue;
        }
        let new = f.insert_op_before(mul, OpKind::SiluMul, vec![g, u], Attrs::new(), vec![ty]);
        f.replace_uses(y, new[0]);
        f.values[new[0].index()].name = f.values[y.index()].name.take();
        fused += 1;
    }
    fused
}
