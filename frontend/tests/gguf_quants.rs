//! The GGUF block decoders against gguf-py's `gguf.quants.dequantize`, bit for bit, on the fixtures of
//! `scripts/fixtures/make_gguf_quants.py` (tests/fixtures/gguf-quants): one tensor per block type in
//! `quants.gguf`, and every weight of `llama-kquants.gguf` (a tiny Llama in a Q4_K_M-like mix of Q4_K
//! and Q6_K) as the importer's weight store returns it. Also the K-quant decoders' length checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_frontend::gguf::blocks::{dequantize_q5_0, dequantize_q5_1};
use bitnet_frontend::gguf::kquants::{
    dequantize_q2_k, dequantize_q3_k, dequantize_q4_k, dequantize_q5_k, dequantize_q6_k,
};
use bitnet_frontend::gguf::{GgmlType, GgufFile};
use bitnet_frontend::import_model;
use bitnet_frontend::model::ImportOptions;
use bitnet_frontend::npy;
use bitnet_ir::ElemType;
use half::f16;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf-quants")
}

/// gguf-py's values for `name` in `folder`: the shape and the f32 bits.
fn expected(folder: &str, name: &str) -> (Vec<usize>, Vec<u32>) {
    let t = npy::read(&dir().join(folder).join(format!("{name}.npy"))).unwrap();
    assert_eq!(t.elem(), ElemType::F32, "{name}");
    let bits = t.data.to_f32().iter().map(|x| x.to_bits()).collect();
    (t.shape, bits)
}

/// Asserts equal bits, naming the first element that differs.
fn assert_same_bits(what: &str, ours: &[f32], theirs: &[u32]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: element count");
    if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a.to_bits() != *b) {
        panic!(
            "{what}: element {i} is {} ({:#010x}), gguf-py has {} ({:#010x})",
            ours[i],
            ours[i].to_bits(),
            f32::from_bits(theirs[i]),
            theirs[i]
        );
    }
}

#[test]
fn every_block_type_matches_gguf_py_bit_for_bit() {
    let g = GgufFile::open(&dir().join("quants.gguf")).unwrap();
    let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "tq1_0", "tq2_0", "q2_k",
            "q3_k", "q4_k", "q5_k", "q6_k"
        ]
    );
    for info in g.tensors() {
        assert_eq!(info.ggml_type.name().to_lowercase(), info.name);
        let t = g.dequantize(&info.name).unwrap_or_else(|e| panic!("{e}"));
        let (shape, bits) = expected("quants", &info.name);
        assert_eq!(t.shape, shape, "{}", info.name);
        assert_eq!(t.shape, [3, 512], "{}", info.name);
        assert_same_bits(&info.name, &t.data.to_f32(), &bits);
    }
}

#[test]
fn k_quant_fixture_exercises_signs_and_special_scales() {
    // The random K-quant blocks must reach negative values, signed zeros and very large values (the
    // largest f16 scale), or the bit-for-bit test above would miss whole classes of rounding.
    for name in ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"] {
        let (_, bits) = expected("quants", name);
        let v: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        assert!(v.iter().any(|&x| x < 0.0), "{name}: no negative value");
        assert!(v.iter().any(|&x| x > 0.0), "{name}: no positive value");
        assert!(
            v.iter().any(|&x| x.to_bits() == 0x8000_0000),
            "{name}: no -0"
        );
        assert!(v.iter().any(|&x| x.abs() > 1e5), "{name}: no large value");
    }
}

