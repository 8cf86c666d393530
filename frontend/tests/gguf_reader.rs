//! The GGUF reader on the gguf-tiny fixtures (written by gguf-py; I2_S by the fixture generator) and on
//! small files written here with known values.
//!
//! Reference numbers embedded below were read with python from `../shared/fixtures/hf-tiny`:
//! `checks.json` (gamma = mean|W| per projection) and the transformers-packed ternary weights of
//! `packed/model.safetensors` unpacked per formats.md §1.6. That check also confirmed that all 28
//! projections of every gguf-tiny file decode to exactly those weights.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod gguf_build;

use bitnet_frontend::gguf::{GgmlType, GgufArray, GgufFile, GgufValue, TernaryScale};
use bitnet_ir::{Data, Tensor};
use gguf_build::{Builder, Rng, V, encode_i2_s, encode_tq1_0, encode_tq2_0, f32_bytes, s};
use half::{bf16, f16};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/gguf-tiny")
        .join(name)
}

/// (file, projection type, general.file_type)
const FILES: [(&str, GgmlType, u64); 4] = [
    ("tiny-f32.gguf", GgmlType::F32, 0),
    ("tiny-tq2_0.gguf", GgmlType::TQ2_0, 37),
    ("tiny-tq1_0.gguf", GgmlType::TQ1_0, 36),
    ("tiny-i2_s.gguf", GgmlType::I2_S, 40),
];

const PROJECTIONS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

fn ternary_values(t: &Tensor) -> &[i8] {
    match &t.data {
        Data::Ternary(v) => v,
        other => panic!("expected ternary data, got {:?}", other.elem()),
    }
}

fn f32_values(t: &Tensor) -> &[f32] {
    match &t.data {
        Data::F32(v) => v,
        other => panic!("expected f32 data, got {:?}", other.elem()),
    }
}

#[test]
fn fixture_metadata() {
    for (file, _, file_type) in FILES {
        let g = GgufFile::open(&fixture(file)).unwrap();
        assert_eq!(g.version(), 3, "{file}");
        assert_eq!(g.alignment(), 32);
        assert_eq!(g.data_start(), 29120);
        assert_eq!(g.metadata().len(), 22);
        assert_eq!(g.architecture().unwrap(), "bitnet-b1.58");
        assert_eq!(g.get_str("general.name").unwrap(), "bitnetc-tiny");
        assert_eq!(g.get_u64("general.file_type").unwrap(), file_type);
        assert_eq!(g.get_u32("general.quantization_version").unwrap(), 2);
        let a = |k: &str| g.get_u64(&format!("bitnet-b1.58.{k}")).unwrap();
        assert_eq!(a("vocab_size"), 1000);
        assert_eq!(a("context_length"), 512);
        assert_eq!(a("embedding_length"), 256);
        assert_eq!(a("block_count"), 4);
        assert_eq!(a("feed_forward_length"), 512);
        assert_eq!(a("rope.dimension_count"), 32);
        assert_eq!(a("attention.head_count"), 8);
        assert_eq!(a("attention.head_count_kv"), 4);
        assert_eq!(g.get_f32("bitnet-b1.58.rope.freq_base").unwrap(), 500000.0);
        assert_eq!(
            g.get_f32("bitnet-b1.58.attention.layer_norm_rms_epsilon")
                .unwrap(),
            1e-5f32
        );
        assert_eq!(
            g.get("bitnet-b1.58.block_count"),
            Some(&GgufValue::U32(4)),
            "stored as u32"
        );
        assert_eq!(g.get_i64("bitnet-b1.58.block_count").unwrap(), 4);
        assert_eq!(g.get_f64("bitnet-b1.58.rope.freq_base").unwrap(), 500000.0);
    }
}

