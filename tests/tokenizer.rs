//! The tokenizer against the transformers references: the three hf-tiny folders' `tokenizer.json`
//! (with their config files) and the gguf-tiny files' `tokenizer.ggml.*` metadata encode the text
//! prompt to the reference ids, and decode the greedy tokens, at once and streamed, to the text
//! transformers printed (U+FFFD where a token split a character). Malformed input gives errors that
//! name the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::gguf::GgufFile;
use bitnet_runtime::tokenizer::{GgufVocab, Tokenizer, TokenizerError};
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::Scratch;

const HF_FORMS: [&str; 3] = ["online", "packed", "packed_bitlinear"];
const GGUF_FILES: [&str; 4] = [
    "tiny-f32.gguf",
    "tiny-i2_s.gguf",
    "tiny-tq1_0.gguf",
    "tiny-tq2_0.gguf",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

fn gguf_tokenizer(file: &str) -> Tokenizer {
    let path = fixtures().join("gguf-tiny").join(file);
    let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let meta = gguf.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    let vocab = bitnetc::tokenizer::gguf_vocab(&meta, &path.display().to_string()).unwrap();
    assert_eq!(vocab.model, "gpt2");
    assert_eq!(vocab.pre.as_deref(), Some("gpt-2"));
    Tokenizer::from_gguf_vocab(&vocab, &path.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Checks `tok` against an hf-tiny reference: prompt encoding, decode of the greedy tokens at once
/// and streamed.
fn check_reference(tok: &Tokenizer, reference: &Value, what: &str) {
    let prompt = reference["text_prompt"].as_str().unwrap();
    let prompt_ids = u32s(&reference["text_prompt_ids"]);
    assert_eq!(
        tok.encode(prompt, true).unwrap(),
        prompt_ids,
        "{what}: encode"
    );
    assert_eq!(
        tok.encode(prompt, false).unwrap(),
        prompt_ids[1..],
        "{what}: encode, no bos"
    );
    assert_eq!(
        tok.decode(&prompt_ids, true).unwrap(),
        prompt,
        "{what}: decode of the prompt"
    );

    let new_tokens = u32s(&reference["text_greedy_new_tokens"]);
    let expected = reference["text_greedy_decoded"].as_str().unwrap();
    assert!(
        expected.contains('\u{FFFD}'),
        "the reference exercises split bytes"
    );
    assert_eq!(
        tok.decode(&new_tokens, true).unwrap(),
        expected,
        "{what}: decode"
    );

    let mut stream = tok.decode_stream(true);
    let mut pieces = Vec::new();
    for &id in &new_tokens {
        pieces.push(stream.step(id).unwrap());
    }
    pieces.push(stream.finish().unwrap());
    assert_eq!(pieces.concat(), expected, "{what}: streamed {pieces:?}");
    // Whatever a step returned is final: no step ends in the replacement character.
    for p in &pieces[..pieces.len() - 1] {
        assert!(!p.ends_with('\u{FFFD}'), "{what}: a step returned {p:?}");
    }

    // The whole prompt + generation, streamed with special tokens kept.
    let all: Vec<u32> = prompt_ids.iter().chain(&new_tokens).copied().collect();
    let mut stream = tok.decode_stream(false);
    let mut text = String::new();
    for &id in &all {
        text += &stream.step(id).unwrap();
    }
    text += &stream.finish().unwrap();
    assert_eq!(
        text,
        tok.decode(&all, false).unwrap(),
        "{what}: streamed with specials"
    );
    assert!(text.starts_with("<s>Return"), "{what}: {text:?}");
}

#[test]
fn hf_tiny_folders_match_transformers() {
    for form in HF_FORMS {
        let dir = fixtures().join("hf-tiny").join(form);
        let reference = json(&dir.join("reference.json"));
        let tok = Tokenizer::from_hf_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tok.vocab_size(), 1000, "{form}");
        assert_eq!(tok.bos(), Some(1), "{form}");
        assert_eq!(tok.eos(), &[2], "{form}");
        assert_eq!(tok.token_id("</s>"), Some(2), "{form}");
        assert_eq!(tok.token_text(1).as_deref(), Some("<s>"), "{form}");
        check_reference(&tok, &reference, form);

        // The bare tokenizer.json encodes the same, but knows no bos/eos.
        let bare = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        assert_eq!((bare.bos(), bare.eos()), (None, &[][..]), "{form}");
        check_reference(&bare, &reference, form);
    }
}

#[test]
fn gguf_tiny_metadata_matches_transformers() {
    let hf_dir = fixtures().join("hf-tiny/online");
    let hf_reference = json(&hf_dir.join("reference.json"));
    let gguf_reference = json(&fixtures().join("gguf-tiny/reference.json"));
    let hf = Tokenizer::from_hf_dir(&hf_dir).unwrap();
    for file in GGUF_FILES {
        let tok = gguf_tokenizer(file);
        assert_eq!(tok.vocab_size(), 1000, "{file}");
        assert_eq!(tok.bos(), hf.bos(), "{file}");
        assert_eq!(tok.eos(), hf.eos(), "{file}");
        let prompt = gguf_reference["text_prompt"].as_str().unwrap();
        assert_eq!(
            tok.encode(prompt, true).unwrap(),
            u32s(&gguf_reference["text_prompt_ids"]),
            "{file}: encode"
        );
        check_reference(&tok, &hf_reference, file);

        // Both ways of building the tokenizer agree beyond the references: spaces, digits,
        // punctuation, non-ASCII text, and special tokens written in the text.
        for text in [
            "  def f(x):\n\treturn x**2 # 12345",
            "naïve café — 東京 😀",
            "<s>a</s> <unk>",
            "",
        ] {
            let ids = hf.encode(text, true).unwrap();
            assert_eq!(tok.encode(text, true).unwrap(), ids, "{file}: {text:?}");
            for skip in [true, false] {
                assert_eq!(
                    tok.decode(&ids, skip).unwrap(),
                    hf.decode(&ids, skip).unwrap(),
                    "{file}: {text:?}"
                );
            }
        }

        // The tokenizer.json written for an artifact loads back to the same tokenizer.
        let back = Tokenizer::from_json_bytes(tok.to_json().unwrap().as_bytes(), "artifact")
            .unwrap()
            .with_special_ids(tok.bos(), tok.eos().to_vec())
            .unwrap();
        check_reference(&back, &hf_reference, "artifact");
    }
}

/// Asserts that `e` names `source` at the start of its message and mentions `needle`.
fn names(e: &TokenizerError, source: &str, needle: &str) {
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{source}: ")), "{msg}");
    assert!(msg.contains(needle), "{msg}");
}

#[test]
fn malformed_input_gives_errors_naming_the_source() {
    let good = std::fs::read(fixtures().join("hf-tiny/online/tokenizer.json")).unwrap();
    let e = Tokenizer::from_json_bytes(&good[..good.len() / 2], "half.json").unwrap_err();
    assert!(matches!(e, TokenizerError::Json { .. }), "{e}");
    names(&e, "half.json", "not a valid tokenizer file");
    let e = Tokenizer::from_json_bytes(b"\x00\xffgarbage", "garbage.json").unwrap_err();
    assert!(matches!(e, TokenizerError::Json { .. }), "{e}");
    names(&e, "garbage.json", "not a valid tokenizer file");
    let e = Tokenizer::from_json_bytes(br#"{"model": 3}"#, "shape.json").unwrap_err();
    names(&e, "shape.json", "");

    let scratch = Scratch::create("tokenizer");
    let missing = scratch.join("tokenizer.json");
    let e = Tokenizer::from_hf_dir(&*scratch).unwrap_err();
    assert!(matches!(e, TokenizerError::Io { .. }), "{e}");
    names(&e, &missing.display().to_string(), "cannot read");

    std::fs::write(&missing, &good).unwrap();
    let config = scratch.join("tokenizer_config.json");
    std::fs::write(&config, r#"{"bos_token": "<nope>"}"#).unwrap();
    let e = Tokenizer::from_hf_dir(&*scratch).unwrap_err();
    names(&e, &config.display().to_string(), "'bos_token'");
    std::fs::write(&config, r#"{"add_bos_token": "yes"}"#).unwrap();
    let e = Tokenizer::from_hf_dir(&*scratch).unwrap_err();
    names(&e, &config.display().to_string(), "'add_bos_token'");
    std::fs::write(&config, "{").unwrap();
    let e = Tokenizer::from_hf_dir(&*scratch).unwrap_err();
    names(&e, &config.display().to_string(), "");
    std::fs::remove_file(&config).unwrap();
    let generation = scratch.join("generation_config.json");
    std::fs::write(&generation, r#"{"eos_token_id": [2, 5000]}"#).unwrap();
    let e = Tokenizer::from_hf_dir(&*scratch).unwrap_err();
    names(&e, &generation.display().to_string(), "5000");
    std::fs::write(&generation, r#"{"eos_token_id": "2"}"#).unwrap();
    let e = Tokenizer::from_hf_dir(&*scratch).unwrap_err();
    names(&e, &generation.display().to_string(), "'eos_token_id'");

    // tokenizer_config.json's add_bos_token overrides the post-processor.
    std::fs::write(&generation, r#"{"eos_token_id": [2, 0]}"#).unwrap();
    std::fs::write(
        &config,
        r#"{"bos_token": {"content": "<s>"}, "add_bos_token": false}"#,
    )
    .unwrap();
    let tok = Tokenizer::from_hf_dir(&*scratch).unwrap();
    assert_eq!((tok.bos(), tok.eos()), (Some(1), &[2, 0][..]));
    assert_eq!(
        tok.encode("a", true).unwrap(),
        tok.encode("a", false).unwrap()
    );
    assert_eq!(
        tok.encode("<s>a", true).unwrap()[0],
        1,
        "a bos the text spells stays"
    );

    let tok = gguf_tokenizer("tiny-f32.gguf");
    let e = tok.decode(&[1, 1000], true).unwrap_err();
    assert!(
        matches!(e, TokenizerError::IdOutOfRange { id: 1000, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("tiny-f32.gguf"), "{e}");

    let mut vocab = GgufVocab {
        model: "bert".into(),
        tokens: vec!["<unk>".into(), "<s>".into()],
        ..GgufVocab::default()
    };
    let e = Tokenizer::from_gguf_vocab(&vocab, "bert.gguf").unwrap_err();
    assert!(matches!(e, TokenizerError::Unsupported { .. }), "{e}");
    names(&e, "bert.gguf", "'bert'");
    vocab.model = "llama".into();
    let e = Tokenizer::from_gguf_vocab(&vocab, "llama.gguf").unwrap_err();
    assert!(matches!(e, TokenizerError::MissingField { .. }), "{e}");
    names(&e, "llama.gguf", "tokenizer.ggml.scores");

    let path = fixtures().join("gguf-tiny/tiny-f32.gguf");
    let mut meta = GgufFile::open(&path).unwrap().tokenizer().unwrap();
    meta.model = None;
    let e = bitnetc::tokenizer::gguf_vocab(&meta, "no-model.gguf").unwrap_err();
    names(&e, "no-model.gguf", "tokenizer.ggml.model");
}
