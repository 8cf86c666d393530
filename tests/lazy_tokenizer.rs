//! The tokenizer is built only when text is used: a model whose tokenizer bitnetc cannot read
//! still opens, compiles, runs on token ids and benchmarks, and a text prompt reports the
//! tokenizer's error naming its file. Also what `Model::open` reads for text: the chat template.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnetc::{GenerateParams, Model, Options, SamplingParams};
use std::path::{Path, PathBuf};
use support::{Scratch, bitnetc, root};

/// A copy of hf-tiny/packed in `scratch` whose `tokenizer.json` is garbage.
fn hf_with_broken_tokenizer(scratch: &Path) -> PathBuf {
    let from = root().join("tests/fixtures/hf-tiny/packed");
    let dir = scratch.join("packed");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.join("tokenizer.json"), b"\x00 this is not JSON {").unwrap();
    dir
}

/// A copy of gguf-tiny's f32 file whose `tokenizer.ggml.pre` names a pre-tokenizer bitnetc does not
/// support (`bloom`, the same length as `gpt-2`, so the header stays valid).
fn gguf_with_unsupported_pre_tokenizer(scratch: &Path) -> PathBuf {
    let mut bytes = std::fs::read(root().join("tests/fixtures/gguf-tiny/tiny-f32.gguf")).unwrap();
    let key = b"tokenizer.ggml.pre\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00gpt-2";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("tiny-f32.gguf declares tokenizer.ggml.pre = gpt-2");
    let value = at + key.len() - 5;
    bytes[value..value + 5].copy_from_slice(b"bloom");
    let path = scratch.join("tiny-bloom.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `run --tokens` and `bench` work, and `run --prompt` fails with `expect` in its message, which
/// names `file`.
fn check_cli(model: &Path, file: &str, expect: &str) {
    let m = model.to_str().unwrap();
    let out = bitnetc(&[
        "run",
        m,
        "--tokens",
        "1,2,3",
        "-n",
        "4",
        "--threads",
        "2",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run --tokens on {m}: {stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tokens"].as_array().unwrap().len(), 4, "{json}");
    assert_eq!(json["stop"], "max_tokens");
    assert!(
        stderr.contains("warning") && stderr.contains(file) && stderr.contains(expect),
        "run --tokens says why there is no text: {stderr}"
    );

    let out = bitnetc(&[
        "bench",
        m,
        "--threads",
        "2",
        "--prompt-len",
        "4",
        "--steps",
        "2",
        "--repeat",
        "1",
        "--no-baseline",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "bench on {m}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["builds"].as_array().unwrap().len(), 1, "{report}");

    let out = bitnetc(&["run", m, "--prompt", "hi", "-n", "2", "--threads", "2"]);
    assert!(!out.status.success(), "run --prompt on {m} succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains(file) && stderr.contains(expect),
        "run --prompt on {m}: {stderr}"
    );
}

#[test]
fn a_garbage_tokenizer_json_fails_text_prompts_only() {
    let scratch = Scratch::create("lazy-tokenizer-hf");
    let dir = hf_with_broken_tokenizer(&scratch);
    check_cli(&dir, "tokenizer.json", "not a valid tokenizer file");
}

#[test]
fn an_unsupported_gguf_pre_tokenizer_fails_text_prompts_only() {
    let scratch = Scratch::create("lazy-tokenizer-gguf");
    let path = gguf_with_unsupported_pre_tokenizer(&scratch);
    check_cli(&path, "tiny-bloom.gguf", "pre-tokenizer 'bloom'");
}

#[test]
fn the_api_builds_the_tokenizer_on_first_use() {
    let scratch = Scratch::create("lazy-tokenizer-api");
    let dir = hf_with_broken_tokenizer(&scratch);
    // Opening reads the IR and the weights, not the tokenizer.
    let model = Model::open(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(model.summary.parameters > 0);
    let err = match model.tokenizer() {
        Ok(_) => panic!("a garbage tokenizer.json builds"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let mut options = Options::default();
    options.cpu.threads = 2;
    let compiled = bitnetc::compile(&dir, &options).unwrap_or_else(|e| panic!("{e}"));
    assert!(compiled.tokenizer().is_err());
    let mut session = compiled.token_session();
    let params = GenerateParams {
        max_tokens: 3,
        sampling: SamplingParams::greedy(),
        ..GenerateParams::default()
    };
    let out = session
        .generate(&[1, 2, 3], &params, &mut |_, _| {})
        .unwrap();
    assert_eq!(out.tokens.len(), 3);
    assert!(out.text.is_empty());

    // The same model compiled again: a session with text is the tokenizer's error.
    let compiled = bitnetc::compile(&dir, &options).unwrap();
    let err = match compiled.session() {
        Ok(_) => panic!("a session with text was made without its tokenizer"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    // A readable tokenizer is built once and kept.
    let good = Model::open(&root().join("tests/fixtures/hf-tiny/packed")).unwrap();
    let first = good.tokenizer().unwrap().unwrap() as *const _;
    let again = good.tokenizer().unwrap().unwrap() as *const _;
    assert_eq!(first, again);
}

#[test]
fn open_reads_the_chat_template() {
    let packed = root().join("tests/fixtures/hf-tiny/packed");
    assert_eq!(Model::open(&packed).unwrap().chat_template().unwrap(), None);
    let gguf = root().join("tests/fixtures/gguf-tiny/tiny-f32.gguf");
    assert_eq!(Model::open(&gguf).unwrap().chat_template().unwrap(), None);

    let scratch = Scratch::create("lazy-tokenizer-chat-template");
    let dir = hf_with_broken_tokenizer(&scratch);
    let config_path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let template = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
    config["chat_template"] = template.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let model = Model::open(&dir).unwrap();
    let t = model.chat_template().unwrap().unwrap();
    assert_eq!(t.source, template);
    assert_eq!(
        t.origin,
        format!("{} (chat_template)", config_path.display())
    );
    assert_eq!(model.format(), bitnetc::frontend::detect::ModelFormat::Hf);
    assert_eq!(model.path(), dir.as_path());
}
