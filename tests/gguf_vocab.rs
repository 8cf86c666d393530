//! GGUF vocabularies against their references, read from the files in tests/fixtures/vocab through
//! the GGUF reader as `run` reads a model:
//! * llama.cpp's vocab-only GGUFs (GPT-2, Llama 3, Llama 2 SentencePiece, Qwen2, StarCoder, whose
//!   split is SmolLM's) encode every `.inp` text to its `.out` ids, made by each model's own Hugging
//!   Face tokenizer without special tokens, as llama.cpp's test-tokenizer-0 compares them;
//! * `references.json`, made with Hugging Face `tokenizers` by scripts/fixtures/vocab_references.py,
//!   gives the ids and the decoded text of a multilingual text set (digits, whitespace runs, emoji,
//!   CJK, accents, code, special tokens in the text) for each vocabulary, and for the GPT-2
//!   vocabulary under the other families' pre-tokenizers (`smollm`, `llama-bpe`, `falcon3`,
//!   `qwen2`, `falcon`);
//! * the `tokenizer.json` an artifact stores reloads to a tokenizer that encodes and decodes the
//!   same, and streamed decoding concatenates to the whole decode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_frontend::gguf::GgufFile;
use bitnet_runtime::tokenizer::{GgufVocab, Tokenizer};
use serde_json::Value;
use std::path::PathBuf;

/// The vocab GGUFs copied from llama.cpp, with their `.inp`/`.out` references.
const LLAMA_CPP_VOCABS: [&str; 5] = [
    "ggml-vocab-gpt-2.gguf",
    "ggml-vocab-llama-bpe.gguf",
    "ggml-vocab-llama-spm.gguf",
    "ggml-vocab-qwen2.gguf",
    "ggml-vocab-starcoder.gguf",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vocab")
}

/// The file's `tokenizer.ggml.*` metadata as the runtime takes it.
fn vocab(file: &str) -> GgufVocab {
    let path = dir().join(file);
    let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let meta = gguf.tokenizer().unwrap_or_else(|e| panic!("{e}"));
    bitnetc::tokenizer::gguf_vocab(&meta, file).unwrap_or_else(|e| panic!("{e}"))
}

fn build(vocab: &GgufVocab, what: &str) -> Tokenizer {
    Tokenizer::from_gguf_vocab(vocab, what).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// llama.cpp's test format: texts separated by a `__ggml_vocab_test__` line, one line of ids per
/// text.
fn llama_cpp_tests(file: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(dir().join(format!("{file}.inp"))).unwrap();
    let out = std::fs::read_to_string(dir().join(format!("{file}.out"))).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if texts.last() == Some(&"") {
        texts.pop();
    }
    let lines: Vec<&str> = out.split('\n').collect();
    assert!(
        lines.len() >= texts.len(),
        "{file}: fewer outputs than texts"
    );
    texts
        .iter()
        .zip(lines)
        .map(|(text, line)| {
            let ids = line
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            (text.to_string(), ids)
        })
        .collect()
}

#[test]
fn llama_cpp_reference_tokenizations_match() {
    for file in LLAMA_CPP_VOCABS {
        let tok = build(&vocab(file), file);
        let tests = llama_cpp_tests(file);
        assert_eq!(tests.len(), 46, "{file}");
        let wrong: Vec<String> = tests
            .iter()
            .filter_map(|(text, want)| {
                let got = tok.encode(text, false).unwrap();
                (&got != want).then(|| format!("{text:?}: got {got:?}, want {want:?}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{file}: {}", wrong.join("\n"));
    }
}

/// Streams `ids` through `tok` and returns the concatenated pieces.
fn streamed(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut stream = tok.decode_stream(false);
    let mut text = String::new();
    for &id in ids {
        text += &stream.step(id).unwrap();
    }
    text + &stream.finish().unwrap()
}

#[test]
fn hf_references_match_on_the_text_set() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("references.json")).unwrap())
            .unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 11);
    let mut files: std::collections::HashMap<String, GgufVocab> = Default::default();
    let mut compared = 0;
    for case in cases {
        let file = case["vocab"].as_str().unwrap();
        let mut v = files
            .entry(file.to_string())
            .or_insert_with(|| vocab(file))
            .clone();
        if let Some(pre) = case["pre"].as_str() {
            v.pre = Some(pre.to_string());
        }
        if let Some(add) = case.get("add_space_prefix") {
            v.add_space_prefix = Some(add.as_bool().unwrap());
        }
        let what = format!(
            "{file} (pre {:?}, space prefix {:?})",
            v.pre, v.add_space_prefix
        );
        let tok = build(&v, &what);
        let json = tok.to_json().unwrap();
        let back = Tokenizer::from_json_bytes(json.as_bytes(), "artifact").unwrap();
        assert_eq!(back.to_json().unwrap(), json, "{what}: JSON round trip");
        let mut wrong = Vec::new();
        for record in case["texts"].as_array().unwrap() {
            let text = record["text"].as_str().unwrap();
            let want: Vec<u32> = record["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
                .collect();
            let decoded = record["decoded"].as_str().unwrap();
            let got = tok.encode(text, false).unwrap();
            if got != want {
                wrong.push(format!("{text:?}: encode gives {got:?}, want {want:?}"));
                continue;
            }
            let got_text = tok.decode(&want, false).unwrap();
            if got_text != decoded {
                wrong.push(format!(
                    "{text:?}: decode gives {got_text:?}, want {decoded:?}"
                ));
            }
            assert_eq!(
                back.encode(text, true).unwrap(),
                tok.encode(text, true).unwrap()
            );
            assert_eq!(
                back.decode(&want, false).unwrap(),
                got_text,
                "{what}: {text:?}"
            );
            assert_eq!(streamed(&tok, &want), got_text, "{what}: {text:?} streamed");
            compared += 1;
        }
        assert!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
    }
    assert!(compared > 700, "{compared} texts compared");
}

#[test]
fn bos_is_added_as_llama_cpp_adds_it() {
    for (file, bos) in [
        ("ggml-vocab-llama-bpe.gguf", Some(128_000)),
        ("ggml-vocab-llama-spm.gguf", Some(1)),
        ("ggml-vocab-gpt-2.gguf", None),
        ("ggml-vocab-qwen2.gguf", None),
        ("ggml-vocab-starcoder.gguf", None),
    ] {
        let tok = build(&vocab(file), file);
        let plain = tok.encode("Hello world", false).unwrap();
        let with_special = tok.encode("Hello world", true).unwrap();
        let expected: Vec<u32> = bos.into_iter().chain(plain).collect();
        assert_eq!(with_special, expected, "{file}");
    }
}
