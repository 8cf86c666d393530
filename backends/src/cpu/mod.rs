//! The CPU backend (Cranelift): kernels (`kernels`), JIT compilation (`jit`), ahead-of-time objects,
//! shared libraries and artifacts (`aot`), and the lowering of a planned module into a launch plan and
//! a `bitnet_runtime::Program` (`lower`).
//!
//! Ternary weights are packed, by the `pack-weights` pass, into the layout this backend describes
//! here: blocks of `PACK_BLOCK` = 64 elements along K (K padded with zeros to a whole block), element
//! `j` of a block in byte `j % 16` at shift `6 − 2·(j / 16)` (`PackOrder::I2s`), code `t + 1`. One
//! 16-byte load holds a block; shifting it right by 6, 4, 2, 0 and masking with 3 yields the codes of
//! elements 0–15, 16–31, 32–47 and 48–63 as sixteen u8 lanes each.

pub mod aot;
pub mod jit;
pub mod kernels;
pub mod lower;

use bitnet_ir::ops::ternary_matmul_packed::PackOrder;

/// Elements per packed block along K.
pub const PACK_BLOCK: usize = 64;
/// Where each element's code sits in its block.
pub const PACK_ORDER: PackOrder = PackOrder::I2s;
