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

use crate::gated_product::GatedProduct;
use crate::{Pass, PassContext, PassError};
use bitnet_ir::OpKind;
use bitnet_ir::module::{Function, Module};

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

/// `bit.relu2_mul`'s type rule as the product sees it: the same float element type throughout (relu2
/// keeps its operand's type).
const RELU2_MUL: GatedProduct = GatedProduct {
    activation: OpKind::Relu2,
    fused: OpKind::Relu2Mul,
    accepts: |g, u, y| y.elem.is_float() && g.elem == y.elem && u.elem == y.elem,
};

/// Fuses every matching product of `f`; returns how many.
fn fuse_function(f: &mut Function) -> usize {
    RELU2_MUL.fuse(f)
}
