//! Decoders for ggml's K-quants (256-element super-blocks), on the raw bytes of a whole tensor. Like
//! `blocks`, each checks that the byte length is exactly what `n` elements need before reading, and
//! returns elements in file order. Layouts follow ggml's `block_q*_K` in `ggml-common.h`; the
//! arithmetic follows gguf-py's `dequantize_blocks` (`gguf/quants.py`, gguf-py 0.19) operation for
//! operation in f32 (every f16 widened to f32 first, each product and difference rounded on its own,
//! never fused), so the values agree with gguf-py bit for bit. In the formulas, element `e` of a block
//! (0..256) belongs to sub-block `e / 16` (Q2_K, Q3_K, Q6_K) or `e / 32` (Q4_K, Q5_K), and `l = e % 32`.
//!
//! - Q2_K, 84 bytes: `scales[16]`, `qs[64]`, f16 `d`, f16 `dmin`. Sub-block `i` has scale
//!   `d·(scales[i] & 15)` and min `dmin·(scales[i] >> 4)`; the 2-bit code of `e` is
//!   `(qs[32·(e/128) + l] >> 2·((e % 128)/32)) & 3`; `x = scale·q − min`.
//! - Q3_K, 110 bytes: `hmask[32]`, `qs[64]`, `scales[12]`, f16 `d`. The 6-bit scale `i` has its low
//!   nibble in `scales[i]` (bits 0–3, `i < 8`) or `scales[i − 8]` (bits 4–7), and its top two bits
//!   in bits `2·(i/4)` of `scales[8 + i % 4]`; it is signed as `s − 32`. The low two bits of `e` are
//!   as in Q2_K; `hmask[l]` bit `e/32` clear subtracts 4; `x = (d·(s − 32))·q`.
//! - Q4_K, 144 bytes: f16 `d`, f16 `dmin`, `scales[12]`, `qs[128]`. Sub-block `j < 4` has 6-bit scale
//!   `scales[j] & 63` and min `scales[j + 4] & 63`; `j ≥ 4` has scale `(scales[j + 4] & 15) |
//!   ((scales[j − 4] >> 6) << 4)` and min `(scales[j + 4] >> 4) | ((scales[j] >> 6) << 4)`. The nibble
//!   of `e` is `qs[32·(j/2) + l]`, low for even `j`, high for odd; `x = (d·sc)·q − dmin·m`.
//! - Q5_K, 176 bytes: f16 `d`, f16 `dmin`, `scales[12]` as in Q4_K, `qh[32]`, `qs[128]` as in Q4_K;
//!   bit `j` of `qh[l]` is bit 4 of the code; `x = (d·sc)·q − dmin·m`.
//! - Q6_K, 210 bytes: `ql[128]`, `qh[64]`, i8 `scales[16]`, f16 `d`. With `h = e/128` and `r = e % 128`,
//!   the low nibble of `e` is `ql[64h + r % 64]` (low for `r < 64`, high otherwise) and its top two
//!   bits are bits `2·(r/32)` of `qh[32h + l]`; the code is signed as `q − 32`;
//!   `x = (d·scales[e/16])·(q − 32)`.

use super::blocks::{QK_K, blocks_of, check_len, half};

/// Bytes of a Q2_K block.
pub const Q2_K_BYTES: usize = 84;
/// Bytes of a Q3_K block.
pub const Q3_K_BYTES: usize = 110;
/// Bytes of a Q4_K block.
pub const Q4_K_BYTES: usize = 144;
/// Bytes of a Q5_K block.
pub const Q5_K_BYTES: usize = 176;
/// Bytes of a Q6_K block.
pub const Q6_K_BYTES: usize = 210;

/// Checks the length of `bytes`, then decodes each `N`-byte block into 256 values with `block`.
fn decode<const N: usize>(
    bytes: &[u8],
    n: usize,
    what: &str,
    block: impl Fn(&[u8; N], &mut [f32; QK_K]),
) -> Result<Vec<f32>, String> {
    check_len(bytes, n, QK_K, N, what)?;
    let mut out = Vec::with_capacity(n);
    let mut values = [0f32; QK_K];
    for b in blocks_of::<N>(bytes) {
        block(&b, &mut values);
        out.extend_from_slice(&values);
    }
    Ok(out)
}

/// The 2-bit field of element `e` in a 64-byte `qs` (Q2_K, Q3_K): four 32-element groups per 32 bytes.
fn two_bits(qs: &[u8], e: usize) -> u8 {
    let byte = qs.get(32 * (e / 128) + e % 32).copied().unwrap_or(0);
    (byte >> (2 * ((e % 128) / 32))) & 3
}

/// Q2_K blocks to f32.
pub fn dequantize_q2_k(bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    decode::<Q2_K_BYTES>(bytes, n, "Q2_K", |b, out| {
        let (scales, rest) = b.split_at(16);
        let (qs, dd) = rest.split_at(64);
        let d = half(dd[0], dd[1]);
        let dmin = half(dd[2], dd[3]);
        for (i, (&s, sub)) in scales.iter().zip(out.chunks_exact_mut(16)).enumerate() {
            let dl = d * f32::from(s & 0x0f);
            let ml = dmin * f32::from(s >> 4);
            for (k, x) in sub.iter_mut().enumerate() {
                *x = dl * f32::from(two_bits(qs, 16 * i + k)) - ml;
            }
        }
    })
}

