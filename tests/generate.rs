//! Generation end to end: `bitnetc run` and the JIT API against transformers' greedy tokens and
//! text on every hf-tiny form, gguf-tiny against its reference, artifacts, stop conditions, context
//! limits, seeded sampling, chat formatting and the audit records of `run`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnetc::{GenerateParams, Options, SamplingParams, StopReason};
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{Scratch, bitnetc, reference, root};

const FORMS: [&str; 3] = ["online", "packed", "packed_bitlinear"];

fn hf(form: &str) -> PathBuf {
    root().join("tests/fixtures/hf-tiny").join(form)
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn run_json(args: &[&str]) -> Value {
    let out = bitnetc(args);
    assert!(
        out.status.success(),
        "bitnetc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

fn options() -> Options {
    let mut o = Options::default();
    o.cpu.threads = 2;
    o
}

#[test]
fn run_greedy_tokens_match_transformers_on_every_form() {
    for form in FORMS {
        let dir = hf(form);
        let r = reference(&dir);
        let prompt = csv(&u32s(&r["prompt_ids"]));
        let d = dir.to_str().unwrap();
        let out = run_json(&[
            "run", d, "--tokens", &prompt, "--greedy", "--json", "-n", "16",
        ]);
        assert_eq!(
            u32s(&out["tokens"]),
            u32s(&r["greedy_new_tokens"]),
            "{form}"
        );
        assert_eq!(out["stop"], "max_tokens", "{form}");
    }
}

#[test]
fn run_text_prompt_gives_the_reference_continuation() {
    for form in FORMS {
        let dir = hf(form);
        let r = reference(&dir);
        let d = dir.to_str().unwrap();
        let text = r["text_prompt"].as_str().unwrap();
        let out = run_json(&["run", d, "--prompt", text, "-n", "16", "--json"]);
        assert_eq!(
            u32s(&out["prompt_tokens"]),
            u32s(&r["text_prompt_ids"]),
            "{form}"
        );
        assert_eq!(
            u32s(&out["tokens"]),
            u32s(&r["text_greedy_new_tokens"]),
            "{form}"
        );
        assert_eq!(out["text"], r["text_greedy_decoded"], "{form}");
        // Streamed text (stdout without --json) is the same text.
        let plain = bitnetc(&["run", d, "--prompt", text, "-n", "16"]);
        assert!(plain.status.success());
        let streamed = String::from_utf8(plain.stdout).unwrap();
        assert_eq!(
            streamed.strip_suffix('\n').unwrap(),
            r["text_greedy_decoded"].as_str().unwrap()
        );
        let summary = String::from_utf8_lossy(&plain.stderr);
        assert!(summary.contains("16 new tokens"), "{summary}");
    }
}

#[test]
fn api_long_prompt_and_gguf_files_match_their_references() {
    let dir = hf("packed");
    let r = reference(&dir);
    let mut s = bitnetc::compile(&dir, &options())
        .unwrap()
        .session()
        .unwrap();
    let params = GenerateParams {
        max_tokens: 16,
        ..GenerateParams::default()
    };
    let out = s
        .generate(&u32s(&r["long_prompt_ids"]), &params, &mut |_, _| {})
        .unwrap();
    assert_eq!(out.tokens, u32s(&r["long_greedy_new_tokens"]));
    assert_eq!(out.decode.len(), 15);

    let g = root().join("tests/fixtures/gguf-tiny");
    let gr = reference(&g);
    for (file, want) in gr["files"].as_object().unwrap() {
        let mut s = bitnetc::compile(&g.join(file), &options())
            .unwrap()
            .session()
            .unwrap();
        let out = s
            .generate(&u32s(&gr["prompt_ids"]), &params, &mut |_, _| {})
            .unwrap();
        assert_eq!(out.tokens, u32s(&want["greedy_new_tokens"]), "{file}");
        s.reset();
        // The GGUF vocabulary tokenizes the text prompt as transformers does.
        let prompt = s.encode(gr["text_prompt"].as_str().unwrap()).unwrap();
        assert_eq!(prompt, u32s(&gr["text_prompt_ids"]), "{file}");
        let out = s.generate(&prompt, &params, &mut |_, _| {}).unwrap();
        assert_eq!(out.tokens, u32s(&want["text_greedy_new_tokens"]), "{file}");
    }
}

#[test]
fn a_session_continues_where_it_left_off() {
    // Generating 8 tokens, then 8 more with an empty prompt, equals generating 16 at once.
    let dir = hf("packed");
    let r = reference(&dir);
    let mut s = bitnetc::compile(&dir, &options())
        .unwrap()
        .session()
        .unwrap();
    let prompt = u32s(&r["prompt_ids"]);
    let eight = GenerateParams {
        max_tokens: 8,
        ..GenerateParams::default()
    };
    let a = s.generate(&prompt, &eight, &mut |_, _| {}).unwrap();
    let b = s.generate(&[], &eight, &mut |_, _| {}).unwrap();
    let both: Vec<u32> = a.tokens.iter().chain(&b.tokens).copied().collect();
    assert_eq!(both, u32s(&r["greedy_new_tokens"]));
    assert_eq!(s.tokens().len(), prompt.len() + 16);
    // forward returns the logits of the new tokens only.
    s.reset();
    let vocab = s.vocab() as usize;
    assert_eq!(s.forward(&prompt[..5]).unwrap().len(), 5 * vocab);
    assert_eq!(
        s.forward(&prompt[5..]).unwrap().len(),
        (prompt.len() - 5) * vocab
    );
}

#[test]
fn stop_tokens_strings_and_context_limits() {
    let dir = hf("packed");
    let r = reference(&dir);
    let greedy = u32s(&r["text_greedy_new_tokens"]);
    let text = r["text_prompt"].as_str().unwrap();
    let mut o = options();
    o.context = Some(40);
    let mut s = bitnetc::compile(&dir, &o).unwrap().session().unwrap();
    let prompt = s.encode(text).unwrap();
    // A stop token ends generation and is kept, as transformers keeps it.
    let params = GenerateParams {
        max_tokens: 16,
        stop_tokens: vec![greedy[3]],
        ..GenerateParams::default()
    };
    let out = s.generate(&prompt, &params, &mut |_, _| {}).unwrap();
    assert_eq!(out.tokens, greedy[..4]);
    assert_eq!(out.stop, StopReason::StopToken(greedy[3]));
    // A stop string is cut from the text, and never streamed.
    s.reset();
    let params = GenerateParams {
        max_tokens: 16,
        stop_strings: vec!["ormal".into()],
        ..GenerateParams::default()
    };
    let mut streamed = String::new();
    let out = s
        .generate(&prompt, &params, &mut |_, t| streamed.push_str(t))
        .unwrap();
    assert_eq!(out.stop, StopReason::StopString("ormal".into()));
    let full = r["text_greedy_decoded"].as_str().unwrap();
    assert_eq!(out.text, full[..full.find("ormal").unwrap()]);
    assert_eq!(streamed, out.text);
    // A raised cancel flag stops generation before the next step; what was made stays.
    s.reset();
    let cancel = bitnetc::Cancel::new();
    let params = GenerateParams {
        max_tokens: 16,
        cancel: Some(cancel.clone()),
        ..GenerateParams::default()
    };
    let mut seen = 0;
    let out = s
        .generate(&prompt, &params, &mut |id, _| {
            seen += usize::from(id.is_some());
            if seen == 3 {
                cancel.cancel();
            }
        })
        .unwrap();
    assert_eq!(out.stop, StopReason::Cancelled);
    assert_eq!(out.tokens, greedy[..3]);
    assert_eq!(s.tokens().len(), prompt.len() + 3);
    // The context (40) fills after 16 + 24 tokens: the 25th token comes from the last position.
    s.reset();
    let params = GenerateParams {
        max_tokens: 32,
        ignore_eos: true,
        ..GenerateParams::default()
    };
    let out = s.generate(&prompt, &params, &mut |_, _| {}).unwrap();
    assert_eq!(out.stop, StopReason::ContextFull);
    assert_eq!(out.tokens.len(), 40 - prompt.len() + 1);
    assert_eq!(out.tokens[..16], greedy[..]);
    // A prompt longer than the context is an error, and the session is still usable.
    s.reset();
    let long = vec![5u32; 41];
    let e = s.generate(&long, &params, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("context"), "{e}");
    assert!(s.tokens().is_empty());
    let out = s.generate(&prompt, &params, &mut |_, _| {}).unwrap();
    assert_eq!(out.tokens[..16], greedy[..]);
    // Through the CLI the error names the model and the limit.
    let d = dir.to_str().unwrap();
    let out = bitnetc(&["run", d, "--tokens", &csv(&long), "--context", "40"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("packed") && err.contains("context length 40"),
        "{err}"
    );
}

#[test]
fn sampling_is_seeded() {
    let dir = hf("packed");
    let prompt = u32s(&reference(&dir)["prompt_ids"]);
    let mut s = bitnetc::compile(&dir, &options())
        .unwrap()
        .session()
        .unwrap();
    let mut draw = |seed| {
        s.reset();
        let params = GenerateParams {
            max_tokens: 24,
            sampling: SamplingParams {
                temperature: 1.5,
                top_k: 50,
                top_p: 0.95,
                repetition_penalty: 1.1,
                seed,
            },
            ignore_eos: true,
            ..GenerateParams::default()
        };
        s.generate(&prompt, &params, &mut |_, _| {}).unwrap().tokens
    };
    let (a, b, c) = (draw(1), draw(1), draw(2));
    assert_eq!(a, b);
    assert_ne!(a, c, "two seeds gave the same 24 tokens");
    // The CLI rejects parameters out of range before compiling.
    let d = dir.to_str().unwrap();
    let out = bitnetc(&[
        "run",
        d,
        "--tokens",
        "1,2",
        "--temperature",
        "1",
        "--top-p",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("top-p"));
}

/// Compiles `model` into `bnx` and runs `prompt` on the artifact (16 greedy tokens, JSON).
fn compile_and_run_text(model: &Path, bnx: &Path, prompt: &str) -> Value {
    let out = bitnetc(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        bnx.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bnx = bnx.to_str().unwrap();
    run_json(&["run", bnx, "--prompt", prompt, "-n", "16", "--json"])
}

#[test]
fn artifacts_carry_their_tokenizer() {
    let dir = hf("packed_bitlinear");
    let r = reference(&dir);
    let tmp = Scratch::create("generate-artifact");
    let bnx = tmp.join("m.bnx");
    let out = compile_and_run_text(&dir, &bnx, r["text_prompt"].as_str().unwrap());
    assert_eq!(u32s(&out["tokens"]), u32s(&r["text_greedy_new_tokens"]));
    assert_eq!(out["text"], r["text_greedy_decoded"]);
    // The special ids come along (tokenizer.json alone does not say which is eos).
    let m = bitnetc::compile(&bnx, &options()).unwrap();
    assert_eq!(m.origin, bitnetc::Origin::Artifact);
    let t = m.tokenizer().unwrap().unwrap();
    assert_eq!((t.bos(), t.eos()), (Some(1), &[2u32][..]));

    // A GGUF file's vocabulary becomes the artifact's tokenizer.json.
    let g = root().join("tests/fixtures/gguf-tiny");
    let gr = reference(&g);
    let file = g.join("tiny-i2_s.gguf");
    let text = gr["text_prompt"].as_str().unwrap();
    let out = compile_and_run_text(&file, &tmp.join("g.bnx"), text);
    assert_eq!(u32s(&out["prompt_tokens"]), u32s(&gr["text_prompt_ids"]));
    assert_eq!(
        u32s(&out["tokens"]),
        u32s(&gr["files"]["tiny-i2_s.gguf"]["text_greedy_new_tokens"])
    );
}

#[test]
fn chat_needs_a_chat_tokenizer() {
    let d = hf("packed");
    let out = bitnetc(&["run", d.to_str().unwrap(), "--prompt", "hi", "--chat"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("<|eot_id|>")
            && err.contains("tokenizer.json")
            && err.contains("built-in one (bitnet-b1.58-2B-4T)"),
        "{err}"
    );
}

#[test]
fn run_is_audited() {
    let tmp = Scratch::create("generate-audit");
    let log = tmp.join("audit.jsonl");
    let d = hf("packed");
    let args = |extra: &[&str]| {
        let mut v = vec![
            "--audit-log".to_string(),
            log.display().to_string(),
            "run".into(),
            d.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let ok = args(&["--tokens", "1,17,256", "-n", "4", "--json"]);
    let ok: Vec<&str> = ok.iter().map(String::as_str).collect();
    assert!(bitnetc(&ok).status.success());
    let bad = args(&["--tokens", "1,5000"]);
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    assert!(!bitnetc(&bad).status.success());
    let records: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each command writes a start record, then its result with the same op.
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["kind"], "start");
    assert_eq!(records[0]["fields"]["op"], records[1]["fields"]["op"]);
    let records = [records[1].clone(), records[3].clone()];
    let run = &records[0]["fields"];
    assert_eq!(records[0]["kind"], "run");
    assert_eq!(run["command"], "run");
    assert_eq!(run["prompt_tokens"], 3);
    assert_eq!(run["new_tokens"], 4);
    assert!(run["inputs"].to_string().contains("model.safetensors"));
    assert_eq!(run["prompt_sha256"].as_str().unwrap().len(), 64);
    assert!(run["prefill_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(records[1]["kind"], "error");
    assert!(
        records[1]["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("5000")
    );
    let verify = bitnetc(&["audit", "verify", log.to_str().unwrap()]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn the_default_audit_log_is_in_the_data_folder() {
    let tmp = Scratch::create("generate-audit-default");
    let d = hf("packed");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args(["run", d.to_str().unwrap(), "--tokens", "1,2,3", "-n", "2"])
        .env_remove("BITNETC_AUDIT_LOG")
        .env("XDG_DATA_HOME", tmp.join("data"))
        .env("HOME", tmp.join("home"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = tmp.join("data/bitnetc/audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 2, "a start record and the run's");
    assert!(text.contains("\"kind\":\"start\"") && text.contains("\"kind\":\"run\""));
}

#[test]
fn bench_reports_both_builds_and_their_ratios() {
    let tmp = Scratch::create("generate-bench");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args([
            "bench",
            "--preset",
            "tiny",
            "--threads",
            "2",
            "--prompt-len",
            "8",
            "--steps",
            "4",
            "--repeat",
            "1",
            "--json",
        ])
        .env("BITNETC_AUDIT_LOG", tmp.join("audit.jsonl"))
        .env("XDG_CACHE_HOME", tmp.join("cache"))
        .env("HOME", tmp.join("home"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The preset was written once into the cache folder.
    assert!(
        tmp.join("cache/bitnetc/presets/tiny-seed0/config.json")
            .is_file()
    );
    let builds = r["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 2);
    assert_eq!(builds[0]["build"], "bitnet");
    assert_eq!(builds[1]["build"], "full-precision");
    for b in builds {
        for key in [
            "prefill_tok_s",
            "decode_tok_s",
            "compile_s",
            "ceiling_tok_s",
        ] {
            assert!(b[key].as_f64().unwrap() > 0.0, "{key}: {b}");
        }
        let l = &b["latency_ms"];
        assert!(l["p50"].as_f64().unwrap() <= l["p99"].as_f64().unwrap());
        assert!(b["read_bytes_per_token"].as_u64().unwrap() <= b["weight_bytes"].as_u64().unwrap());
    }
    // Ternary weights are smaller than bf16 ones (the embedding is the same in both).
    let reduction = r["vs_full_precision"]["weight_memory_reduction"]
        .as_f64()
        .unwrap();
    assert!(reduction > 1.5, "{reduction}");
    // Both builds scored the fixed ids: 4 windows of the 13-token context, 6 scored positions
    // each; the ternary build stays close to full precision (int8 activations, exact head).
    let a = &r["vs_full_precision"]["accuracy"];
    assert_eq!(a["positions"], 24, "{a}");
    let (mean, max) = (
        a["mean_kl"].as_f64().unwrap(),
        a["max_kl"].as_f64().unwrap(),
    );
    assert!((0.0..0.05).contains(&mean) && mean <= max, "{a}");
    assert!(a["same_top1"].as_f64().unwrap() >= 0.5, "{a}");
    assert!(r["read_bandwidth_gb_s"].as_f64().unwrap() > 0.0);
    // The run was logged, with the results.
    let log = std::fs::read_to_string(tmp.join("audit.jsonl")).unwrap();
    assert!(log.contains("\"command\":\"bench\"") && log.contains("vs_full_precision"));
}

#[test]
fn head_dtype_flags_reach_the_compiler() {
    // The i8 and f16 heads keep the greedy tokens on the fixtures (see tests/cpu_backend.rs for the
    // logit error); the flag reaches both the JIT (`run`) and the artifact (`compile`).
    let dir = hf("packed");
    let r = reference(&dir);
    let prompt = csv(&u32s(&r["prompt_ids"]));
    let d = dir.to_str().unwrap();
    for head in ["f16", "i8"] {
        let out = run_json(&[
            "run",
            d,
            "--tokens",
            &prompt,
            "-n",
            "16",
            "--json",
            "--head-dtype",
            head,
        ]);
        assert_eq!(
            u32s(&out["tokens"]),
            u32s(&r["greedy_new_tokens"]),
            "{head}"
        );
    }
    let tmp = Scratch::create("generate-head");
    let bnx = tmp.join("i8.bnx");
    let b = bnx.to_str().unwrap();
    let out = bitnetc(&["compile", d, "-o", b, "--head-dtype", "i8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&bnx).unwrap();
    let manifest = String::from_utf8_lossy(&bytes[..bytes.len().min(200_000)]).into_owned();
    assert!(
        manifest.contains("MatmulI8"),
        "the artifact has no i8 head kernel"
    );
    let out = run_json(&["run", b, "--tokens", &prompt, "-n", "16", "--json"]);
    assert_eq!(u32s(&out["tokens"]), u32s(&r["greedy_new_tokens"]));
    let bad = bitnetc(&["run", d, "--tokens", "1", "--head-dtype", "q3"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected auto"));
}
