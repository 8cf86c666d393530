//! Unit tests of the GGUF block decoders: hand-made blocks with the expected values worked out from
//! ggml's `dequantize_row_*` and formats.md §4.3–4.5, round trips through the independent encoders in
//! `gguf_build`, and Q8_0/Q4_0/Q4_1 blocks quantized by gguf-py with gguf-py's own dequantized values
//! (bit-exact).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod gguf_build;

use bitnet_frontend::gguf::blocks::{
    decode_i2_s, decode_tq1_0, decode_tq2_0, dequantize_q4_0, dequantize_q4_1, dequantize_q8_0,
    tq1_0_trit,
};
use gguf_build::{Rng, encode_i2_s, encode_tq1_0, encode_tq2_0, tq1_0_byte};
use half::f16;

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

#[test]
fn q8_0_block() {
    // d = 0.25; q = -128, -127, ..., -97; a second block with d = -2 and q = j.
    let mut b = h(0.25).to_vec();
    b.extend((0..32).map(|j: i32| (j - 128) as i8 as u8));
    b.extend(h(-2.0));
    b.extend(0..32u8);
    let y = dequantize_q8_0(&b, 64).unwrap();
    for j in 0..32 {
        assert_eq!(y[j], (j as f32 - 128.0) * 0.25);
        assert_eq!(y[32 + j], j as f32 * -2.0);
    }
}

#[test]
fn q4_0_block() {
    // Byte j holds element j in its low nibble (value j) and element j + 16 in its high one (15 - j).
    let mut b = h(1.5).to_vec();
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let y = dequantize_q4_0(&b, 32).unwrap();
    for j in 0..16 {
        assert_eq!(y[j], (j as f32 - 8.0) * 1.5, "element {j}");
        assert_eq!(y[j + 16], (7.0 - j as f32) * 1.5, "element {}", j + 16);
    }
}

#[test]
fn q4_1_block() {
    let mut b = h(0.5).to_vec();
    b.extend(h(-1.0));
    b.extend((0..16u8).map(|j| (15 - j) | (j << 4)));
    let y = dequantize_q4_1(&b, 32).unwrap();
    for j in 0..16 {
        assert_eq!(y[j], (15 - j) as f32 * 0.5 - 1.0);
        assert_eq!(y[j + 16], j as f32 * 0.5 - 1.0);
    }
}

#[test]
fn legacy_blocks_check_lengths() {
    let e = dequantize_q8_0(&[0; 33], 32).unwrap_err();
    assert!(e.contains("need 34 bytes"), "{e}");
    let e = dequantize_q4_0(&[0; 18], 31).unwrap_err();
    assert!(e.contains("whole number"), "{e}");
    let e = dequantize_q4_1(&[], 32).unwrap_err();
    assert!(e.contains("need 20 bytes"), "{e}");
    assert!(decode_tq1_0(&[0; 53], 256).is_err());
    assert!(decode_tq2_0(&[0; 67], 256).is_err());
    assert!(decode_i2_s(&[0; 63], 128).is_err());
    assert!(decode_i2_s(&[0; 48], 64).is_err());
}

/// The five base-3 digits of `v` (most significant first).
fn digits(v: u32) -> [u8; 5] {
    let mut d = [0u8; 5];
    let mut x = v;
    for n in (0..5).rev() {
        d[n] = (x % 3) as u8;
        x /= 3;
    }
    d
}