/// The sixteen 6-bit Q3_K scales from their 12 packed bytes, as signed values (`s − 32`).
fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    let mut scales = [0i8; 16];
    for (i, s) in scales.iter_mut().enumerate() {
        let byte = |k: usize| packed.get(k).copied().unwrap_or(0);
        let low = if i < 8 {
            byte(i) & 0x0f
        } else {
            byte(i - 8) >> 4
        };
        let high = (byte(8 + i % 4) >> (2 * (i / 4))) & 3;
        // At most 63 before the offset, so the cast is exact.
        *s = (low | (high << 4)) as i8 - 32;
    }
    scales
}

/// Q3_K blocks to f32.
pub fn dequantize_q3_k(bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    decode::<Q3_K_BYTES>(bytes, n, "Q3_K", |b, out| {
        let (hmask, rest) = b.split_at(32);
        let (qs, rest) = rest.split_at(64);
        let (packed, dd) = rest.split_at(12);
        let d = half(dd[0], dd[1]);
        let scales = q3_k_scales(packed);
        for (i, (&s, sub)) in scales.iter().zip(out.chunks_exact_mut(16)).enumerate() {
            let dl = d * f32::from(s);
            for (k, x) in sub.iter_mut().enumerate() {
                let e = 16 * i + k;
                // A clear hmask bit means the code is 4 lower (ggml stores the complement).
                let high = (hmask[e % 32] >> (e / 32)) & 1;
                let q = two_bits(qs, e) as i8 - (((high ^ 1) << 2) as i8);
                *x = dl * f32::from(q);
            }
        }
    })
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K / Q5_K block from their 12 packed bytes
/// (ggml's `get_scale_min_k4`).
fn k4_scales_mins(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
    let byte = |k: usize| packed.get(k).copied().unwrap_or(0);
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = byte(j) & 0x3f;
        m[j] = byte(j + 4) & 0x3f;
        sc[j + 4] = (byte(j + 8) & 0x0f) | ((byte(j) >> 2) & 0x30);
        m[j + 4] = (byte(j + 8) >> 4) | ((byte(j + 4) >> 2) & 0x30);
    }
    (sc, m)
}

/// The nibble of element `e` in a 128-byte `qs` (Q4_K, Q5_K): 32-element sub-blocks in pairs, the
/// even one in the low nibbles of 32 bytes, the odd one in the high nibbles.
fn nibble(qs: &[u8], e: usize) -> u8 {
    let j = e / 32;
    let byte = qs.get(32 * (j / 2) + e % 32).copied().unwrap_or(0);
    (byte >> (4 * (j % 2))) & 0x0f
}

/// Q4_K and Q5_K: `(d·sc)·q − dmin·m` per 32-element sub-block, with `code(e)` giving q.
fn k4_block(head: &[u8], out: &mut [f32; QK_K], code: impl Fn(usize) -> u8) {
    let d = half(head[0], head[1]);
    let dmin = half(head[2], head[3]);
    let (sc, m) = k4_scales_mins(&head[4..16]);
    let subs = sc.iter().zip(&m).zip(out.chunks_exact_mut(32));
    for (j, ((&sc, &m), sub)) in subs.enumerate() {
        let dl = d * f32::from(sc);
        let ml = dmin * f32::from(m);
        for (k, x) in sub.iter_mut().enumerate() {
            *x = dl * f32::from(code(32 * j + k)) - ml;
        }
    }
}

/// Q4_K blocks to f32.
pub fn dequantize_q4_k(bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    decode::<Q4_K_BYTES>(bytes, n, "Q4_K", |b, out| {
        let (head, qs) = b.split_at(16);
        k4_block(head, out, |e| nibble(qs, e));
    })
}

/// Q5_K blocks to f32.
pub fn dequantize_q5_k(bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    decode::<Q5_K_BYTES>(bytes, n, "Q5_K", |b, out| {
        let (head, rest) = b.split_at(16);
        let (qh, qs) = rest.split_at(32);
        k4_block(head, out, |e| {
            nibble(qs, e) | (((qh[e % 32] >> (e / 32)) & 1) << 4)
        });
    })
}

/// Q6_K blocks to f32.
pub fn dequantize_q6_k(bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    decode::<Q6_K_BYTES>(bytes, n, "Q6_K", |b, out| {
        let (ql, rest) = b.split_at(128);
        let (qh, rest) = rest.split_at(64);
        let (scales, dd) = rest.split_at(16);
        let d = half(dd[0], dd[1]);
        for (i, (&s, sub)) in scales.iter().zip(out.chunks_exact_mut(16)).enumerate() {
            let dl = d * f32::from(s as i8);
            for (k, x) in sub.iter_mut().enumerate() {
                let (h, r) = ((16 * i + k) / 128, (16 * i + k) % 128);
                let low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
                let high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
                // A 6-bit code, so the cast is exact.
                let q = (low | (high << 4)) as i8 - 32;
                *x = dl * f32::from(q);
            }
        }
    })
}
