//! `differentiate`: each function whose first result is a loss (one float element, static shape)
//! becomes its training-step function, `bitnet_ir::autodiff::emit_backward`'s: the forward ops, then
//! one `nn.vjp` per operand a gradient flows to (that op's own rule) and `nn.add` for the sums;
//! results: the loss, then the gradient of every float argument the loss depends on (in argument
//! order), then of every weight it reads (by name). A function with another first result is left
//! alone, with a note.
//!
//! Needs: nothing but the module. Guarantees: interpreted, the new function gives the reverse sweep's
//! (`autodiff::backward`) loss and gradients bit for bit. It is not part of any inference pipeline:
//! a backend has no kernels for `nn.vjp` yet.
//!
//! Before → after (`tests/filetests/passes/differentiate.bir`):
//! ```text
//! %p = nn.mul %x, %y : tensor<3xf32>                %p = nn.mul %x, %y : tensor<3xf32>
//! %l = nn.reduce_sum %p {..} : tensor<f32>     →    %l = nn.reduce_sum %p {..} : tensor<f32>
//! return %l                                         %1 = nn.constant {value = [1.0]} : tensor<f64>
//!                                                   %2 = nn.vjp %p, %l, %1 {of = "nn.reduce_sum", ..}
//!                                                   %3 = nn.vjp %x, %y, %p, %2 {of = "nn.mul", wrt = 0, ..}
//!                                                   ...
//!                                                   return %l, %3, %4
//! ```

use crate::{Pass, PassContext, PassError};
use bitnet_ir::Function;
use bitnet_ir::autodiff::{emit_backward, is_loss_type};
use bitnet_ir::module::Module;

/// The `differentiate` pass.
pub struct Differentiate;

/// Whether `f`'s first result is a loss `emit_backward` takes.
fn has_loss(f: &Function) -> bool {
    f.result_types.first().is_some_and(is_loss_type)
}

impl Pass for Differentiate {
    fn name(&self) -> &'static str {
        "differentiate"
    }

    fn summary(&self) -> &'static str {
        "turn each function with a scalar loss into its training step: the loss and its gradients (nn.vjp)"
    }

    fn run(&self, module: &mut Module, cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        for f in &mut module.functions {
            if !has_loss(f) {
                cx.notes.push(format!(
                    "differentiate @{}: left alone (its first result is not one float element)",
                    f.name
                ));
                continue;
            }
            let wrt = vec![true; f.args.len()];
            let b = emit_backward(f, 0, &wrt).map_err(|e| PassError::Failed {
                pass: "differentiate",
                message: format!("@{}: {e}", f.name),
            })?;
            let vjps = b
                .function
                .ops
                .iter()
                .filter(|o| o.kind == bitnet_ir::OpKind::Vjp)
                .count();
            let args = b.args.iter().flatten().count();
            cx.notes.push(format!(
                "differentiate @{}: {vjps} nn.vjp; gradients of {args} argument(s) and {} weight(s)",
                f.name,
                b.weights.len()
            ));
            *f = b.function;
            changed = true;
        }
        Ok(changed)
    }
}