#[test]
fn llama_k_quant_weights_import_as_gguf_py_dequantizes_them() {
    let path = dir().join("llama-kquants.gguf");
    let g = GgufFile::open(&path).unwrap();
    let types: Vec<GgmlType> = g.tensors().iter().map(|t| t.ggml_type).collect();
    assert!(types.contains(&GgmlType::Q4_K) && types.contains(&GgmlType::Q6_K));
    let model = import_model(&path, &ImportOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.summary.architecture, "llama");
    assert_eq!(
        model.summary.config.get("file_type").map(String::as_str),
        Some("15")
    );
    for info in g.tensors() {
        let (shape, bits) = expected("llama-kquants", &info.name);
        let t = model
            .weights
            .load(&info.name, ElemType::F32, &shape)
            .unwrap_or_else(|e| panic!("{}: {e}", info.name));
        let what = format!("{} ({})", info.name, info.ggml_type.name());
        assert_same_bits(&what, &t.data.to_f32(), &bits);
    }
    // The importer undid llama.cpp's q/k row permutation: the file's rows are in another order.
    let file_rows = g.dequantize("blk.0.attn_q.weight").unwrap().data.to_f32();
    let (_, hf_rows) = expected("llama-kquants", "blk.0.attn_q.weight");
    assert_ne!(
        file_rows.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        hf_rows
    );
}

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

#[test]
fn q5_blocks_put_bit_j_of_qh_on_element_j() {
    // qh = 1 << 20: only element 20 (the high nibble of qs[4]) has bit 4 set.
    let mut b = h(0.5).to_vec();
    b.extend((1u32 << 20).to_le_bytes());
    b.extend([0x77u8; 16]);
    let y = dequantize_q5_0(&b, 32).unwrap();
    for (j, &v) in y.iter().enumerate() {
        let q = if j == 20 { 7 + 16 } else { 7 };
        assert_eq!(v, (q as f32 - 16.0) * 0.5, "element {j}");
    }
    let mut b = h(0.25).to_vec();
    b.extend(h(-1.0));
    b.extend(1u32.to_le_bytes());
    b.extend([0xf0u8; 16]);
    let y = dequantize_q5_1(&b, 32).unwrap();
    assert_eq!(y[0], 16.0 * 0.25 - 1.0);
    assert_eq!(y[1], -1.0);
    assert_eq!(y[16], 15.0 * 0.25 - 1.0);
}

#[test]
fn q6_k_block_layout() {
    // ql[64 + 3] = 0x5a: low nibble → element 128 + 3, high → element 128 + 64 + 3.
    // qh[32 + 3] = 0b11_10_01_00: element 128 + 3 gets 0, + 32 gets 1, + 64 gets 2, + 96 gets 3.
    // scales[i] = i - 8; d = 0.5.
    let mut b = vec![0u8; 210];
    b[64 + 3] = 0x5a;
    b[128 + 32 + 3] = 0b11_10_01_00;
    for i in 0..16 {
        b[192 + i] = (i as i8 - 8) as u8;
    }
    b[208..].copy_from_slice(&h(0.5));
    let y = dequantize_q6_k(&b, 256).unwrap();
    let x = |e: usize, q: i32| (0.5 * (e / 16) as f32 - 4.0) * (q - 32) as f32;
    assert_eq!(y[131], x(131, 0xa));
    assert_eq!(y[163], x(163, 16));
    assert_eq!(y[195], x(195, 0x5 | 32));
    assert_eq!(y[227], x(227, 48));
    assert_eq!(y[0], x(0, 0));
}

#[test]
fn k_quant_blocks_check_lengths() {
    type Decoder = fn(&[u8], usize) -> Result<Vec<f32>, String>;
    let decoders: [(Decoder, &str, usize); 5] = [
        (dequantize_q2_k, "Q2_K", 84),
        (dequantize_q3_k, "Q3_K", 110),
        (dequantize_q4_k, "Q4_K", 144),
        (dequantize_q5_k, "Q5_K", 176),
        (dequantize_q6_k, "Q6_K", 210),
    ];
    for (decode, name, bytes) in decoders {
        assert_eq!(decode(&vec![0; 2 * bytes], 512).unwrap().len(), 512);
        let e = decode(&vec![0; 2 * bytes - 1], 512).unwrap_err();
        assert!(
            e.starts_with(name) && e.contains(&format!("need {} bytes", 2 * bytes)),
            "{e}"
        );
        let e = decode(&vec![0; bytes], 128).unwrap_err();
        assert!(e.contains("whole number of 256-element blocks"), "{e}");
    }
    assert!(dequantize_q5_0(&[0; 21], 32).is_err());
    assert!(dequantize_q5_1(&[0; 22], 32).is_err());
}
