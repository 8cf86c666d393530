//! Malformed GGUF input: a corpus of corrupt files, each of which must give an `Err` whose message
//! names the file and the field or tensor at fault, and never a panic. The corpus is generated here
//! from a small valid file (`gguf_build::small_bitnet`) by patching single fields, building invalid
//! headers, truncating at every offset and flipping random bytes; the real gguf-tiny files are
//! truncated and corrupted too. Part of the corpus is kept on disk in `tests/malformed/gguf/` (see its
//! README); `malformed_files_on_disk` checks those files against this generator and opens each.
//! Regenerate them with `BITNETC_BLESS_GGUF=1 cargo test -p bitnet-frontend --test gguf_malformed`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod gguf_build;

use bitnet_frontend::gguf::GgufFile;
use gguf_build::{
    Builder, Layout, Rng, V, encode_i2_s, encode_tq2_0, f32_bytes, put_u32, put_u64, s,
};
use half::f16;
use std::path::{Path, PathBuf};

/// Which call must fail.
#[derive(Clone, Copy, Debug)]
enum Stage {
    Open,
    Ternary(&'static str),
    Dequantize(&'static str),
    Tokenizer,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    stage: Stage,
    /// Substrings the message must contain (besides the file name).
    expect: &'static [&'static str],
    /// Kept in tests/malformed/gguf/.
    on_disk: bool,
}

fn base() -> (Vec<u8>, Layout) {
    gguf_build::small_bitnet().build_with_layout()
}

/// The base file with one patch applied.
fn patched(f: impl FnOnce(&mut Vec<u8>, &Layout)) -> Vec<u8> {
    let (mut b, at) = base();
    f(&mut b, &at);
    b
}

fn bitnet() -> Builder {
    Builder::new().kv("general.architecture", s("bitnet-b1.58"))
}

fn nested(depth: usize) -> V {
    let mut v = V::Arr(4, vec![V::U32(1)]);
    for _ in 0..depth {
        v = V::Arr(9, vec![v]);
    }
    v
}

fn tokenizer_file(extra: Vec<(&str, V)>) -> Vec<u8> {
    let mut b = Builder::new().kv("general.architecture", s("llama")).kv(
        "tokenizer.ggml.tokens",
        gguf_build::str_arr(&["a", "b", "c", "d", "e"]),
    );
    for (k, v) in extra {
        b = b.kv(k, v);
    }
    b.build()
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Stage::*;
    let case = |name, bytes, stage, expect, on_disk| Case { name, bytes, stage, expect, on_disk };
    // Field positions of the base file: kv 1 = general.name, 4 = test.u8, 10 = test.bool,
    // 16 = tokenizer.ggml.tokens; tensors 0 norm.weight (F32), 1 tq2.weight, 2 tq1.weight, 3 i2s.weight.
    vec![
        case("bad_magic", patched(|b, _| b[..4].copy_from_slice(b"GGML")), Open,
             &["not a GGUF file", "magic"], true),
        case("version_1", patched(|b, at| put_u32(b, at.version, 1)), Open,
             &["GGUF version 1", "not supported"], true),
        case("version_99", patched(|b, at| put_u32(b, at.version, 99)), Open,
             &["unsupported GGUF version 99"], true),
        case("version_big_endian", patched(|b, at| put_u32(b, at.version, 3u32.swap_bytes())), Open,
             &["big-endian"], false),
        case("huge_tensor_count", patched(|b, at| put_u64(b, at.tensor_count, u64::MAX)), Open,
             &["declares 18446744073709551615 tensors"], true),
        case("huge_kv_count", patched(|b, at| put_u64(b, at.kv_count, 1 << 40)), Open,
             &["1099511627776 metadata entries"], true),
        case("huge_key_length", patched(|b, at| put_u64(b, at.kv[1].key_len, u64::MAX)), Open,
             &["the key of metadata entry 1", "string length 18446744073709551615", "at byte"], true),
        case("huge_string_value", patched(|b, at| put_u64(b, at.kv[1].value, 1 << 50)), Open,
             &["'general.name'", "string length"], false),
        case("huge_array_count", patched(|b, at| put_u64(b, at.kv[16].value + 4, u64::MAX / 2)), Open,
             &["element count of array key 'tokenizer.ggml.tokens'", "bytes are left"], true),
        case("unknown_value_type", patched(|b, at| put_u32(b, at.kv[4].type_id, 13)), Open,
             &["key 'test.u8'", "unknown value type 13", "at byte"], true),
        case("unknown_array_elem_type", patched(|b, at| put_u32(b, at.kv[16].value, 77)), Open,
             &["'tokenizer.ggml.tokens'", "unknown array element type 77"], false),
        case("bool_2", patched(|b, at| b[at.kv[10].value] = 2), Open,
             &["key 'test.bool'", "bool value 2", "neither 0 nor 1"], true),
        case("key_not_utf8", patched(|b, at| b[at.kv[1].key_len + 8] = 0xff), Open,
             &["the key of metadata entry 1", "not UTF-8"], false),
        case("nested_too_deep", bitnet().kv("deep", nested(20)).build(), Open,
             &["key 'deep'", "nested more than 8 deep"], false),
        case("duplicate_key", bitnet().kv("a.b", V::U8(1)).kv("a.b", V::U8(2)).build(), Open,
             &["key 'a.b' appears twice"], false),
        case("alignment_48", bitnet().kv("general.alignment", V::U32(48)).build(), Open,
             &["'general.alignment'", "48 is not a power of two"], false),
        case("alignment_0", bitnet().kv("general.alignment", V::U32(0)).build(), Open,
             &["'general.alignment'", "0 is not a power of two"], false),
        case("alignment_string", bitnet().kv("general.alignment", s("32")).build(), Open,
             &["'general.alignment'", "found string"], false),
        case("offset_beyond_file", patched(|b, at| put_u64(b, at.tensors[3].offset, 1 << 20)), Open,
             &["tensor 'i2s.weight'", "beyond the end of the file"], true),
        case("offset_overflow", patched(|b, at| put_u64(b, at.tensors[3].offset, u64::MAX - 31)), Open,
             &["tensor 'i2s.weight'", "beyond the end of the file"], false),
        case("misaligned_offset", patched(|b, at| {
                let o = u64::from_le_bytes(b[at.tensors[1].offset..][..8].try_into().unwrap());
                put_u64(b, at.tensors[1].offset, o + 4)
             }), Open,
             &["tensor 'tq2.weight'", "not a multiple of the alignment 32"], true),
        case("dims_overflow", bitnet().tensor("big", &[1 << 40, 1 << 40], 0, vec![]).build(), Open,
             &["tensor 'big'", "overflows u64"], true),
        case("dim_above_i64", patched(|b, at| put_u64(b, at.tensors[0].dims, u64::MAX)), Open,
             &["tensor 'norm.weight'", "dimension 0", "exceeds i64::MAX"], false),
        case("unknown_type_id", patched(|b, at| put_u32(b, at.tensors[0].type_id, 99)), Open,
             &["tensor 'norm.weight'", "unknown ggml type id 99"], true),
        case("ne0_not_block_multiple", bitnet().tensor("q", &[33], 8, vec![0; 34]).build(), Open,
             &["tensor 'q'", "ne0 = 33 is not a multiple of the Q8_0 block size 32"], true),
        case("tq2_ne0_128", bitnet().tensor("t", &[128, 2], 35, vec![0; 66]).build(), Open,
             &["tensor 't'", "TQ2_0 block size 256"], false),
        case("q4_k_ne0_128", bitnet().tensor("t", &[128, 2], 12, vec![0; 144]).build(), Open,
             &["tensor 't' (Q4_K)", "Q4_K block size 256"], false),
        case("i2s_numel_not_4", bitnet().tensor("t", &[3], 36, vec![0; 32]).build(), Open,
             &["tensor 't'", "multiple of 4"], false),
        case("n_dims_5", patched(|b, at| put_u32(b, at.tensors[0].n_dims, 5)), Open,
             &["tensor 'norm.weight'", "n_dims = 5", "at most 4"], true),
        case("duplicate_tensor_name",
             bitnet().tensor("w", &[4], 0, vec![0; 16]).tensor("w", &[4], 0, vec![0; 16]).build(), Open,
             &["tensor 'w' appears twice"], true),
        case("overlapping_tensors", patched(|b, at| {
                let o = u64::from_le_bytes(b[at.tensors[1].offset..][..8].try_into().unwrap());
                put_u64(b, at.tensors[2].offset, o)
             }), Open,
             &["'tq2.weight'", "'tq1.weight'", "overlap"], true),
        case("truncated_data", { let mut b = base().0; b.pop(); b }, Open,
             &["tensor 'i2s.weight'", "beyond the end of the file"], true),
        case("type36_not_bitnet",
             Builder::new().kv("general.architecture", s("llama"))
                 .tensor("w", &[128], 36, encode_i2_s(&[0; 128], 1.0)).build(), Open,
             &["tensor 'w'", "id 36 is I2_S only in BitNet files"], true),
        case("type37_bitnet", bitnet().tensor("w", &[4], 37, vec![0; 4]).build(), Open,
             &["tensor 'w'", "I8_S"], false),
        case("type38_bitnet", bitnet().tensor("w", &[4], 38, vec![0; 4]).build(), Open,
             &["tensor 'w'", "TL1"], false),
        case("empty", Vec::new(), Open, &["truncated: the magic"], false),
        case("i2s_code_3", patched(|b, at| b[at.tensors[3].data + 5] = 0xff), Ternary("i2s.weight"),
             &["tensor 'i2s.weight'", "element 5", "code 3"], true),
        case("i2s_code_3_dequantize", patched(|b, at| b[at.tensors[3].data + 40] |= 0x0c),
             Dequantize("i2s.weight"),
             &["tensor 'i2s.weight'", "element 200", "code 3"], false),
        case("i2s_ne0_64", bitnet().tensor("w", &[64, 2], 36, encode_i2_s(&[0; 128], 1.0)).build(),
             Ternary("w"), &["tensor 'w'", "ne0 = 64 is not a multiple of 128", "x86"], false),
        case("tq2_code_3", {
                let mut t = vec![0i8; 256];
                t[3] = 1;
                let mut d = encode_tq2_0(&t, &[f16::from_f32(1.0)]);
                d[10] = 0xff;
                bitnet().tensor("w", &[256], 35, d).build()
             }, Ternary("w"), &["tensor 'w'", "element 10", "code 3"], false),
        case("float_not_ternary", bitnet().tensor("w", &[3], 0, f32_bytes(&[0.5, -0.5, 0.25])).build(),
             Ternary("w"), &["tensor 'w'", "element 2 is 0.25", "magnitude 0.5"], false),
        case("token_type_length", tokenizer_file(vec![
                ("tokenizer.ggml.token_type", V::Arr(5, vec![V::I32(1); 4]))]), Tokenizer,
             &["'tokenizer.ggml.token_type' has 4 entries, but there are 5 tokens"], false),
        case("bos_out_of_range", tokenizer_file(vec![("tokenizer.ggml.bos_token_id", V::U32(9))]),
             Tokenizer, &["'tokenizer.ggml.bos_token_id'", "token id 9"], false),
        case("tokens_missing", bitnet().build(), Tokenizer,
             &["'tokenizer.ggml.tokens' is missing"], false),
        case("tokens_wrong_type", bitnet().kv("tokenizer.ggml.tokens", V::U32(3)).build(), Tokenizer,
             &["'tokenizer.ggml.tokens'", "expected array of string, found u32"], false),
    ]
}

/// Runs `stage` on `bytes` (named `path`) and returns the error message; panics if it succeeds.
fn failure(path: &Path, bytes: Option<Vec<u8>>, stage: Stage) -> String {
    let opened = match bytes {
        Some(b) => GgufFile::from_bytes(path, b),
        None => GgufFile::open(path),
    };
    let result = opened.and_then(|g| match stage {
        Stage::Open => Ok(()),
        Stage::Ternary(t) => g.ternary(t).map(drop),
        Stage::Dequantize(t) => g.dequantize(t).map(drop),
        Stage::Tokenizer => g.tokenizer().map(drop),
    });
    match result {
        Ok(()) => panic!("{}: {stage:?} succeeded", path.display()),
        Err(e) => e.to_string(),
    }
}

fn check_message(msg: &str, path: &Path, expect: &[&str]) {
    assert!(
        msg.starts_with(&format!("{}: ", path.display())),
        "the message does not name the file: {msg}"
    );
    for e in expect {
        assert!(msg.contains(e), "expected {e:?} in: {msg}");
    }
}

#[test]
fn each_case_fails_with_a_clear_message() {
    let cases = cases();
    assert!(cases.len() >= 40);
    for c in cases {
        let path = PathBuf::from(format!("{}.gguf", c.name));
        let msg = failure(&path, Some(c.bytes), c.stage);
        check_message(&msg, &path, c.expect);
    }
}

#[test]
fn the_base_file_is_valid() {
    let g = GgufFile::from_bytes(Path::new("base.gguf"), base().0).unwrap();
    assert_eq!(g.tensors().len(), 4);
    for t in g.tensors() {
        g.dequantize(&t.name).unwrap();
    }
    for t in ["tq2.weight", "tq1.weight", "i2s.weight", "norm.weight"] {
        assert!(g.ternary(t).is_ok() == (t != "norm.weight"), "{t}");
    }
    g.tokenizer().unwrap();
}

/// What a truncated file's message must say.
const TRUNCATION_WORDS: [&str; 4] = [
    "truncated",
    "beyond the end of the file",
    "bytes left",
    "bytes are left",
];

fn check_truncated(msg: &str, path: &Path, at: usize) {
    assert!(msg.starts_with(&format!("{}: ", path.display())), "{msg}");
    assert!(
        TRUNCATION_WORDS.iter().any(|w| msg.contains(w)),
        "truncated at {at}: {msg}"
    );
    // A key or tensor name in quotes, or the byte offset of the field that could not be read.
    assert!(
        msg.contains('\'') || msg.contains("at byte") || msg.contains("after byte"),
        "truncated at {at}: the message names no field or position: {msg}"
    );
}

#[test]
fn every_truncation_of_the_small_file_fails() {
    let (bytes, _) = base();
    let path = Path::new("truncated.gguf");
    for at in 0..bytes.len() {
        let msg = failure(path, Some(bytes[..at].to_vec()), Stage::Open);
        check_truncated(&msg, path, at);
    }
}

#[test]
fn truncations_of_a_real_file_fail() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf-tiny/tiny-tq1_0.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let mut offsets: Vec<usize> = (0..64).collect();
    offsets.extend((64..29200).step_by(173));
    offsets.extend((29200..bytes.len()).step_by(49_999));
    offsets.push(bytes.len() - 1);
    for at in offsets {
        let msg = failure(&path, Some(bytes[..at].to_vec()), Stage::Open);
        check_truncated(&msg, &path, at);
    }
}

