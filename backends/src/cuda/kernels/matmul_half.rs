//! CUDA kernel for `MatmulNtHalf` (the lm_head on 16-bit float weights; buffers as `KernelKind`
//! documents): the float matmul of `matmul.rs` on rows in `layout::layout` order, each group of
//! eight weights one 16-byte load when K is a multiple of 8; `pair_element` maps a storage index
//! back to its element. Numerics as `matmul.rs` states them.

use super::super::emit::R;
use super::matmul::{Weights, build_float_matmul};
use crate::kernel::MatmulNtHalfParams;
use inkwell::context::Context;
use inkwell::module::Module;

/// Where storage index `s` of a row (of `k`) puts its element, in `layout::layout` order.
pub fn pair_element(s: u64, k: u64) -> u64 {
    if s >= k / 8 * 8 {
        return s;
    }
    let (g, l) = (s / 8, s % 8);
    8 * g + (l % 2) * 4 + l / 2
}

/// Defines the kernel `p` named `name`.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &MatmulNtHalfParams,
) -> R<()> {
    build_float_matmul(cx, m, name, p.k, p.n, Weights::Pairs(p.format))
}

#[cfg(test)]
mod tests {
    use super::pair_element;
    use crate::kernel::layout::{HalfFormat, layout};

    /// `pair_element` inverts `layout::layout` at awkward K (groups and a tail).
    #[test]
    fn pair_order_matches_the_layout() {
        for k in [1u64, 7, 8, 13, 16, 37] {
            let w: Vec<f32> = (0..k).map(|i| i as f32).collect();
            let bits = layout(&w, k as usize, HalfFormat::F16).unwrap_or_default();
            for (s, &b) in bits.iter().enumerate() {
                let e = pair_element(s as u64, k);
                assert_eq!(HalfFormat::F16.value(b), e as f32, "k {k} storage {s}");
            }
        }
    }
}