#[test]
fn typed_getters_name_key_and_types() {
    let g = GgufFile::open(&fixture("tiny-tq2_0.gguf")).unwrap();
    let e = g
        .get_str("bitnet-b1.58.block_count")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tiny-tq2_0.gguf"), "{e}");
    assert!(
        e.contains("'bitnet-b1.58.block_count'") && e.contains("expected string, found u32"),
        "{e}"
    );
    let e = g.get_u64("general.name").unwrap_err().to_string();
    assert!(
        e.contains("'general.name'") && e.contains("found string"),
        "{e}"
    );
    let e = g.get_f32("general.file_type").unwrap_err().to_string();
    assert!(
        e.contains("expected a float (f32 or f64), found u32"),
        "{e}"
    );
    let e = g
        .get_str_array("tokenizer.ggml.token_type")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("expected array of string, found array of i32"),
        "{e}"
    );
    let e = g.get_u64("no.such.key").unwrap_err().to_string();
    assert!(e.contains("'no.such.key' is missing"), "{e}");
    let e = g.get_bool("general.name").unwrap_err().to_string();
    assert!(e.contains("expected bool"), "{e}");
    assert!(g.get_i64_array("tokenizer.ggml.merges").is_err());
}

fn expected_names() -> Vec<String> {
    let mut v = vec!["token_embd.weight".to_string()];
    for b in 0..4 {
        for t in [
            "attn_norm",
            "ffn_down",
            "ffn_sub_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_norm",
            "attn_sub_norm",
            "attn_k",
            "attn_output",
            "attn_q",
            "attn_v",
        ] {
            v.push(format!("blk.{b}.{t}.weight"));
        }
    }
    v.push("output_norm.weight".into());
    v
}

#[test]
fn fixture_tensor_list() {
    for (file, proj_type, _) in FILES {
        let g = GgufFile::open(&fixture(file)).unwrap();
        let names: Vec<String> = g.tensors().iter().map(|t| t.name.clone()).collect();
        assert_eq!(names, expected_names(), "{file}: tensors in file order");
        for t in g.tensors() {
            let is_proj = PROJECTIONS
                .iter()
                .any(|p| t.name.contains(&format!(".{p}.")));
            let want = if is_proj { proj_type } else { GgmlType::F32 };
            assert_eq!(t.ggml_type, want, "{file}: {}", t.name);
            assert_eq!(t.offset % 32, 0);
            assert_eq!(g.tensor_bytes(t).len(), t.n_bytes);
        }
        let e = g.tensor_info("token_embd.weight").unwrap();
        assert_eq!(e.dims, [256, 1000]);
        assert_eq!(e.shape(), [1000, 256]);
        let q = g.tensor_info("blk.0.attn_k.weight").unwrap();
        assert_eq!(
            (q.dims.clone(), q.shape()),
            (vec![256, 128], vec![128, 256])
        );
        let d = g.tensor_info("blk.0.ffn_down.weight").unwrap();
        assert_eq!(d.shape(), [256, 512]);
        let bytes = match proj_type {
            GgmlType::F32 => 512 * 256 * 4,
            GgmlType::TQ2_0 => 512 * 66,
            GgmlType::TQ1_0 => 512 * 54,
            _ => 512 * 256 / 4 + 32,
        };
        assert_eq!(d.n_bytes, bytes, "{file}");
        let e = g.tensor_info("output.weight").unwrap_err().to_string();
        assert!(e.contains("no tensor named 'output.weight'"), "{e}");
    }
}

#[test]
fn fixture_f32_tensors() {
    let g = GgufFile::open(&fixture("tiny-i2_s.gguf")).unwrap();
    let e = g.dequantize("token_embd.weight").unwrap();
    assert_eq!(e.shape, [1000, 256]);
    // Exact bf16-rounded values (compared in f64, where the literals are exact).
    let v: Vec<f64> = f32_values(&e).iter().map(|&x| f64::from(x)).collect();
    let first = [
        0.0223388671875,
        -0.0277099609375,
        -0.008544921875,
        -0.01611328125,
    ];
    assert_eq!(v[..4], first);
    assert_eq!(v[v.len() - 2..], [-0.01153564453125, 0.0303955078125]);
    let n = g.dequantize("output_norm.weight").unwrap();
    assert_eq!(n.shape, [256]);
    assert_eq!(f32_values(&n)[..3], [1.046875, 0.9609375, 1.203125]);
    // The embedding is not ternary: ternary() says why, naming the tensor and an element.
    let err = g.ternary("token_embd.weight").unwrap_err().to_string();
    assert!(
        err.contains("'token_embd.weight'") && err.contains("not ternary"),
        "{err}"
    );
}