/// Opens `bytes`; if that works, decodes every tensor and the tokenizer. Nothing may panic.
fn exercise(path: &Path, bytes: Vec<u8>) -> bool {
    match GgufFile::from_bytes(path, bytes) {
        Ok(g) => {
            for t in g.tensors() {
                let _ = g.dequantize(&t.name);
                let _ = g.ternary(&t.name);
            }
            let _ = g.tokenizer();
            true
        }
        Err(e) => {
            assert!(e.to_string().starts_with(&format!("{}: ", path.display())));
            false
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let (bytes, at) = base();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut rejected = 0;
    let n = 4000;
    for _ in 0..n {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            // Mostly the header, where the structure is.
            let limit = if rng.below(4) == 0 {
                b.len()
            } else {
                at.data_start
            };
            let i = rng.below(limit as u64) as usize;
            b[i] = match rng.below(3) {
                0 => rng.next() as u8,
                1 => b[i] ^ (1 << rng.below(8)),
                _ => 0xff,
            };
        }
        if !exercise(Path::new("fuzz.gguf"), b) {
            rejected += 1;
        }
    }
    assert!(
        rejected > n / 4,
        "only {rejected} of {n} corruptions were rejected"
    );
}

#[test]
fn random_header_corruption_of_a_real_file_never_panics() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf-tiny/tiny-tq2_0.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let g = GgufFile::open(&path).unwrap();
    let header = g.data_start();
    let mut rng = Rng(99);
    for _ in 0..60 {
        let mut b = bytes.clone();
        let i = rng.below(header as u64) as usize;
        b[i] = rng.next() as u8;
        exercise(&path, b);
    }
}

