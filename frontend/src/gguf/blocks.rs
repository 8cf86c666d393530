//! Decoders for ggml's block formats, on the raw bytes of a whole tensor. Each checks that the byte
//! length is exactly what `n` elements need before reading, and returns elements in file order (ne0
//! fastest). Layouts follow ggml's `ggml-common.h` and `dequantize_row_*` in `ggml-quants.c`:
//!
//! - Q8_0, 34 bytes per 32: f16 `d`, 32 × i8 `q`; `x = q·d`.
//! - Q4_0, 18 bytes per 32: f16 `d`, 16 bytes; element `j < 16` is the low nibble of byte `j`,
//!   element `j + 16` its high nibble; `x = (q − 8)·d`.
//! - Q4_1, 20 bytes per 32: f16 `d`, f16 `m`, 16 bytes as in Q4_0; `x = q·d + m`.
//! - Q5_0, 22 bytes per 32: f16 `d`, `qh` (u32, little-endian), 16 bytes of nibbles as in Q4_0; bit `j`
//!   of `qh` is bit 4 of element `j`; `x = (q − 16)·d`.
//! - Q5_1, 24 bytes per 32: f16 `d`, f16 `m`, `qh` and nibbles as in Q5_0; `x = q·d + m`.
//!
//! The K-quants (256-element super-blocks) are in `kquants`. Every decoder computes in f32 in the order
//! gguf-py's `dequantize_blocks` does (an f16 widened to f32, one rounding per multiply or add, never
//! fused), so the results agree with gguf-py bit for bit.
//! - TQ2_0, 66 bytes per 256: `qs[64]`, f16 `d`; element `128h + 32k + m` is
//!   `((qs[32h + m] >> 2k) & 3) − 1` (formats.md §4.3). ggml reads code 3 as +2; so does this decoder.
//! - TQ1_0, 54 bytes per 256: `qs[48]`, `qh[4]`, f16 `d`; five base-3 trits per byte, most significant
//!   first, trit `n` of byte `b` is `((b·3ⁿ mod 256)·3) >> 8` (formats.md §4.4).
//! - I2_S (x86 `ACT_PARALLEL`), 32 bytes per 128 and a 32-byte trailer whose first 4 bytes are the f32
//!   scale; element `j` of a block is bits `6 − 2·(j / 32)` of byte `j % 32`, code `t + 1`; code 3 is
//!   not ternary and is rejected (formats.md §4.5; see the `gguf` module header on other layouts).

use half::f16;

/// Elements per Q4_0 / Q4_1 / Q8_0 block.
pub const QK32: usize = 32;
/// Elements per TQ1_0 / TQ2_0 block (ggml's QK_K).
pub const QK_K: usize = 256;
/// Elements per I2_S block (x86 `ACT_PARALLEL`).
pub const QK_I2_S: usize = 128;
/// Bytes of a Q8_0 block.
pub const Q8_0_BYTES: usize = 34;
/// Bytes of a Q4_0 block.
pub const Q4_0_BYTES: usize = 18;
/// Bytes of a Q4_1 block.
pub const Q4_1_BYTES: usize = 20;
/// Bytes of a Q5_0 block.
pub const Q5_0_BYTES: usize = 22;
/// Bytes of a Q5_1 block.
pub const Q5_1_BYTES: usize = 24;
/// Bytes of a TQ1_0 block.
pub const TQ1_0_BYTES: usize = 54;
/// Bytes of a TQ2_0 block.
pub const TQ2_0_BYTES: usize = 66;
/// Bytes after the codes of an I2_S tensor.
pub const I2_S_TRAILER: usize = 32;

/// Ternary values decoded from blocks, with each block's scale.
#[derive(Clone, Debug, PartialEq)]
pub struct TernaryBlocks {
    /// One value per element, in {-1, 0, +1} (TQ2_0 code 3 gives +2).
    pub values: Vec<i8>,
    /// Each block's f16 `d`, in block order.
    pub scales: Vec<f16>,
}

/// Checks that `bytes` holds exactly the blocks of `n` elements; returns the block count.
pub(super) fn check_len(
    bytes: &[u8],
    n: usize,
    block: usize,
    block_bytes: usize,
    what: &str,
) -> Result<usize, String> {
    if !n.is_multiple_of(block) {
        return Err(format!(
            "{what}: {n} elements are not a whole number of {block}-element blocks"
        ));
    }
    let blocks = n / block;
    let need = blocks
        .checked_mul(block_bytes)
        .ok_or_else(|| format!("{what}: the byte size of {n} elements overflows"))?;
    if bytes.len() != need {
        return Err(format!(
            "{what}: {n} elements need {need} bytes, the tensor has {}",
            bytes.len()
        ));
    }
    Ok(blocks)
}

