//! Chat templates against transformers, and chat on the command line:
//! * `tests/fixtures/chat/parity.json` (scripts/fixtures/chat_templates.py): for ChatML (Qwen2,
//!   Qwen2.5, SmolLM3), Llama 3 (3, 3.1, 3.2) and BitNet b1.58 2B-4T templates on published
//!   vocabularies, the text and prompt ids of transformers' `apply_chat_template` for conversations
//!   with and without a system message, over several turns: bitnetc gives the same text and ids;
//! * `llama_cpp.json`: every template llama.cpp ships, rendered by transformers' renderer for one
//!   conversation (or the error it raised): bitnetc renders the same text, or fails too;
//! * `bitnetc run --chat` with the model's template, without one (the built-in format, named),
//!   with one that raises an exception, and from an artifact;
//! * `bitnetc chat` driven through stdin: turns that keep the KV cache give what running the whole
//!   prompt gives, `/reset`, `/exit`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::gguf::GgufFile;
use bitnet_runtime::chat::{BUILTIN_SOURCE, BosRule, ChatError, ChatFormat, ChatTemplate, Message};
use bitnet_runtime::tokenizer::Tokenizer;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use support::{Scratch, bitnetc, root};

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/chat")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

/// The tokenizer of a vocabulary GGUF in tests/fixtures/vocab, as `run` builds it.
fn vocab_tokenizer(file: &str) -> Tokenizer {
    let path = root().join("tests/fixtures/vocab").join(file);
    let gguf = GgufFile::open(&path).unwrap();
    let vocab = bitnetc::tokenizer::gguf_vocab(&gguf.tokenizer().unwrap(), file).unwrap();
    Tokenizer::from_gguf_vocab(&vocab, file).unwrap()
}