fn malformed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/malformed/gguf")
}

#[test]
fn malformed_files_on_disk() {
    let dir = malformed_dir();
    let bless = std::env::var_os("BITNETC_BLESS_GGUF").is_some();
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
        for c in cases().into_iter().filter(|c| c.on_disk) {
            std::fs::write(dir.join(format!("{}.gguf", c.name)), &c.bytes).unwrap();
        }
    }
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap_or_default();
    let mut on_disk = 0;
    for c in cases().into_iter().filter(|c| c.on_disk) {
        let path = dir.join(format!("{}.gguf", c.name));
        let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            stored,
            c.bytes,
            "{} differs from its generator",
            path.display()
        );
        assert!(
            stored.len() < 4096,
            "{} is {} bytes",
            path.display(),
            stored.len()
        );
        assert!(
            readme.contains(&format!("`{}.gguf`", c.name)),
            "README.md does not describe {}.gguf",
            c.name
        );
        let msg = failure(&path, None, c.stage);
        check_message(&msg, &path, c.expect);
        on_disk += 1;
    }
    assert!(on_disk >= 12);
    // Every file in the folder is one of the cases.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".gguf") {
            assert!(
                cases().iter().any(|c| c.on_disk && c.name == stem),
                "{name} is not generated by this test"
            );
        }
    }
}

#[test]
fn empty_file_on_disk() {
    let dir = std::env::temp_dir().join(format!("bitnetc-gguf-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("empty.gguf");
    std::fs::write(&path, b"").unwrap();
    let msg = failure(&path, None, Stage::Open);
    check_message(&msg, &path, &["empty"]);
    let missing = dir.join("missing.gguf");
    let e = GgufFile::open(&missing).err().unwrap().to_string();
    assert!(e.contains("missing.gguf"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
