//! The weight layouts kernels read, the same on both backends: the ternary packing of
//! `KernelKind::TernaryMatmul` (`PACK_BLOCK`, `PACK_ORDER`) and the 16-bit float rows of
//! `KernelKind::MatmulNtHalf` and of a bf16 `KernelKind::Embedding` (`layout`).
//!
//! Ternary weights are packed, by the `pack-weights` pass, in blocks of `PACK_BLOCK` = 64 elements
//! along K (K padded with zeros to a whole block), element `j` of a block in byte `j % 16` at shift
//! `6 − 2·(j / 16)` (`PackOrder::I2s`), code `t + 1`. One 16-byte load holds a block; shifting it
//! right by 6, 4, 2, 0 and masking with 3 yields the codes of elements 0–15, 16–31, 32–47 and 48–63
//! as sixteen u8 lanes each (the CPU kernel), and a warp reads a row's blocks as contiguous 16-byte
//! vectors (the CUDA kernel).
//!
//! 16-bit float rows: per group of eight weights, i32 lane l of the group's 16 bytes holds weight l
//! in its low half and weight 4 + l in its high half, then the last `k mod 8` weights in order.
//! One 16-byte load then gives both halves of a group without a shuffle.

use bitnet_ir::ops::ternary_matmul_packed::PackOrder;

/// Elements per packed block along K.
pub const PACK_BLOCK: usize = 64;
/// Where each element's code sits in its block.
pub const PACK_ORDER: PackOrder = PackOrder::I2s;

/// A 16-bit float format of the weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HalfFormat {
    /// IEEE binary16.
    F16,
    /// bfloat16 (the high half of an f32).
    Bf16,
}

impl HalfFormat {
    /// The format's name in kernel symbols.
    pub fn name(self) -> &'static str {
        match self {
            HalfFormat::F16 => "f16",
            HalfFormat::Bf16 => "bf16",
        }
    }

    /// The bits of `x` in this format, rounded to nearest even.
    pub fn bits(self, x: f32) -> u16 {
        match self {
            HalfFormat::F16 => half::f16::from_f32(x).to_bits(),
            HalfFormat::Bf16 => half::bf16::from_f32(x).to_bits(),
        }
    }

    /// The value of `bits` in this format.
    pub fn value(self, bits: u16) -> f32 {
        match self {
            HalfFormat::F16 => half::f16::from_bits(bits).to_f32(),
            HalfFormat::Bf16 => half::bf16::from_bits(bits).to_f32(),
        }
    }
}

/// The weights `w` (`[rows, k]` f32, row-major) as `format` bits (round to nearest even) in the
/// kernel's order: per row, groups of eight with weights `8j + l` and `8j + 4 + l` side by side
/// (l < 4), then the last `k mod 8` in order. Returns `None` if a finite weight overflows.
pub fn layout(w: &[f32], k: usize, format: HalfFormat) -> Option<Vec<u16>> {
    let k = k.max(1);
    let mut out = Vec::with_capacity(w.len());
    for row in w.chunks(k) {
        let groups = row.len() / 8;
        for g in row.chunks_exact(8) {
            for l in 0..4 {
                out.push(g[l]);
                out.push(g[4 + l]);
            }
        }
        out.extend_from_slice(&row[groups * 8..]);
    }
    let bits: Vec<u16> = out.iter().map(|&x| format.bits(x)).collect();
    let overflow = out
        .iter()
        .zip(&bits)
        .any(|(x, &h)| x.is_finite() && !format.value(h).is_finite());
    (!overflow).then_some(bits)
}

/// The bf16 bits of `w` (rows of `k`) in `layout` order when every value is exactly a bf16 (the
/// low half of its f32 bits zero), else `None`. The bits are the high halves themselves, so every
/// value, NaN payloads included, widens back to the same f32 bits.
pub fn bf16_layout_exact(w: &[f32], k: usize) -> Option<Vec<u16>> {
    if w.iter().any(|x| x.to_bits() & 0xffff != 0) {
        return None;
    }
    let k = k.max(1);
    let high = |x: &f32| (x.to_bits() >> 16) as u16;
    let mut out = Vec::with_capacity(w.len());
    for row in w.chunks(k) {
        let groups = row.len() / 8;
        for g in row.chunks_exact(8) {
            for l in 0..4 {
                out.push(high(&g[l]));
                out.push(high(&g[4 + l]));
            }
        }
        out.extend(row[groups * 8..].iter().map(high));
    }
    Some(out)
}

/// Where storage index `s` of a row (of `k`) puts its element, in `layout` order (the inverse of
/// `layout`'s reordering).
pub fn pair_element(s: u64, k: u64) -> u64 {
    if s >= k / 8 * 8 {
        return s;
    }
    let (g, l) = (s / 8, s % 8);
    8 * g + (l % 2) * 4 + l / 2
}

#[cfg(test)]
mod tests {
    use super::{HalfFormat, layout, pair_element};

    /// `pair_element` inverts `layout` at awkward K (groups and a tail).
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
