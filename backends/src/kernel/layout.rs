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

use bitnet_ir::ElemType;
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

    /// The IR element type of this format.
    pub fn elem(self) -> ElemType {
        match self {
            HalfFormat::F16 => ElemType::F16,
            HalfFormat::Bf16 => ElemType::BF16,
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
    let mut bits: Vec<u16> = w.iter().map(|&x| format.bits(x)).collect();
    let overflow = w
        .iter()
        .zip(&bits)
        .any(|(x, &h)| x.is_finite() && !format.value(h).is_finite());
    if overflow {
        return None;
    }
    pair_in_place(&mut bits, k);
    Some(bits)
}

/// The `format` bits of `w` (rows of `k`) in `layout` order when every value is exactly such a
/// number, else `None`: the kernels widen these bits back to the same f32 bits.
///
/// - bf16: every value's low 16 bits zero; the bits are the high halves themselves, so every value,
///   NaN payloads included, widens back exactly;
/// - f16: every value finite and exactly an f16 (`f16_exact`); an embedding kept in a GGUF's or a
///   checkpoint's f16 is stored in half the bytes of f32, bit for bit.
pub fn layout_exact(w: &[f32], k: usize, format: HalfFormat) -> Option<Vec<u16>> {
    let mut bits = exact_bits(w, format)?;
    pair_in_place(&mut bits, k);
    Some(bits)
}

/// The `format` bits of `w` in index order when every value is exactly such a number (as
/// `layout_exact` says), else `None`.
pub fn exact_bits(w: &[f32], format: HalfFormat) -> Option<Vec<u16>> {
    let exact = |x: &f32| match format {
        HalfFormat::Bf16 => {
            let bits = x.to_bits();
            (bits & 0xffff == 0).then_some((bits >> 16) as u16)
        }
        HalfFormat::F16 => f16_exact(x.to_bits()),
    };
    w.iter().map(exact).collect()
}

/// Whether every 16-bit float of `bytes` (little endian) is one the kernels widen exactly: any
/// bf16; a finite f16 (its exponent bits not all set). A fold without an early exit, so it
/// vectorizes.
pub fn stored_exact(bytes: &[u8], format: HalfFormat) -> bool {
    match format {
        HalfFormat::Bf16 => bytes.len().is_multiple_of(2),
        HalfFormat::F16 => {
            let (h, rest) = bytes.as_chunks::<2>();
            rest.is_empty()
                && !h
                    .iter()
                    .fold(false, |any, &[_, hi]| any | (hi & 0x7c == 0x7c))
        }
    }
}

/// 16-bit values stored little endian in `src` (rows of `k`) copied into `dst` (as long; the
/// shorter of the two bounds the copy) in `layout` order; one consecutive range of rows per core,
/// each on its own thread (a 128k-row table is mostly first-touch page faults and copying).
pub fn pairs_into(src: &[u8], k: usize, dst: &mut [u8]) {
    rows_into(src, 2 * k.max(1), dst, |dst| {
        pair_in_place(dst.as_chunks_mut::<2>().0, k)
    });
}

/// `src` copied into `dst` (as long; the shorter of the two bounds the copy), one consecutive
/// range of rows of `row` bytes per core, each on its own thread, each range then given to
/// `finish` (a large table is mostly first-touch page faults and copying).
pub fn rows_into(src: &[u8], row: usize, dst: &mut [u8], finish: impl Fn(&mut [u8]) + Sync) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let row = row.max(1);
    let rows = n.div_ceil(row);
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, rows.max(1));
    let per = rows.div_ceil(threads).max(1) * row;
    let finish = &finish;
    std::thread::scope(|scope| {
        for (src, dst) in src.chunks(per).zip(dst.chunks_mut(per)) {
            scope.spawn(move || {
                dst.copy_from_slice(src);
                finish(dst);
            });
        }
    });
}

/// Rows of `k` values, in index order, put in `layout` order where they are: the order only moves
/// values within each group of eight (`8j + l` and `8j + 4 + l` side by side), and the last
/// `k mod 8` of a row stay.
fn pair_in_place<T: Copy>(v: &mut [T], k: usize) {
    for row in v.chunks_mut(k.max(1)) {
        for g in row.chunks_exact_mut(8) {
            let [a0, a1, a2, a3, b0, b1, b2, b3] = [g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]];
            g.copy_from_slice(&[a0, b0, a1, b1, a2, b2, a3, b3]);
        }
    }
}