/// Iterates over the fixed-size blocks of `bytes` (whose length `check_len` verified).
pub(super) fn blocks_of<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes
        .chunks_exact(N)
        .map(|c| c.try_into().unwrap_or([0; N]))
}

/// The little-endian f16 in `lo`, `hi`, widened to f32 (exactly).
pub(super) fn half(lo: u8, hi: u8) -> f32 {
    f16::from_le_bytes([lo, hi]).to_f32()
}

/// Q8_0 blocks to f32.
pub fn dequantize_q8_0(bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    check_len(bytes, n, QK32, Q8_0_BYTES, "Q8_0")?;
    let mut out = Vec::with_capacity(n);
    for b in blocks_of::<Q8_0_BYTES>(bytes) {
        let d = half(b[0], b[1]);
        out.extend(b[2..].iter().map(|&q| f32::from(q as i8) * d));
    }
    Ok(out)
}

/// Q4_0 blocks to f32.
pub fn dequantize_q4_0(bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    check_len(bytes, n, QK32, Q4_0_BYTES, "Q4_0")?;
    let mut out = Vec::with_capacity(n);
    for b in blocks_of::<Q4_0_BYTES>(bytes) {
        let d = half(b[0], b[1]);
        let qs = &b[2..];
        out.extend(qs.iter().map(|&q| f32::from(i16::from(q & 0x0f) - 8) * d));
        out.extend(qs.iter().map(|&q| f32::from(i16::from(q >> 4) - 8) * d));
    }
    Ok(out)
}

/// Q4_1 blocks to f32.
pub fn dequantize_q4_1(bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    check_len(bytes, n, QK32, Q4_1_BYTES, "Q4_1")?;
    let mut out = Vec::with_capacity(n);
    for b in blocks_of::<Q4_1_BYTES>(bytes) {
        let d = half(b[0], b[1]);
        let m = half(b[2], b[3]);
        let qs = &b[4..];
        out.extend(qs.iter().map(|&q| f32::from(q & 0x0f) * d + m));
        out.extend(qs.iter().map(|&q| f32::from(q >> 4) * d + m));
    }
    Ok(out)
}

/// The 32 five-bit codes of a Q5_0 / Q5_1 block from its `qh` bytes and 16 nibble bytes: element `j <
/// 16` is the low nibble of `qs[j]`, element `j + 16` the high one, and bit `j` of `qh` is bit 4.
fn q5_codes(qh: &[u8], qs: &[u8]) -> [u8; QK32] {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = [0u8; QK32];
    for (j, &byte) in qs.iter().enumerate().take(QK32 / 2) {
        let bit = |k: usize| (((high >> k) & 1) as u8) << 4;
        q[j] = (byte & 0x0f) | bit(j);
        q[j + 16] = (byte >> 4) | bit(j + 16);
    }
    q
}

/// Q5_0 blocks to f32.
pub fn dequantize_q5_0(bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    check_len(bytes, n, QK32, Q5_0_BYTES, "Q5_0")?;
    let mut out = Vec::with_capacity(n);
    for b in blocks_of::<Q5_0_BYTES>(bytes) {
        let d = half(b[0], b[1]);
        let q = q5_codes(&b[2..6], &b[6..]);
        out.extend(q.iter().map(|&q| d * f32::from(i16::from(q) - 16)));
    }
    Ok(out)
}

/// Q5_1 blocks to f32.
pub fn dequantize_q5_1(bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    check_len(bytes, n, QK32, Q5_1_BYTES, "Q5_1")?;
    let mut out = Vec::with_capacity(n);
    for b in blocks_of::<Q5_1_BYTES>(bytes) {
        let d = half(b[0], b[1]);
        let m = half(b[2], b[3]);
        let q = q5_codes(&b[4..8], &b[8..]);
        out.extend(q.iter().map(|&q| d * f32::from(q) + m));
    }
    Ok(out)
}

/// Trit `n` (0 = most significant) of a TQ1_0 byte, as a value in {-1, 0, +1}.
pub fn tq1_0_trit(byte: u8, n: usize) -> i8 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let q = byte.wrapping_mul(POW3.get(n).copied().unwrap_or(0));
    // (q·3) >> 8 is at most 2 for any u8 q, so the cast is exact.
    ((u16::from(q) * 3) >> 8) as i8 - 1
}