/// (projection, f32 bits of gamma, f16 bits of gamma, counts of -1/0/+1, row 0's first 12, the last
/// row's last 12), from hf-tiny (see the file header).
type Reference = (&'static str, u32, u16, [usize; 3], [i8; 12], [i8; 12]);
const REFERENCE: [Reference; 4] = [
    (
        "blk.0.attn_q.weight",
        0x3c1674b4,
        0x20b4,
        [22628, 20226, 22682],
        [0, 1, 1, -1, 1, -1, -1, -1, -1, -1, 1, 1],
        [1, -1, 0, -1, 0, 0, -1, 1, -1, 1, -1, 0],
    ),
    (
        "blk.0.attn_k.weight",
        0x3c436feb,
        0x221b,
        [11259, 10158, 11351],
        [0, 0, 0, 0, 1, -1, 1, -1, 0, -1, 1, -1],
        [1, -1, 1, -1, -1, -1, 1, -1, -1, 1, 0, 0],
    ),
    (
        "blk.3.ffn_down.weight",
        0x3c5322f8,
        0x2299,
        [45504, 40590, 44978],
        [1, 1, 1, -1, 1, 0, 0, 0, 1, 0, -1, -1],
        [-1, 0, -1, -1, 0, 1, 0, -1, 0, 0, -1, 0],
    ),
    (
        "blk.2.ffn_up.weight",
        0x3cd79636,
        0x26bd,
        [45255, 40705, 45112],
        [1, -1, 0, -1, -1, 0, -1, -1, 0, 0, 0, 1],
        [1, 1, -1, -1, 1, 1, 1, 0, 0, -1, 1, 1],
    ),
];

#[test]
fn fixture_projections_agree_across_formats() {
    let files: Vec<GgufFile> = FILES
        .iter()
        .map(|(f, ..)| GgufFile::open(&fixture(f)).unwrap())
        .collect();
    let mut checked = 0;
    for b in 0..4 {
        for p in PROJECTIONS {
            let name = format!("blk.{b}.{p}.weight");
            let (f32_t, f32_s) = files[0].ternary(&name).unwrap();
            let TernaryScale::PerTensor(gamma) = f32_s else {
                panic!("{name}: F32 scale {f32_s:?}")
            };
            assert!(gamma > 0.0);
            let fp16_gamma = f16::from_f32(gamma).to_f32();
            for (g, (file, ty, _)) in files.iter().zip(FILES).skip(1) {
                let (t, scale) = g.ternary(&name).unwrap();
                assert_eq!(t.shape, f32_t.shape, "{file} {name}");
                assert_eq!(ternary_values(&t), ternary_values(&f32_t), "{file} {name}");
                let want = if ty == GgmlType::I2_S {
                    gamma
                } else {
                    fp16_gamma
                };
                assert_eq!(scale, TernaryScale::PerTensor(want), "{file} {name}");
                // The scale read without decoding (TQ2_0: block headers) is the same.
                assert_eq!(g.ternary_scale(&name).unwrap(), scale, "{file} {name}");
                // dequantize() is the same values times the scale.
                let deq = g.dequantize(&name).unwrap();
                assert_eq!(deq.shape, t.shape);
                let expect: Vec<f32> = ternary_values(&t)
                    .iter()
                    .map(|&v| f32::from(v) * want)
                    .collect();
                assert_eq!(f32_values(&deq), expect, "{file} {name}");
            }
            // The F32 file stores gamma·t exactly.
            let raw = files[0].dequantize(&name).unwrap();
            let expect: Vec<f32> = ternary_values(&f32_t)
                .iter()
                .map(|&v| f32::from(v) * gamma)
                .collect();
            assert_eq!(f32_values(&raw), expect);
            checked += 1;
        }
    }
    assert_eq!(checked, 28);
}

#[test]
fn fixture_projections_match_hf_reference() {
    for (file, ty, _) in FILES {
        let g = GgufFile::open(&fixture(file)).unwrap();
        for (name, gamma_bits, f16_bits, counts, row0, last) in REFERENCE {
            let (t, scale) = g.ternary(name).unwrap();
            let v = ternary_values(&t);
            let count = |x: i8| v.iter().filter(|&&y| y == x).count();
            assert_eq!([count(-1), count(0), count(1)], counts, "{file} {name}");
            assert_eq!(v[..12], row0, "{file} {name}");
            assert_eq!(v[v.len() - 12..], last, "{file} {name}");
            let gamma = f32::from_bits(gamma_bits);
            let want = match ty {
                GgmlType::TQ1_0 | GgmlType::TQ2_0 => f16::from_bits(f16_bits).to_f32(),
                _ => gamma,
            };
            assert_eq!(scale, TernaryScale::PerTensor(want), "{file} {name}");
        }
    }
}

#[test]
fn fixture_tokenizer() {
    for (file, ..) in FILES {
        let g = GgufFile::open(&fixture(file)).unwrap();
        let t = g.tokenizer().unwrap();
        assert_eq!(t.model.as_deref(), Some("gpt2"));
        assert_eq!(t.pre.as_deref(), Some("gpt-2"));
        assert_eq!(t.tokens.len(), 1000);
        assert_eq!(t.tokens[..6], ["<unk>", "<s>", "</s>", "!", "\"", "#"]);
        assert_eq!(t.tokens[998..], ["Ġnon", "ulti"]);
        let types = t.token_types.unwrap();
        assert_eq!(types[..5], [3, 3, 3, 1, 1]);
        assert_eq!(types.iter().filter(|&&x| x == 1).count(), 997);
        let merges = t.merges.unwrap();
        assert_eq!(merges.len(), 741);
        assert_eq!(merges[0], "Ġ t");
        assert_eq!(merges[740], "ul ti");
        assert_eq!((t.bos_token_id, t.eos_token_id), (Some(1), Some(2)));
        assert_eq!(t.add_bos_token, Some(true));
        assert_eq!(t.padding_token_id, None);
        assert_eq!(t.scores, None);
        assert_eq!(t.chat_template, None);
    }
}

fn mem(b: &Builder) -> GgufFile {
    GgufFile::from_bytes(Path::new("built.gguf"), b.build()).unwrap()
}

#[test]
fn every_metadata_type_and_version_2() {
    for version in [2, 3] {
        let mut b = gguf_build::small_bitnet();
        b.version = version;
        let g = mem(&b);
        assert_eq!(g.version(), version);
        assert_eq!(g.get("test.u8"), Some(&GgufValue::U8(200)));
        assert_eq!(g.get("test.i8"), Some(&GgufValue::I8(-100)));
        assert_eq!(g.get("test.u16"), Some(&GgufValue::U16(60000)));
        assert_eq!(g.get("test.i16"), Some(&GgufValue::I16(-30000)));
        assert_eq!(g.get("test.i32"), Some(&GgufValue::I32(-5)));
        assert_eq!(g.get("test.f32"), Some(&GgufValue::F32(0.5)));
        assert_eq!(g.get("test.bool"), Some(&GgufValue::Bool(true)));
        assert_eq!(g.get("test.u64"), Some(&GgufValue::U64(u64::MAX)));
        assert_eq!(g.get("test.i64"), Some(&GgufValue::I64(i64::MIN)));
        assert_eq!(g.get("test.f64"), Some(&GgufValue::F64(0.1)));
        assert_eq!(
            g.get("test.nested"),
            Some(&GgufValue::Array(GgufArray::Array(vec![
                GgufArray::U32(vec![1, 2]),
                GgufArray::String(vec!["x".into()]),
            ])))
        );
        // Lossless integer conversions, and their limits.
        assert_eq!(g.get_u64("test.u8").unwrap(), 200);
        assert_eq!(g.get_u64("test.u16").unwrap(), 60000);
        assert_eq!(g.get_i64("test.i8").unwrap(), -100);
        assert_eq!(g.get_i64("test.u16").unwrap(), 60000);
        assert_eq!(g.get_u64("test.u64").unwrap(), u64::MAX);
        let e = g.get_u64("test.i32").unwrap_err().to_string();
        assert!(
            e.contains("'test.i32'") && e.contains("non-negative"),
            "{e}"
        );
        let e = g.get_i64("test.u64").unwrap_err().to_string();
        assert!(e.contains("does not fit in an i64"), "{e}");
        let e = g.get_u32("test.u64").unwrap_err().to_string();
        assert!(e.contains("does not fit in a u32"), "{e}");
        assert_eq!(g.get_f32("test.f64").unwrap(), 0.1f32);
        assert_eq!(g.get_f64("test.f32").unwrap(), 0.5);
        assert!(g.get_bool("test.bool").unwrap());
        assert_eq!(
            g.get_i64_array("tokenizer.ggml.token_type").unwrap(),
            [2, 3, 3, 1, 1]
        );
        let t = g.tokenizer().unwrap();
        assert_eq!(t.tokens, ["<unk>", "<s>", "</s>", "a", "b"]);
        assert_eq!(t.merges.unwrap(), ["a b"]);
        assert_eq!(t.pre, None);
    }
}

#[test]
fn reference_file_every_type() {
    let mut rng = Rng(42);
    let t256 = rng.trits(512);
    let t128 = rng.trits(256);
    let d = [f16::from_f32(0.5), f16::from_f32(0.25)];
    let q8: Vec<u8> = [
        f16::from_f32(2.0).to_le_bytes().to_vec(),
        (0..32).map(|j| (j as i8 - 16) as u8).collect(),
    ]
    .concat();
    let q4_0: Vec<u8> = [
        f16::from_f32(-1.0).to_le_bytes().to_vec(),
        (0..16u8).map(|j| j | (j << 4)).collect(),
    ]
    .concat();
    let q4_1: Vec<u8> = [
        f16::from_f32(0.5).to_le_bytes().to_vec(),
        f16::from_f32(3.0).to_le_bytes().to_vec(),
        (0..16u8).map(|j| j | (j << 4)).collect(),
    ]
    .concat();
    let f16v = [1.0f32, -0.5, 65504.0, 0.0, 1.0 / 1024.0, -2.0];
    let bf16v = [1.0f32, -3.0, 0.0078125, 1e30, -0.0, 256.0];
    let b = Builder::new()
        .kv("general.architecture", s("bitnet"))
        .kv("general.alignment", V::U32(64))
        .aligned(64)
        .tensor(
            "f32",
            &[3, 2],
            0,
            f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        )
        .tensor(
            "f16",
            &[3, 2],
            1,
            f16v.iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
        )
        .tensor(
            "bf16",
            &[2, 3],
            30,
            bf16v
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
        )
        .tensor("q8_0", &[32], 8, q8)
        .tensor("q4_0", &[32, 1], 2, q4_0)
        .tensor("q4_1", &[32, 1, 1], 3, q4_1)
        .tensor("tq1", &[256, 2], 34, encode_tq1_0(&t256, &d))
        .tensor("tq2", &[256, 2], 35, encode_tq2_0(&t256, &[d[0], d[0]]))
        .tensor("i2s", &[128, 2], 36, encode_i2_s(&t128, 0.1))
        .tensor("i8", &[4], 24, vec![0xff, 1, 0x80, 0])
        .tensor(
            "i32",
            &[2],
            26,
            [7i32, -9].iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
        .tensor("f64", &[1], 28, 0.25f64.to_le_bytes().to_vec())
        .tensor(
            "ternary_f16",
            &[4],
            1,
            [0.5f32, -0.5, 0.0, 0.5]
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
        )
        .tensor("iq4_nl", &[32], 20, vec![0; 18]);
    let (bytes, at) = b.build_with_layout();
    let g = GgufFile::from_bytes(Path::new("ref.gguf"), bytes).unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_start(), at.data_start);
    assert_eq!(g.data_start() % 64, 0);
    for (info, ta) in g.tensors().iter().zip(&at.tensors) {
        assert_eq!(info.start, ta.data, "{}", info.name);
    }
    let deq = |n: &str| g.dequantize(n).unwrap();

    let f = deq("f32");
    assert_eq!(
        (f.shape.clone(), f32_values(&f).to_vec()),
        (vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    );
    assert_eq!(f32_values(&deq("f16")), f16v);
    assert_eq!(deq("bf16").shape, [3, 2]);
    let bf: Vec<f32> = bf16v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
    assert_eq!(f32_values(&deq("bf16")), bf);
    let q8 = deq("q8_0");
    assert_eq!(q8.shape, [32]);
    assert_eq!(
        f32_values(&q8),
        (0..32).map(|j| (j - 16) as f32 * 2.0).collect::<Vec<_>>()
    );
    let q40: Vec<f32> = (0..32).map(|j| 8.0 - (j % 16) as f32).collect();
    assert_eq!(deq("q4_0").shape, [1, 32]);
    assert_eq!(f32_values(&deq("q4_0")), q40);
    let q41: Vec<f32> = (0..32).map(|j| (j % 16) as f32 * 0.5 + 3.0).collect();
    assert_eq!(deq("q4_1").shape, [1, 1, 32]);
    assert_eq!(f32_values(&deq("q4_1")), q41);
    assert_eq!(f32_values(&deq("i8")), [-1.0, 1.0, -128.0, 0.0]);
    assert_eq!(f32_values(&deq("i32")), [7.0, -9.0]);
    assert_eq!(f32_values(&deq("f64")), [0.25]);

    // TQ1_0 with two different block scales: per-block; TQ2_0 with equal ones: per-tensor.
    let (t1, s1) = g.ternary("tq1").unwrap();
    assert_eq!(t1.shape, [2, 256]);
    assert_eq!(ternary_values(&t1), t256);
    assert_eq!(
        s1,
        TernaryScale::PerBlock {
            block: 256,
            scales: vec![0.5, 0.25]
        }
    );
    let expect: Vec<f32> = t256
        .iter()
        .enumerate()
        .map(|(i, &v)| f32::from(v) * if i < 256 { 0.5 } else { 0.25 })
        .collect();
    assert_eq!(f32_values(&deq("tq1")), expect);
    let (t2, s2) = g.ternary("tq2").unwrap();
    assert_eq!(ternary_values(&t2), t256);
    assert_eq!(s2, TernaryScale::PerTensor(0.5));
    assert_eq!(g.ternary_scale("tq2").unwrap(), s2);
    assert_eq!(g.ternary_scale("tq1").unwrap(), s1);
    let (t3, s3) = g.ternary("i2s").unwrap();
    assert_eq!(
        (t3.shape.clone(), ternary_values(&t3).to_vec()),
        (vec![2, 128], t128.clone())
    );
    assert_eq!(s3, TernaryScale::PerTensor(0.1));
    let (t4, s4) = g.ternary("ternary_f16").unwrap();
    assert_eq!(ternary_values(&t4), [1, -1, 0, 1]);
    assert_eq!(s4, TernaryScale::PerTensor(0.5));

    // A known type this reader does not decode, and non-ternary types asked for ternary values.
    let e = g.dequantize("iq4_nl").unwrap_err().to_string();
    assert!(
        e.contains("'iq4_nl'") && e.contains("IQ4_NL is not supported"),
        "{e}"
    );
    let e = g.ternary("q8_0").unwrap_err().to_string();
    assert!(
        e.contains("'q8_0'") && e.contains("Q8_0") && e.contains("ternary"),
        "{e}"
    );
    let e = g.ternary("f32").unwrap_err().to_string();
    assert!(e.contains("'f32'") && e.contains("element 1 is 2"), "{e}");
}

#[test]
fn tq_blocks_of_zeros_do_not_break_a_per_tensor_scale() {
    // gguf's quantizer writes d = 0 for an all-zero block; the tensor's scale is still per-tensor.
    let mut t = vec![0i8; 768];
    t[5] = 1;
    t[600] = -1;
    let d = [0.125, 0.0, 0.125].map(f16::from_f32);
    let b = Builder::new()
        .kv("general.architecture", s("llama"))
        .tensor("w", &[256, 3], 35, encode_tq2_0(&t, &d))
        .tensor(
            "z",
            &[256],
            34,
            encode_tq1_0(&[0; 256], &[f16::from_f32(0.0)]),
        );
    let g = mem(&b);
    let (v, scale) = g.ternary("w").unwrap();
    assert_eq!(ternary_values(&v), t);
    assert_eq!(scale, TernaryScale::PerTensor(0.125));
    assert_eq!(g.ternary("z").unwrap().1, TernaryScale::PerTensor(0.0));
}

#[test]
fn type_36_collision() {
    let i2s = encode_i2_s(&[0; 128], 1.0);
    let with = |arch: &str, ftype: u32| {
        Builder::new()
            .kv("general.architecture", s(arch))
            .kv("general.file_type", V::U32(ftype))
            .tensor("w", &[128], 36, i2s.clone())
            .build()
    };
    for arch in ["bitnet-b1.58", "bitnet-25", "bitnet"] {
        let g = GgufFile::from_bytes(Path::new("a.gguf"), with(arch, 1)).unwrap();
        assert_eq!(g.tensor_info("w").unwrap().ggml_type, GgmlType::I2_S);
    }
    let g = GgufFile::from_bytes(Path::new("a.gguf"), with("llama", 40)).unwrap();
    assert_eq!(g.tensor_info("w").unwrap().ggml_type, GgmlType::I2_S);
    let e = GgufFile::from_bytes(Path::new("a.gguf"), with("llama", 1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("a.gguf") && e.contains("tensor 'w'"), "{e}");
    assert!(e.contains("id 36 is I2_S only in BitNet files"), "{e}");
    // 39 is MXFP4 upstream and TL2 in the fork.
    let mx = |arch: &str| {
        Builder::new()
            .kv("general.architecture", s(arch))
            .tensor("w", &[32], 39, vec![0; 17])
            .build()
    };
    let g = GgufFile::from_bytes(Path::new("b.gguf"), mx("llama")).unwrap();
    assert_eq!(g.tensor_info("w").unwrap().ggml_type.name(), "MXFP4");
    let e = GgufFile::from_bytes(Path::new("b.gguf"), mx("bitnet-b1.58"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("TL2"), "{e}");
}

#[test]
fn opens_from_disk_like_from_memory() {
    let dir = std::env::temp_dir().join(format!("bitnetc-gguf-reader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("small.gguf");
    let bytes = gguf_build::small_bitnet().build();
    std::fs::write(&path, &bytes).unwrap();
    let a = GgufFile::open(&path).unwrap();
    let b = GgufFile::from_bytes(&path, bytes).unwrap();
    assert_eq!(a.metadata(), b.metadata());
    assert_eq!(a.tensors(), b.tensors());
    for t in a.tensors() {
        assert_eq!(a.tensor_bytes(t), b.tensor_bytes(t));
        assert_eq!(
            a.dequantize(&t.name).unwrap(),
            b.dequantize(&t.name).unwrap()
        );
    }
    assert_eq!(a.path(), path);
    std::fs::remove_dir_all(&dir).unwrap();
}
