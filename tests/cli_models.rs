//! End-to-end tests of the `bitnetc` model commands (`inspect`, `import`, `logits`) on the hf-tiny and
//! gguf-tiny fixtures and on broken inputs: exit codes, what is printed, files written and never
//! overwritten, and logits equal to the library's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{bitnetc, root};

use bitnet_frontend::import_model;
use bitnet_frontend::model::ImportOptions;
use bitnet_frontend::npy;
use bitnet_ir::Tensor;
use serde_json::Value;
use std::process::Output;

fn path(rel: &str) -> String {
    root().join(rel).display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh scratch directory unique to one test.
fn scratch(name: &str) -> support::Scratch {
    support::Scratch::create(&format!("cli-models-{name}"))
}

/// Asserts exit code 1 with every needle on stderr.
fn fails_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

const HF: &str = "tests/fixtures/hf-tiny/packed";
const GGUF: &str = "tests/fixtures/gguf-tiny/tiny-i2_s.gguf";
const TOKENS: &[i64] = &[1, 17, 256];

/// The library's logits for `TOKENS`.
fn library_logits(model: &str) -> Tensor {
    let opts = ImportOptions {
        context: Some(TOKENS.len() as u64),
        ..Default::default()
    };
    let m = import_model(&root().join(model), &opts).unwrap_or_else(|e| panic!("{e}"));
    bitnetc::prompt_logits(&m.module, m.weights.as_ref(), TOKENS).unwrap_or_else(|e| panic!("{e}"))
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data.to_f32().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn inspect_describes_an_hf_checkpoint_as_text() {
    let o = bitnetc(&["inspect", &path(HF)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for line in [
        "format: hf\n",
        "architecture: BitNetForCausalLM\n",
        "parameters: 2620700\n",
        "layers: 4\n",
        "quantization: packed ternary, weight_scale = gamma (autobitlinear)\n",
        "  BF16: 522808\n",
        "  U8: 589824\n",
        "tensors (74):\n",
        "  model.layers.0.self_attn.q_proj.weight U8 [64, 256] (16384 bytes)\n",
    ] {
        assert!(out.contains(line), "no {line:?} in\n{out}");
    }
}

#[test]
fn inspect_json_describes_an_hf_checkpoint() {
    let o = bitnetc(&["inspect", "--json", &path(HF)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["format"], "hf");
    assert_eq!(j["architecture"], "BitNetForCausalLM");
    // Ternary weights per layer: q, o 256×256; k, v 128×256; gate, up, down 512×256: 589824, ×4
    // layers; plus the 1000×256 embedding, 4×1280 + 256 norm weights and 28 scales.
    assert_eq!(j["parameters"], 4 * 589_824 + 256_000 + 5_376 + 28);
    assert_eq!(j["config"]["hidden"], "256");
    assert_eq!(j["config"]["kv_heads"], "4");
    let by_dtype = j["bytes_by_dtype"].as_object().unwrap();
    assert_eq!(by_dtype.len(), 2, "{by_dtype:?}");
    // BF16: two bytes for each float parameter; U8: one byte per four ternary weights.
    assert_eq!(by_dtype["BF16"], 2 * (256_000 + 5_376 + 28));
    assert_eq!(by_dtype["U8"], 589_824);
    let tensors = j["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 74);
    let total: u64 = tensors.iter().map(|t| t["bytes"].as_u64().unwrap()).sum();
    let by_dtype_total: u64 = by_dtype.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, by_dtype_total);
    let embed = tensors
        .iter()
        .find(|t| t["name"] == "model.embed_tokens.weight")
        .unwrap();
    assert_eq!(embed["dtype"], "BF16");
    assert_eq!(embed["shape"], serde_json::json!([1000, 256]));
}

#[test]
fn inspect_describes_a_gguf_file() {
    let o = bitnetc(&["inspect", &path(GGUF)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for line in [
        "format: gguf\n",
        "architecture: bitnet-b1.58\n",
        "layers: 4\n",
        "  I2_S: ",
        "tensors (46):\n",
    ] {
        assert!(out.contains(line), "no {line:?} in\n{out}");
    }
    let o = bitnetc(&["inspect", "--json", &path(GGUF)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["architecture"], "bitnet-b1.58");
    assert!(j["bytes_by_dtype"]["I2_S"].as_u64().unwrap() > 0);
}

#[test]
fn import_prints_ir_that_check_accepts_and_never_overwrites() {
    let dir = scratch("import");
    let ir = dir.join("packed.bir");
    let ir_s = ir.display().to_string();
    let o = bitnetc(&["import", &path(HF), "-o", &ir_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("wrote {ir_s}")),
        "{}",
        stdout(&o)
    );
    let written = std::fs::read_to_string(&ir).unwrap();
    assert!(written.starts_with("func @forward"), "{written:.200}");

    let o = bitnetc(&["check", &ir_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(": ok (1 function(s), "),
        "{}",
        stdout(&o)
    );

    // Without -o the same text goes to stdout.
    let o = bitnetc(&["import", &path(HF)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), written);

    // An existing file is refused and left as it was: the import's own output, and a user's file.
    let o = bitnetc(&["import", &path(HF), "-o", &ir_s]);
    fails_with(&o, &[&ir_s, "does not overwrite"]);
    assert_eq!(std::fs::read_to_string(&ir).unwrap(), written);
    let mine = dir.join("mine.txt");
    std::fs::write(&mine, "precious\n").unwrap();
    let o = bitnetc(&["import", &path(GGUF), "-o", mine.to_str().unwrap()]);
    fails_with(&o, &[mine.to_str().unwrap(), "does not overwrite"]);
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "precious\n");
}

#[test]
fn logits_writes_the_librarys_logits_as_npy() {
    let dir = scratch("logits");
    for (model, name) in [(HF, "hf.npy"), (GGUF, "gguf.npy")] {
        let out = dir.join(name);
        let out_s = out.display().to_string();
        let o = bitnetc(&["logits", &path(model), "--tokens", "1,17,256", "-o", &out_s]);
        assert!(o.status.success(), "{model}: {}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("wrote {out_s}")),
            "{}",
            stdout(&o)
        );
        let ours = npy::read(&out).unwrap();
        let lib = library_logits(model);
        assert_eq!(ours.shape, vec![1, 3, 1000], "{model}");
        assert_eq!(lib.shape, ours.shape, "{model}");
        assert!(
            bits(&ours) == bits(&lib),
            "{model}: the CLI's logits differ"
        );

        // A second run does not overwrite the file.
        std::fs::write(&out, b"keep").unwrap();
        let o = bitnetc(&["logits", &path(model), "--tokens", "1,17,256", "-o", &out_s]);
        fails_with(&o, &[&out_s, "does not overwrite"]);
        assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    }
}

#[test]
fn logits_without_output_prints_each_positions_argmax() {
    let lib = library_logits(GGUF).data.to_f32();
    let o = bitnetc(&["logits", &path(GGUF), "--tokens", "1,17,256"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for (pos, row) in lib.chunks(1000).enumerate() {
        let arg = row
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |a, (i, &x)| if x > a.1 { (i, x) } else { a },
            )
            .0;
        let want = format!("position {pos}: argmax {arg} (logit ");
        assert!(out.contains(&want), "no {want:?} in\n{out}");
    }
    assert!(!out.contains("position 3"), "{out}");
}

#[test]
fn logits_rejects_an_unknown_backend() {
    let o = bitnetc(&["logits", &path(HF), "--tokens", "1,2", "--backend", "gpu"]);
    fails_with(&o, &["--backend gpu", "interp", "cpu"]);
}

#[test]
fn logits_on_the_cpu_backend_match_the_interpreter() {
    let dir = scratch("logits-cpu");
    let (a, b) = (dir.join("interp.npy"), dir.join("cpu.npy"));
    let tokens = "1,17,256,999,3";
    let o = bitnetc(&[
        "logits",
        &path(HF),
        "--tokens",
        tokens,
        "-o",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bitnetc(&[
        "logits",
        &path(HF),
        "--tokens",
        tokens,
        "--backend",
        "cpu",
        "-o",
        b.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (x, y) = (npy::read(&a).unwrap(), npy::read(&b).unwrap());
    let err = bitnet_ir::tensor::max_relative_error(&y, &x).unwrap();
    assert!(err < 1e-5, "cpu vs interpreter: {err}");
}

#[test]
fn a_malformed_model_fails_naming_the_file() {
    let bad = |case: &str| path(&format!("tests/malformed/hf/{case}"));
    let o = bitnetc(&["logits", &bad("norm_u8"), "--tokens", "1,2"]);
    fails_with(
        &o,
        &[
            &format!("{}/model.safetensors", bad("norm_u8")),
            "\"model.norm.weight\" is U8 [16]",
        ],
    );
    let o = bitnetc(&["inspect", &bad("missing_hidden_size")]);
    fails_with(
        &o,
        &[
            &format!("{}/config.json", bad("missing_hidden_size")),
            "\"hidden_size\"",
        ],
    );
    let o = bitnetc(&["import", &bad("index_dotdot")]);
    fails_with(
        &o,
        &[
            &format!("{}/model.safetensors.index.json", bad("index_dotdot")),
            "leaves the model folder",
        ],
    );
    // Imports, fails when the weight is unpacked.
    let o = bitnetc(&["logits", &bad("packed_code_3"), "--tokens", "1,2"]);
    fails_with(
        &o,
        &[
            &format!("{}/model.safetensors", bad("packed_code_3")),
            "model.layers.0.self_attn.q_proj.weight",
            "code 3",
        ],
    );
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
}

#[test]
fn an_unknown_file_type_or_a_missing_model_is_explained() {
    let dir = scratch("unknown");
    let f = dir.join("weights.bin");
    std::fs::write(&f, b"\x89PNG\r\n\x1a\n not a model").unwrap();
    let f = f.display().to_string();
    for cmd in ["inspect", "import"] {
        let o = bitnetc(&[cmd, &f]);
        fails_with(
            &o,
            &[&f, "unknown model format", "Hugging Face folder", ".gguf"],
        );
    }
    let empty = dir.join("empty-folder");
    std::fs::create_dir_all(&empty).unwrap();
    let o = bitnetc(&["inspect", empty.to_str().unwrap()]);
    fails_with(&o, &[empty.to_str().unwrap(), "config.json"]);
    let missing = dir.join("no-such-model");
    let o = bitnetc(&["logits", missing.to_str().unwrap(), "--tokens", "1"]);
    fails_with(&o, &[missing.to_str().unwrap()]);
}

/// Issue 17's misleading messages and unchecked flags, each as the user meets it.
#[test]
fn flags_and_messages_say_what_is_wrong() {
    let model = path("tests/fixtures/hf-tiny/packed");
    let dir = scratch("messages");
    // --context 0 is about the context, not about a prompt.
    let out = dir.join("c0.bnx");
    let o = bitnetc(&[
        "compile",
        &model,
        "-o",
        out.to_str().unwrap(),
        "--context",
        "0",
    ]);
    fails_with(&o, &["context", "at least 1 token"]);
    assert!(!stderr(&o).contains("prompt"), "{}", stderr(&o));
    // A .bnx whose magic is damaged is named as a damaged artifact.
    let bnx = dir.join("damaged.bnx");
    std::fs::write(&bnx, b"XNB1 and the rest of an artifact").unwrap();
    let o = bitnetc(&["run", bnx.to_str().unwrap(), "--tokens", "1"]);
    fails_with(&o, &["damaged.bnx", "BNX1", "not a bitnetc artifact"]);
    // -n 0 generates nothing, so no first-token time is reported.
    let o = bitnetc(&["run", &model, "--tokens", "1,17", "-n", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("0 new tokens") && !stderr(&o).contains("first token"),
        "{}",
        stderr(&o)
    );
    // Stop conditions that cannot work are refused.
    let o = bitnetc(&["run", &model, "--tokens", "1", "--stop", ""]);
    fails_with(&o, &["empty stop string"]);
    let o = bitnetc(&["run", &model, "--tokens", "1", "--stop-token", "99999"]);
    fails_with(&o, &["stop token 99999", "outside the vocabulary"]);
    // A negative number is a value (and then refused by its own check), not a flag.
    let o = bitnetc(&["run", &model, "--tokens", "1", "--temperature", "-1"]);
    fails_with(&o, &["temperature -1"]);
    // More threads than cores: capped, with a warning.
    let o = bitnetc(&[
        "run",
        &model,
        "--tokens",
        "1",
        "-n",
        "1",
        "--threads",
        "100000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: --threads 100000 is more than the"),
        "{}",
        stderr(&o)
    );
    let o = bitnetc(&["run", &model, "--tokens", "1", "--threads", "0"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("at least 1"), "{}", stderr(&o));
}

/// An f16 embedding that no 16-bit head shares (an int8 head) is mapped from the GGUF file, or
/// copied with `BITNETC_MAP_WEIGHTS=off`: the same greedy tokens either way.
#[test]
fn a_mapped_embedding_generates_what_a_copied_one_does() {
    let model = path("tests/fixtures/gguf-tiny/tiny-tq2_0-f16emb.gguf");
    let generate = |map: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
            .args([
                "run",
                &model,
                "--tokens",
                "1,17,256,999,3",
                "-n",
                "12",
                "--head-dtype",
                "i8",
            ])
            .env("BITNETC_AUDIT_LOG", "off")
            .env("BITNETC_MAP_WEIGHTS", map)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let mapped = generate("on");
    assert_eq!(mapped.split_whitespace().count(), 12, "{mapped}");
    assert_eq!(mapped, generate("off"));
}