/// TQ1_0 blocks to ternary values and block scales.
pub fn decode_tq1_0(bytes: &[u8], n: usize) -> Result<TernaryBlocks, String> {
    let nb = check_len(bytes, n, QK_K, TQ1_0_BYTES, "TQ1_0")?;
    let mut values = Vec::with_capacity(n);
    let mut scales = Vec::with_capacity(nb);
    for b in blocks_of::<TQ1_0_BYTES>(bytes) {
        let (qs, rest) = b.split_at(48);
        let (qh, d) = rest.split_at(4);
        let (first, second) = qs.split_at(32);
        for part in [first, second] {
            for n in 0..5 {
                values.extend(part.iter().map(|&q| tq1_0_trit(q, n)));
            }
        }
        for n in 0..4 {
            values.extend(qh.iter().map(|&q| tq1_0_trit(q, n)));
        }
        scales.push(f16::from_le_bytes([d[0], d[1]]));
    }
    Ok(TernaryBlocks { values, scales })
}

/// TQ2_0 blocks to values in {-1, 0, +1} (or +2 for the unused code 3) and block scales.
///
/// Byte `i` of a block's 64 code bytes holds elements `128·(i/32) + 32·k + i%32` for k = 0…3 at
/// bits 2k; the loop writes each element in place (no per-element push), which the compiler vectorizes.
pub fn decode_tq2_0(bytes: &[u8], n: usize) -> Result<TernaryBlocks, String> {
    let nb = check_len(bytes, n, QK_K, TQ2_0_BYTES, "TQ2_0")?;
    // Filled block by block, not zeroed first: a 2B model's projections are 2.4 G values, and
    // zeroing reused heap memory for them cost a fifth of a compile.
    let mut values = Vec::with_capacity(nb * QK_K);
    let mut scales = Vec::with_capacity(nb);
    let mut block = [0i8; QK_K];
    for b in bytes.chunks_exact(TQ2_0_BYTES).take(nb) {
        let (qs, d) = b.split_at(64);
        for (group, out) in qs.chunks_exact(32).zip(block.chunks_exact_mut(128)) {
            for (k, out) in out.chunks_exact_mut(32).enumerate() {
                for (o, &q) in out.iter_mut().zip(group) {
                    *o = ((q >> (2 * k)) & 3) as i8 - 1;
                }
            }
        }
        values.extend_from_slice(&block);
        scales.push(f16::from_le_bytes([d[0], d[1]]));
    }
    Ok(TernaryBlocks { values, scales })
}

/// One TQ2_0 block read without decoding its values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tq2Block {
    /// The block's scale.
    pub d: f16,
    /// Whether a code byte differs from 0x55 (four zeros): the block holds a nonzero value.
    pub nonzero: bool,
    /// Whether a code is 3, which is not a ternary code.
    pub code3: bool,
}

/// Each TQ2_0 block's scale and flags, from the code bytes alone (no decoded copy).
pub fn tq2_0_blocks(bytes: &[u8], n: usize) -> Result<Vec<Tq2Block>, String> {
    check_len(bytes, n, QK_K, TQ2_0_BYTES, "TQ2_0")?;
    Ok(bytes
        .chunks_exact(TQ2_0_BYTES)
        .map(|b| {
            let (qs, d) = b.split_at(64);
            let (diff, three) = qs.iter().fold((0u8, 0u8), |(diff, three), &q| {
                (diff | (q ^ 0x55), three | (q & (q >> 1) & 0x55))
            });
            Tq2Block {
                d: f16::from_le_bytes([d[0], d[1]]),
                nonzero: diff != 0,
                code3: three != 0,
            }
        })
        .collect())
}

/// I2_S (x86 `ACT_PARALLEL` layout) to ternary values and the tensor's f32 scale. Needs
/// `n % 128 == 0` and exactly `n/4 + 32` bytes; a code 3 is an error naming its element and byte.
pub fn decode_i2_s(bytes: &[u8], n: usize) -> Result<(Vec<i8>, f32), String> {
    if !n.is_multiple_of(QK_I2_S) {
        return Err(format!(
            "I2_S: {n} elements are not a whole number of {QK_I2_S}-element blocks"
        ));
    }
    let need = n / 4 + I2_S_TRAILER;
    if bytes.len() != need {
        return Err(format!(
            "I2_S: {n} elements need {need} bytes (codes and a {I2_S_TRAILER}-byte trailer), \
             the tensor has {}",
            bytes.len()
        ));
    }
    let (codes, trailer) = bytes.split_at(n / 4);
    let mut values = Vec::with_capacity(n);
    for (bi, b) in blocks_of::<32>(codes).enumerate() {
        for j in 0..QK_I2_S {
            let byte = b[j % 32];
            let code = (byte >> (6 - 2 * (j / 32))) & 3;
            if code == 3 {
                return Err(format!(
                    "I2_S: element {} (block {bi}, position {j}; byte {} of the tensor, bits {}:{}) \
                     has code 3, which is not a ternary code",
                    bi * QK_I2_S + j,
                    bi * 32 + j % 32,
                    7 - 2 * (j / 32),
                    6 - 2 * (j / 32),
                ));
            }
            values.push(code as i8 - 1);
        }
    }
    let scale = f32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    Ok((values, scale))
}