fn optional(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

#[test]
fn templates_give_transformers_text_and_ids() {
    let parity = json(&fixtures().join("parity.json"));
    let clock = parity["clock"].as_i64().unwrap();
    let mut checked = 0;
    for case in parity["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let path = fixtures().join(case["template"].as_str().unwrap());
        let tok = vocab_tokenizer(case["vocab"].as_str().unwrap());
        let template = ChatTemplate {
            source: std::fs::read_to_string(&path).unwrap(),
            origin: path.display().to_string(),
            bos_token: optional(&case["bos_token"]),
            eos_token: optional(&case["eos_token"]),
            bos: BosRule::AsWritten,
        };
        // The built-in format is the one `run --chat` uses for a model without a template.
        let format = if name == "bitnetc-builtin" {
            assert_eq!(template.source, BUILTIN_SOURCE);
            let f = ChatFormat::new(None, &tok).unwrap();
            assert!(f.is_builtin());
            f
        } else {
            ChatFormat::new(Some(template), &tok).unwrap()
        };
        format.set_clock(clock);
        for c in case["conversations"].as_array().unwrap() {
            let what = format!("{name}/{}", c["name"].as_str().unwrap());
            let m = messages(&c["messages"]);
            let add_generation = c["add_generation_prompt"].as_bool().unwrap();
            let text = format
                .render(&m, add_generation)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(text, c["text"].as_str().unwrap(), "{what}");
            let ids = format.encode(&tok, &m, add_generation).unwrap();
            assert_eq!(ids, u32s(&c["ids"]), "{what}");
            checked += 1;
        }
    }
    assert_eq!(checked, 40);
}

#[test]
fn a_gguf_template_is_read_and_renders_as_transformers() {
    // The Qwen2 vocabulary's own `tokenizer.chat_template`, read as `Model::open` reads it: its
    // tokenizer adds no bos, so llama.cpp's bos rule gives transformers' ids.
    let parity = json(&fixtures().join("parity.json"));
    let case = &parity["cases"][0];
    assert_eq!(case["name"], "chatml-qwen2");
    let path = root().join("tests/fixtures/vocab/ggml-vocab-qwen2.gguf");
    let gguf = GgufFile::open(&path).unwrap();
    let template = ChatTemplate::from_gguf(
        gguf.get_str("tokenizer.chat_template").unwrap(),
        "ggml-vocab-qwen2.gguf",
    );
    assert_eq!(template.bos, BosRule::Once);
    let tok = vocab_tokenizer("ggml-vocab-qwen2.gguf");
    let format = ChatFormat::new(Some(template), &tok).unwrap();
    assert_eq!(
        format.describe(),
        "the model's (ggml-vocab-qwen2.gguf (tokenizer.chat_template))"
    );
    // <|endoftext|> (eos) and <|im_end|> end a turn.
    let end = |t: &str| tok.special_token_id(t).unwrap();
    assert_eq!(
        format.stop_tokens(),
        &[end("<|endoftext|>"), end("<|im_end|>")]
    );
    for c in case["conversations"].as_array().unwrap() {
        let m = messages(&c["messages"]);
        let add_generation = c["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(
            format.encode(&tok, &m, add_generation).unwrap(),
            u32s(&c["ids"])
        );
    }
}

/// Templates that fail in Jinja2 but render here, and why: minijinja iterates over none as over an
/// empty list, where Jinja2 raises a TypeError. These tool-use templates loop over `tools` without
/// checking that tools were given.
const KNOWN_DIFFERENT: [(&str, &str); 3] = [
    (
        "CohereForAI-c4ai-command-r-plus-tool_use.jinja",
        "loops over tools, which are none",
    ),
    (
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
        "loops over tools, which are none",
    ),
    (
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        "loops over tools, which are none",
    ),
];

#[test]
fn every_llama_cpp_template_renders_as_transformers_does() {
    let refs = json(&fixtures().join("llama_cpp.json"));
    let tok = vocab_tokenizer("ggml-vocab-llama-bpe.gguf");
    let m = messages(&refs["messages"]);
    let (mut same, mut both_fail) = (0, 0);
    let mut wrong = Vec::new();
    for t in refs["templates"].as_array().unwrap() {
        let name = t["template"].as_str().unwrap();
        if KNOWN_DIFFERENT.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let path = fixtures().join("llama_cpp").join(name);
        let template = ChatTemplate {
            source: std::fs::read_to_string(&path).unwrap(),
            origin: name.to_string(),
            bos_token: optional(&refs["bos_token"]),
            eos_token: optional(&refs["eos_token"]),
            bos: BosRule::AsWritten,
        };
        let ours = ChatFormat::new(Some(template), &tok).and_then(|f| {
            f.set_clock(refs["clock"].as_i64().unwrap());
            f.render(&m, true)
        });
        match (&t["text"], &ours) {
            (Value::String(want), Ok(got)) if want == got => same += 1,
            (Value::String(_), Ok(_)) => wrong.push(format!("{name}: renders differently")),
            (Value::String(_), Err(e)) => wrong.push(format!("{name}: {e}")),
            (_, Err(e)) => {
                // Every error names the template; raise_exception's message is the template's.
                assert!(e.to_string().starts_with(name), "{e}");
                let want = t["error"].as_str().unwrap();
                if let Some(message) = want.strip_prefix("TemplateError: ") {
                    assert!(
                        matches!(e, ChatError::Raised { message: m, .. } if m == message),
                        "{name}: {e}"
                    );
                }
                both_fail += 1;
            }
            (_, Ok(_)) => wrong.push(format!("{name}: renders where transformers fails")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of them:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    println!("{same} templates render as transformers does, {both_fail} fail as there");
    assert!(same >= 60, "{same}");
}

/// A template for hf-tiny's tokenizer, whose turns end with its eos `</s>`.
const TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}</s>{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

/// A copy of hf-tiny's packed checkpoint in `scratch`, with `template` as the `chat_template` of
/// its tokenizer_config.json.
fn hf_with_template(scratch: &Path, template: Option<&str>) -> PathBuf {
    let from = root().join("tests/fixtures/hf-tiny/packed");
    let dir = scratch.join("model");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    if let Some(template) = template {
        let path = dir.join("tokenizer_config.json");
        let mut config = json(&path);
        config["chat_template"] = template.into();
        std::fs::write(&path, config.to_string()).unwrap();
    }
    dir
}

/// Runs bitnetc; returns stdout parsed as JSON and stderr, after checking it succeeded.
fn run_json(args: &[&str]) -> (Value, String) {
    let out = bitnetc(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "bitnetc {args:?}: {err}");
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

fn ids_of(dir: &Path, text: &str) -> Vec<u32> {
    Tokenizer::from_hf_dir(dir)
        .unwrap()
        .encode(text, false)
        .unwrap()
}

#[test]
fn run_chat_uses_the_models_template() {
    let tmp = Scratch::create("chat-run-template");
    let dir = hf_with_template(&tmp, Some(TEMPLATE));
    let d = dir.to_str().unwrap();
    let args = [
        "run",
        d,
        "--chat",
        "--system",
        "Be brief",
        "--prompt",
        "Sort a list",
        "-n",
        "4",
        "--json",
    ];
    let (out, err) = run_json(&args);
    let config = dir.join("tokenizer_config.json");
    assert!(
        err.contains(&format!(
            "chat template: the model's ({} (chat_template))",
            config.display()
        )),
        "{err}"
    );
    let text = "<s>system: Be brief</s>user: Sort a list</s>assistant:";
    let want = ids_of(&dir, text);
    assert_eq!(want[0], 1, "the template writes bos");
    assert_eq!(u32s(&out["prompt_tokens"]), want);
}

#[test]
fn run_chat_without_a_template_names_the_builtin() {
    // hf-tiny's tokenizer with id 999 (its last merge, which no merge uses) as the special token
    // <|eot_id|>: the built-in format needs it.
    let tmp = Scratch::create("chat-run-builtin");
    let dir = hf_with_template(&tmp, None);
    let path = dir.join("tokenizer.json");
    let mut tokenizer = json(&path);
    let vocab = tokenizer["model"]["vocab"].as_object_mut().unwrap();
    let last = vocab
        .iter()
        .find(|(_, id)| id.as_u64() == Some(999))
        .unwrap()
        .0
        .clone();
    vocab.remove(&last);
    vocab.insert("<|eot_id|>".into(), 999.into());
    let merges = tokenizer["model"]["merges"].as_array_mut().unwrap();
    merges.pop();
    tokenizer["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": 999, "content": "<|eot_id|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    let d = dir.to_str().unwrap();
    let (out, err) = run_json(&["run", d, "--chat", "--prompt", " Hi ", "-n", "4", "--json"]);
    assert!(
        err.contains("chat template: built-in bitnet-b1.58-2B-4T (the model has none)"),
        "{err}"
    );
    let mut want = vec![1];
    want.extend(ids_of(&dir, "User: Hi"));
    want.push(999);
    want.extend(ids_of(&dir, "Assistant: "));
    assert_eq!(u32s(&out["prompt_tokens"]), want);
}

#[test]
fn a_template_that_raises_is_a_clear_error() {
    let tmp = Scratch::create("chat-run-raise");
    let template = format!(
        "{{% if messages[0]['role'] != 'system' %}}{{{{ raise_exception('This model needs a system message first') }}}}{{% endif %}}\n{TEMPLATE}"
    );
    let dir = hf_with_template(&tmp, Some(&template));
    let d = dir.to_str().unwrap();
    let out = bitnetc(&["run", d, "--chat", "--prompt", "Hi", "-n", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{} (chat_template): the chat template refused the conversation (raise_exception, line 1): This model needs a system message first",
        dir.join("tokenizer_config.json").display()
    );
    assert!(err.contains(&want), "{err}");
    run_json(&[
        "run", d, "--chat", "--system", "S", "--prompt", "Hi", "-n", "2", "--json",
    ]);
}

#[test]
fn an_artifact_carries_the_template() {
    let tmp = Scratch::create("chat-artifact");
    let dir = hf_with_template(&tmp, Some(TEMPLATE));
    let bnx = tmp.join("model.bnx");
    let out = bitnetc(&[
        "compile",
        dir.to_str().unwrap(),
        "-o",
        bnx.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = |model: &Path| {
        let m = model.to_str().unwrap();
        run_json(&[
            "run",
            m,
            "--chat",
            "--prompt",
            "Sort a list",
            "-n",
            "6",
            "--json",
        ])
    };
    let (from_dir, _) = run(&dir);
    let (from_bnx, err) = run(&bnx);
    let origin = format!(
        "chat template: the model's ({} (chat_template section), from {} (chat_template))",
        bnx.display(),
        dir.join("tokenizer_config.json").display()
    );
    assert!(err.contains(&origin), "{err}");
    assert_eq!(from_bnx["prompt_tokens"], from_dir["prompt_tokens"]);
    assert_eq!(from_bnx["tokens"], from_dir["tokens"]);
}

/// Runs `bitnetc chat` with `input` on stdin; returns the JSON object of each turn and stderr.
fn chat(model: &Path, input: &str) -> (Vec<Value>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args([
            "chat",
            model.to_str().unwrap(),
            "-n",
            "6",
            "--json",
            "--threads",
            "2",
        ])
        .env("BITNETC_AUDIT_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let turns = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (turns, err)
}

#[test]
fn chat_keeps_the_conversation_and_reuses_the_cache() {
    let tmp = Scratch::create("chat-command");
    let dir = hf_with_template(&tmp, Some(TEMPLATE));
    let d = dir.to_str().unwrap();
    let input = "Return a new list\nand sort it\n/reset\nReturn a new list\n/exit\nnever read\n";
    let (turns, err) = chat(&dir, input);
    assert_eq!(turns.len(), 3, "{err}");
    assert!(err.contains("(a new conversation)"), "{err}");
    let prompt = |t: &Value| u32s(&t["prompt_tokens"]);
    let reused = |t: &Value| t["reused"].as_u64().unwrap() as usize;
    // Turn 1 is `run --chat`.
    let (single, _) = run_json(&[
        "run",
        d,
        "--chat",
        "--prompt",
        "Return a new list",
        "-n",
        "6",
        "--json",
    ]);
    assert_eq!(prompt(&turns[0]), u32s(&single["prompt_tokens"]));
    assert_eq!(turns[0]["tokens"], single["tokens"]);
    assert_eq!(reused(&turns[0]), 0);
    // Turn 2 holds the whole conversation and prefills only what the cache does not hold, yet
    // generates what running its whole prompt gives.
    let p2 = prompt(&turns[1]);
    let reply = turns[0]["text"].as_str().unwrap();
    let text = format!(
        "<s>user: Return a new list</s>assistant: {reply}</s>user: and sort it</s>assistant:"
    );
    assert_eq!(p2, ids_of(&dir, &text));
    assert!(p2.starts_with(&prompt(&turns[0])));
    assert!(reused(&turns[1]) >= prompt(&turns[0]).len() && reused(&turns[1]) < p2.len());
    let ids: Vec<String> = p2.iter().map(u32::to_string).collect();
    let (whole, _) = run_json(&["run", d, "--tokens", &ids.join(","), "-n", "6", "--json"]);
    assert_eq!(turns[1]["tokens"], whole["tokens"]);
    // After /reset, the first message again.
    assert_eq!(prompt(&turns[2]), prompt(&turns[0]));
    assert_eq!(reused(&turns[2]), 0);
    assert_eq!(turns[2]["tokens"], turns[0]["tokens"]);

    // The end of input ends the conversation too.
    let (turns, _) = chat(&dir, "Return a new list\n");
    assert_eq!(turns.len(), 1);
}