/// The f16 bits of the f32 with bits `x` when that value is finite and exactly an f16 (a zero of
/// either sign, a normal f16, or a subnormal one: a multiple of 2⁻²⁴ below 2⁻¹⁴), else `None`.
/// Integer arithmetic only: no rounding is ever needed, and it is fast enough for a 128k-row table.
pub fn f16_exact(x: u32) -> Option<u16> {
    let sign = ((x >> 16) & 0x8000) as u16;
    let biased = ((x >> 23) & 0xff) as i32;
    let mant = x & 0x7f_ffff;
    if biased == 0 {
        // Zero, or an f32 subnormal (below 2⁻¹²⁶: never an f16 but zero).
        return (mant == 0).then_some(sign);
    }
    let e = biased - 127;
    if (-14..=15).contains(&e) {
        // A normal f16: the 13 low mantissa bits must be zero.
        return (mant & 0x1fff == 0)
            .then(|| sign | (((e + 15) as u16) << 10) | (mant >> 13) as u16);
    }
    if (-24..-14).contains(&e) {
        // A subnormal f16 j·2⁻²⁴: the value M·2^(e−23), M = 1.mant in 24 bits, so j = M >> −(e+1)
        // when that shift drops no set bit.
        let m = (1u32 << 23) | mant;
        let shift = (-(e + 1)) as u32;
        return (m.trailing_zeros() >= shift).then(|| sign | (m >> shift) as u16);
    }
    None
}

/// The f32 value of finite f16 bits `h`, as the f16 embedding kernel computes it: the exponent
/// and mantissa moved into an f32's fields (`(h & 0x7fff) << 13`) and scaled by 2¹¹², exact for
/// normal and subnormal f16 alike, then the sign.
pub fn f16_widen(h: u16) -> f32 {
    let scaled = f32::from_bits(u32::from(h & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    f32::from_bits(scaled.to_bits() | (u32::from(h & 0x8000) << 16))
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
    use super::{
        HalfFormat, f16_exact, f16_widen, layout, layout_exact, pair_element, pairs_into,
        stored_exact,
    };

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

    /// Every finite f16 narrows back from its f32 value to itself, and `f16_widen` gives that
    /// value; infinities and NaNs are never exact.
    #[test]
    fn every_finite_f16_round_trips() {
        for h in 0..=u16::MAX {
            let v = half::f16::from_bits(h);
            let x = v.to_f32();
            if v.is_finite() {
                assert_eq!(f16_exact(x.to_bits()), Some(h), "{h:#06x}");
                assert_eq!(f16_widen(h).to_bits(), x.to_bits(), "{h:#06x}");
            } else {
                assert_eq!(f16_exact(x.to_bits()), None, "{h:#06x}");
            }
        }
    }

    /// An f32 is exact exactly when half's rounding gives back the same bits: sampled across every
    /// exponent, with mantissas near the f16 grid and off it.
    #[test]
    fn f16_exact_agrees_with_rounding() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let r = state as u32;
            // Keep few low mantissa bits half the time, so exact values are common.
            let x = if r & 1 == 0 { r & !0x1fff } else { r };
            let v = f32::from_bits(x);
            let h = half::f16::from_f32(v);
            let round_trips = h.is_finite() && h.to_f32().to_bits() == x;
            assert_eq!(f16_exact(x).is_some(), round_trips, "{x:#010x}");
            if round_trips {
                assert_eq!(f16_exact(x), Some(h.to_bits()), "{x:#010x}");
            }
        }
    }

    /// `layout_exact` refuses a table with one inexact value, and orders what it accepts as
    /// `layout` does.
    #[test]
    fn exact_layouts_match_the_rounded_ones() {
        let w: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.25).collect();
        for format in [HalfFormat::F16, HalfFormat::Bf16] {
            assert_eq!(layout_exact(&w, 13, format), layout(&w, 13, format));
            let mut off = w.clone();
            off[20] = 1.0 + f32::EPSILON;
            assert_eq!(layout_exact(&off, 13, format), None);
        }
        assert_eq!(layout_exact(&[65536.0], 1, HalfFormat::F16), None);
        assert_eq!(layout_exact(&[f32::INFINITY], 1, HalfFormat::F16), None);
    }

    /// A stored 16-bit table reorders to the bits `layout_exact` gives for its f32 values; an f16
    /// table with an infinity or a NaN is refused.
    #[test]
    fn stored_tables_reorder_as_their_values() {
        let stored_layout = |h: &[u16], k: usize, format: HalfFormat| {
            let bytes: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
            stored_exact(&bytes, format).then(|| {
                let mut out = vec![0u8; bytes.len()];
                pairs_into(&bytes, k, &mut out);
                out.chunks(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect::<Vec<u16>>()
            })
        };
        // Finite f16s of both signs, subnormals among them.
        let h: Vec<u16> = (0..45u16)
            .map(|i| ((i * 0x2f1) % 0x7c00) | if i % 3 == 0 { 0x8000 } else { 0 })
            .collect();
        for format in [HalfFormat::F16, HalfFormat::Bf16] {
            let values: Vec<f32> = h.iter().map(|&b| format.value(b)).collect();
            let stored = stored_layout(&h, 9, format);
            assert!(stored.is_some(), "{format:?}");
            assert_eq!(stored, layout_exact(&values, 9, format), "{format:?}");
        }
        assert!(stored_layout(&[0x3c00, 0x7c00], 2, HalfFormat::F16).is_none());
        assert!(stored_layout(&[0x3c00, 0x7e01], 2, HalfFormat::F16).is_none());
        assert!(stored_layout(&[0x3c00, 0x7f80], 2, HalfFormat::Bf16).is_some());
    }
}
