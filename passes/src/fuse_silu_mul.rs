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

use crate::gated_product::GatedProduct;
use crate::{Pass, PassContext, PassError};
use bitnet_ir::module::{Function, Module};
use bitnet_ir::{ElemType, OpKind};

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

/// `bit.silu_mul`'s type rule: f32 operands of one shape, which is then the product's type.
const SILU_MUL: GatedProduct = GatedProduct {
    activation: OpKind::Silu,
    fused: OpKind::SiluMul,
    accepts: |g, u, y| y.elem == ElemType::F32 && g == y && u == y,
};

/// Fuses every matching product of `f`; returns how many.
fn fuse_function(f: &mut Function) -> usize {
    SILU_MUL.fuse(f)
}