#[test]
fn tq1_0_all_243_codes() {
    for v in 0..243u32 {
        let d = digits(v);
        let b = tq1_0_byte(&d);
        for (n, &c) in d.iter().enumerate() {
            assert_eq!(
                tq1_0_trit(b, n),
                c as i8 - 1,
                "code {v}, byte {b}, trit {n}"
            );
        }
    }
    // The same 243 codes placed in the qs bytes of six blocks decode to the documented positions.
    let mut blocks = Vec::new();
    let mut expect = Vec::new();
    for k in 0..6 {
        let mut blk = vec![0u8; 54];
        let mut t = [0i8; 256];
        for (m, byte) in blk.iter_mut().take(48).enumerate() {
            let v = ((k * 48 + m) % 243) as u32;
            let d = digits(v);
            *byte = tq1_0_byte(&d);
            for (n, &c) in d.iter().enumerate() {
                let e = if m < 32 {
                    m + 32 * n
                } else {
                    160 + (m - 32) + 16 * n
                };
                t[e] = c as i8 - 1;
            }
        }
        // qh: byte j holds elements 240 + j + 4n, four trits, the fifth zero.
        for j in 0..4 {
            let d = digits(((k * 4 + j) * 3 % 243) as u32);
            blk[48 + j] = tq1_0_byte(&d[..4]);
            for n in 0..4 {
                t[240 + j + 4 * n] = d[n] as i8 - 1;
            }
        }
        blk[52..54].copy_from_slice(&h(k as f32));
        blocks.extend(blk);
        expect.extend(t);
    }
    let tb = decode_tq1_0(&blocks, 6 * 256).unwrap();
    assert_eq!(tb.values, expect);
    let scales: Vec<f32> = tb.scales.iter().map(|d| d.to_f32()).collect();
    assert_eq!(scales, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
}

#[test]
fn tq1_0_round_trip() {
    let mut rng = Rng(7);
    let t = rng.trits(4 * 256);
    let d = [0.5, 1.0, -2.0, 0.125].map(f16::from_f32);
    let tb = decode_tq1_0(&encode_tq1_0(&t, &d), t.len()).unwrap();
    assert_eq!(tb.values, t);
    assert_eq!(tb.scales, d);
}

#[test]
fn tq2_0_block() {
    // qs[0] = codes 2, 0, 1, 2 in bits 0-1, 2-3, 4-5, 6-7 → elements 0, 32, 64, 96 = +1, -1, 0, +1.
    // qs[32 + 5] = code 3 in bits 2-3 → element 128 + 32 + 5 = 165 reads +2 (ggml's (q - 1)).
    let mut b = vec![0x55u8; 64];
    b[0] = 0b10_01_00_10;
    b[37] = 0b01_01_11_01;
    b.extend(h(0.75));
    let tb = decode_tq2_0(&b, 256).unwrap();
    assert_eq!(
        [tb.values[0], tb.values[32], tb.values[64], tb.values[96]],
        [1, -1, 0, 1]
    );
    assert_eq!(tb.values[165], 2);
    assert_eq!(tb.values.iter().filter(|&&v| v != 0).count(), 4);
    assert_eq!(tb.scales, [f16::from_f32(0.75)]);
}

#[test]
fn tq2_0_round_trip() {
    let mut rng = Rng(11);
    let t = rng.trits(3 * 256);
    let d = [0.25, 0.5, 0.75].map(f16::from_f32);
    let tb = decode_tq2_0(&encode_tq2_0(&t, &d), t.len()).unwrap();
    assert_eq!(tb.values, t);
    assert_eq!(tb.scales, d);
}

#[test]
fn i2_s_block() {
    // Byte 0 = 0b10_01_00_10: bits 7:6 → element 0 (+1), 5:4 → 32 (0), 3:2 → 64 (-1), 1:0 → 96 (+1).
    // Byte 31 = 0b00_10_01_00 → elements 31 (-1), 63 (+1), 95 (0), 127 (-1). Everything else 0.
    let mut b = vec![0x55u8; 32];
    b[0] = 0b10_01_00_10;
    b[31] = 0b00_10_01_00;
    b.extend(0.375f32.to_le_bytes());
    b.extend([0u8; 28]);
    let (t, scale) = decode_i2_s(&b, 128).unwrap();
    assert_eq!(scale, 0.375);
    let nonzero: Vec<(usize, i8)> = t
        .iter()
        .enumerate()
        .filter(|&(_, &v)| v != 0)
        .map(|(i, &v)| (i, v))
        .collect();
    assert_eq!(
        nonzero,
        [(0, 1), (31, -1), (63, 1), (64, -1), (96, 1), (127, -1)]
    );
}

#[test]
fn i2_s_round_trip_and_code_3() {
    let mut rng = Rng(3);
    let t = rng.trits(3 * 128);
    let mut b = encode_i2_s(&t, 0.0625);
    let (back, scale) = decode_i2_s(&b, t.len()).unwrap();
    assert_eq!(back, t);
    assert_eq!(scale, 0.0625);
    // Code 3 in bits 3:2 of byte 32 + 7: block 1, position 64 + 7, element 128 + 71 = 199.
    b[39] |= 0b0000_1100;
    let e = decode_i2_s(&b, t.len()).unwrap_err();
    assert!(e.contains("element 199") && e.contains("code 3"), "{e}");
    assert!(
        e.contains("block 1, position 71") && e.contains("byte 39"),
        "{e}"
    );
}

/// One gguf-py 0.19 case: (decoder, hex of the bytes `gguf.quants.quantize` wrote for 64 values drawn
/// by `numpy.random.default_rng(5)`, f32 bits of `gguf.quants.dequantize` of them).
type PyCase = (
    fn(&[u8], usize) -> Result<Vec<f32>, String>,
    &'static [&'static str],
    &'static [u32],
);

