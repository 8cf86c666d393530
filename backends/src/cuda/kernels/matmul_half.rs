//! CUDA kernel for `MatmulNtHalf` (the lm_head on 16-bit float weights; buffers as `KernelKind`
//! documents): the float matmul of `matmul.rs` on rows in `layout::layout` order, each group of
//! eight weights one 16-byte load when K is a multiple of 8 (`layout::pair_element` maps a storage
//! index back to its element). Numerics as `matmul.rs` states them.

use super::super::emit::R;
use super::matmul::{Weights, build_float_matmul};
use crate::kernel::MatmulNtHalfParams;
use inkwell::context::Context;
use inkwell::module::Module;

/// Defines the kernel `p` named `name`.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &MatmulNtHalfParams,
) -> R<()> {
    build_float_matmul(cx, m, name, p.k, p.n, Weights::Pairs(p.format))
}