/// Checks that `values` are ternary and a whole number of `block`-element blocks (`what` names the
/// type in the message).
fn check_ternary(values: &[i8], block: usize, what: &str) -> Result<(), String> {
    if !values.len().is_multiple_of(block) {
        return Err(format!(
            "{what}: {} elements are not a whole number of {block}-element blocks",
            values.len()
        ));
    }
    match values.iter().position(|t| !(-1..=1).contains(t)) {
        Some(i) => Err(format!("{what}: element {i} is {}, not ternary", values[i])),
        None => Ok(()),
    }
}

/// Ternary values (flattened, ne0 fastest) to TQ2_0 blocks, every block with scale `d`: the inverse
/// of `decode_tq2_0` (code `t + 1`, element `128h + 32k + m` in bits `2k` of `qs[32h + m]`).
pub fn encode_tq2_0(values: &[i8], d: f16) -> Result<Vec<u8>, String> {
    check_ternary(values, QK_K, "TQ2_0")?;
    let mut out = Vec::with_capacity(values.len() / QK_K * TQ2_0_BYTES);
    for block in values.chunks_exact(QK_K) {
        let mut qs = [0u8; 64];
        for (e, &t) in block.iter().enumerate() {
            let (h, k, m) = (e / 128, (e % 128) / 32, e % 32);
            qs[32 * h + m] |= ((t + 1) as u8) << (2 * k);
        }
        out.extend_from_slice(&qs);
        out.extend_from_slice(&d.to_le_bytes());
    }
    Ok(out)
}

/// Ternary values (flattened, ne0 fastest; ne0 a multiple of 128) to I2_S in the x86
/// `ACT_PARALLEL` layout with the f32 `scale` in the trailer: the inverse of `decode_i2_s`.
pub fn encode_i2_s(values: &[i8], scale: f32) -> Result<Vec<u8>, String> {
    check_ternary(values, QK_I2_S, "I2_S")?;
    let mut out = Vec::with_capacity(values.len() / 4 + I2_S_TRAILER);
    for block in values.chunks_exact(QK_I2_S) {
        let mut b = [0u8; 32];
        for (j, &t) in block.iter().enumerate() {
            b[j % 32] |= ((t + 1) as u8) << (6 - 2 * (j / 32));
        }
        out.extend_from_slice(&b);
    }
    let mut trailer = [0u8; I2_S_TRAILER];
    trailer[..4].copy_from_slice(&scale.to_le_bytes());
    out.extend_from_slice(&trailer);
    Ok(out)
}

#[cfg(test)]
mod encode_tests {
    use super::*;

    fn values(n: usize) -> Vec<i8> {
        (0..n).map(|i| ((i * 7 + i / 5) % 3) as i8 - 1).collect()
    }

    #[test]
    fn tq2_0_encoding_decodes_back() {
        let v = values(512);
        let d = f16::from_f32(0.37);
        let bytes = encode_tq2_0(&v, d).unwrap();
        assert_eq!(bytes.len(), 2 * TQ2_0_BYTES);
        let tb = decode_tq2_0(&bytes, 512).unwrap();
        assert_eq!(tb.values, v);
        assert_eq!(tb.scales, vec![d, d]);
        assert!(encode_tq2_0(&v[..100], d).is_err());
    }

    #[test]
    fn tq2_0_block_flags_read_without_decoding() {
        // Block 0 nonzero, block 1 all zeros, block 2 with one code 3 planted.
        let mut v = values(768);
        v[256..512].fill(0);
        let d = f16::from_f32(0.25);
        let mut bytes = encode_tq2_0(&v, d).unwrap();
        bytes[2 * TQ2_0_BYTES + 5] |= 0b1100_0000;
        let flags = tq2_0_blocks(&bytes, 768).unwrap();
        let got: Vec<(bool, bool)> = flags.iter().map(|b| (b.nonzero, b.code3)).collect();
        assert_eq!(got, [(true, false), (false, false), (true, true)]);
        assert!(flags.iter().all(|b| b.d == d));
        assert!(tq2_0_blocks(&bytes[1..], 768).is_err());
    }

    #[test]
    fn i2_s_encoding_decodes_back() {
        let v = values(384);
        let bytes = encode_i2_s(&v, 0.123_456_79).unwrap();
        assert_eq!(bytes.len(), 384 / 4 + I2_S_TRAILER);
        assert_eq!(decode_i2_s(&bytes, 384).unwrap(), (v, 0.123_456_79));
        assert!(
            encode_i2_s(&[2; 128], 1.0)
                .unwrap_err()
                .contains("not ternary")
        );
    }
}