#[rustfmt::skip]
const GGUF_PY: [PyCase; 3] = [
    (
        dequantize_q8_0,
        &[
        "e320c59fee1f5308d7c6377814a6ba750f81faabd2dccc29fbd51e3d88edb8f3",
        "a102dd22fef0c9ebc7b90cc63d25980ec6020298f4f332c227c7efd44c1e7f22",
        "2c2ce0fc",
        ],
        &[
        0xbf102880, 0xbf6d0180, 0xbe2fec00, 0x3e977d00, 0x3f4acc80, 0x3d9c6000,
        0xbec85b00, 0xbf0db700, 0x3f066280, 0x3f929a00, 0x3e437800, 0xbf5be700,
        0xbf2b0900, 0x3f8eefc0, 0x3e129a00, 0xbf9b2740, 0xbd6a9000, 0xbf4faf80,
        0xbee0ca00, 0xbeafec00, 0xbefe1c00, 0x3ec85b00, 0xbd437800, 0xbed22100,
        0x3e929a00, 0x3f150b80, 0xbf929a00, 0xbe39b200, 0xbf2fec00, 0xbdfe1c00,
        0xbf681e80, 0x3c9c6000, 0xbcdba000, 0xbe5ba000, 0xbf3cbd80, 0xbe902100,
        0xbf439a80, 0xbf73a580, 0x3e24b800, 0xbf470900, 0x3f515480, 0x3efdf100,
        0xbfb27200, 0x3e402c00, 0xbf470900, 0x3cdba000, 0x3cdba000, 0xbfb27200,
        0xbe24b800, 0xbe327200, 0x3f2b9500, 0xbf54c300, 0x3f05d580, 0xbf439a80,
        0xbe695a00, 0xbf16fe00, 0x3f826700, 0x3ecde600, 0x3fd9e8c0, 0x3ee95a00,
        0x3f16fe00, 0x3f16fe00, 0xbedba000, 0xbd5ba000,
        ],
    ),
    (
        dequantize_q4_0,
        &[
        "da308432576a5db98554abcf0972347f2980cfb298995bc96ccc97bc34660f67",
        "5c58a88f",
        ],
        &[
        0xbf1b4000, 0xbf68e000, 0xbe1b4000, 0x3e9b4000, 0x3f421000, 0x3e1b4000,
        0xbee8e000, 0xbf1b4000, 0x3ee8e000, 0x3f87d800, 0x3e1b4000, 0xbf68e000,
        0xbf1b4000, 0x3f87d800, 0x3e1b4000, 0xbf9b4000, 0x00000000, 0xbf421000,
        0xbee8e000, 0xbe9b4000, 0xbee8e000, 0x3ee8e000, 0x00000000, 0xbee8e000,
        0x3e9b4000, 0x3f1b4000, 0xbf9b4000, 0xbe1b4000, 0xbf421000, 0xbe1b4000,
        0xbf68e000, 0x00000000, 0x80000000, 0xbe59e000, 0xbf236800, 0xbe59e000,
        0xbf59e000, 0xbf59e000, 0x3e59e000, 0xbf59e000, 0x3f59e000, 0x3ed9e000,
        0xbfbea400, 0x3e59e000, 0xbf59e000, 0x80000000, 0x80000000, 0xbfbea400,
        0xbe59e000, 0xbe59e000, 0x3f236800, 0xbf59e000, 0x3ed9e000, 0xbf59e000,
        0xbe59e000, 0xbf236800, 0x3f882c00, 0x3ed9e000, 0x3fd9e000, 0x3ed9e000,
        0x3f236800, 0x3f236800, 0xbed9e000, 0x80000000,
        ],
    ),
    (
        dequantize_q4_1,
        &[
        "0731dabc7432576a5da87554abbf0972337f29809d3298bd6766a33593326843",
        "cb99f098a3a75770",
        ],
        &[
        0xbf15a000, 0xbf661000, 0xbde7c000, 0x3eb76000, 0x3f545800, 0x3d340000,
        0xbedad000, 0xbf15a000, 0x3f03e800, 0x3f926400, 0x3e4de000, 0xbf661000,
        0xbf3dd800, 0x3f926400, 0x3e4de000, 0xbf9b4000, 0xbde7c000, 0xbf3dd800,
        0xbedad000, 0xbe8a6000, 0xbedad000, 0x3eb76000, 0xbde7c000, 0xbedad000,
        0x3eb76000, 0x3f03e800, 0xbf9b4000, 0xbde7c000, 0xbf3dd800, 0xbde7c000,
        0xbf661000, 0x3d340000, 0x3d458000, 0xbe224000, 0xbf474800, 0xbebaf000,
        0xbf474800, 0xbf7c3000, 0x3e828000, 0xbf474800, 0x3f5ff800, 0x3eec5000,
        0xbfb30000, 0x3e828000, 0xbf474800, 0x3d458000, 0x3d458000, 0xbfb30000,
        0xbe224000, 0xbe224000, 0x3f2b1000, 0xbf474800, 0x3eec5000, 0xbf474800,
        0xbe224000, 0xbf126000, 0x3f8a7000, 0x3eec5000, 0x3fd9cc00, 0x3eec5000,
        0x3f2b1000, 0x3f2b1000, 0xbebaf000, 0x3d458000,
        ],
    ),
];

#[test]
fn legacy_blocks_match_gguf_py() {
    for (decode, hex, bits) in GGUF_PY {
        let hex: String = hex.concat();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let got: Vec<u32> = decode(&bytes, 64)
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(got, bits);
    }
}
