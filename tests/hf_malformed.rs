//! The Hugging Face importer on broken checkpoints (tests/malformed/hf, written by
//! scripts/make_malformed_hf.py): importing each one (running it, for a weight whose defect only shows
//! when it is unpacked) must fail with an error naming the file and the key or tensor at fault, never
//! panic; the two valid folders of the corpus must import, run and agree bitwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_frontend::import_model;
use bitnet_frontend::model::{ImportOptions, ImportedModel};
use bitnet_ir::Tensor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Where a case must fail.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    /// `import_model` returns the error.
    Import,
    /// `import_model` succeeds and `prompt_logits` returns the error.
    Run,
}

const INDEX: &str = "model.safetensors.index.json";
const SHARD1: &str = "model-00001-of-00002.safetensors";
const ST: &str = "model.safetensors";
const CFG: &str = "config.json";

/// (case folder, stage, file the error must name, further substrings the error must contain).
const CASES: &[(&str, Stage, &str, &[&str])] = &[
    ("malformed_json", Stage::Import, CFG, &["malformed JSON"]),
    ("config_not_object", Stage::Import, CFG, &["JSON object"]),
    (
        "missing_hidden_size",
        Stage::Import,
        CFG,
        &["missing key \"hidden_size\""],
    ),
    (
        "hidden_not_divisible_by_heads",
        Stage::Import,
        CFG,
        &["hidden_size (16)", "num_attention_heads (3)"],
    ),
    (
        "kv_heads_not_dividing_heads",
        Stage::Import,
        CFG,
        &["num_key_value_heads (3)", "num_attention_heads (2)"],
    ),
    (
        "unsupported_architecture",
        Stage::Import,
        CFG,
        &["architecture \"GPT2LMHeadModel\" is not supported"],
    ),
    (
        "unsupported_linear_class",
        Stage::Import,
        CFG,
        &["linear_class \"foo\"", "not supported"],
    ),
    (
        "negative_hidden_size",
        Stage::Import,
        CFG,
        &["\"hidden_size\" must be a positive integer, found -16"],
    ),
    (
        "zero_attention_heads",
        Stage::Import,
        CFG,
        &["\"num_attention_heads\" = 0 is out of range"],
    ),
    (
        "huge_hidden_size",
        Stage::Import,
        CFG,
        &[
            "\"hidden_size\" must be a positive integer",
            "1000000000000",
        ],
    ),
    (
        "huge_vocab_size",
        Stage::Import,
        CFG,
        &["\"vocab_size\" = 1099511627776 is out of range"],
    ),
    (
        "rope_scaling_yarn",
        Stage::Import,
        CFG,
        &["\"rope_scaling\"", "yarn", "not supported"],
    ),
    (
        "missing_tensor",
        Stage::Import,
        ST,
        &["missing tensor \"model.layers.0.mlp.down_proj.weight\""],
    ),
    (
        "extra_tensor",
        Stage::Import,
        ST,
        &["unexpected tensor", "model.layers.1.input_layernorm.weight"],
    ),
    (
        "packed_wrong_shape",
        Stage::Import,
        ST,
        &[
            "\"model.layers.0.self_attn.q_proj.weight\" is U8 [5, 16]",
            "U8 [4, 16]",
        ],
    ),
    (
        "packed_as_float",
        Stage::Import,
        ST,
        &["\"model.layers.0.self_attn.q_proj.weight\" is BF16 [16, 16]"],
    ),
    (
        "norm_u8",
        Stage::Import,
        ST,
        &[
            "\"model.norm.weight\" is U8 [16]",
            "expected a float tensor",
        ],
    ),
    (
        "norm_f8",
        Stage::Import,
        ST,
        &["\"model.norm.weight\" is F8_E4M3 [16]"],
    ),
    (
        // The safetensors crate's own error names the tensor after this one.
        "huge_tensor_shape",
        Stage::Import,
        ST,
        &[
            "not a valid safetensors file",
            "tensor \"model.layers.0.self_attn.attn_sub_norm.weight\"",
            "[1000000000000000, 16]",
        ],
    ),
    (
        "truncated_safetensors",
        Stage::Import,
        ST,
        &["not a valid safetensors file", "truncated"],
    ),
    (
        "header_length_past_eof",
        Stage::Import,
        ST,
        &["not a valid safetensors file", "header length"],
    ),
    (
        "header_not_json",
        Stage::Import,
        ST,
        &["not a valid safetensors file", "JSON"],
    ),
    ("missing_safetensors", Stage::Import, ST, &[]),
    (
        "index_dotdot",
        Stage::Import,
        INDEX,
        &[
            "weight_map[\"model.norm.weight\"]",
            "../outside.safetensors",
            "leaves the model folder",
        ],
    ),
    (
        "index_absolute",
        Stage::Import,
        INDEX,
        &[
            "weight_map[\"model.norm.weight\"]",
            "/outside.safetensors",
            "leaves the model folder",
        ],
    ),
    (
        "index_tensor_not_in_shard",
        Stage::Import,
        SHARD1,
        &["\"model.norm.weight\" is listed in the index but not in this shard"],
    ),
    (
        "index_missing_tensor_name",
        Stage::Import,
        SHARD1,
        &["\"model.norm.weight\" is not listed in the index"],
    ),
    (
        "packed_code_3",
        Stage::Run,
        ST,
        &["\"model.layers.0.self_attn.q_proj.weight\"", "code 3"],
    ),
];

/// The folders of the corpus that must import and run.
const VALID: &[&str] = &["valid", "valid_sharded"];

const TOKENS: &[i64] = &[1, 5, 7];

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/malformed/hf")
}

fn import(dir: &Path) -> Result<ImportedModel, String> {
    let opts = ImportOptions {
        context: Some(TOKENS.len() as u64),
        ..Default::default()
    };
    import_model(dir, &opts).map_err(|e| e.to_string())
}

fn run(model: &ImportedModel) -> Result<Tensor, String> {
    bitnetc::prompt_logits(&model.module, model.weights.as_ref(), TOKENS).map_err(|e| e.to_string())
}

/// Checks one broken case; the problem, if any.
fn check(case: &str, stage: Stage, file: &str, needles: &[&str]) -> Option<String> {
    let dir = corpus().join(case);
    let outcome = catch_unwind(AssertUnwindSafe(|| match (import(&dir), stage) {
        (Err(e), Stage::Import) => Ok(e),
        (Err(e), Stage::Run) => Err(format!("import failed, but should only fail when run: {e}")),
        (Ok(_), Stage::Import) => Err("imported without error".to_string()),
        (Ok(m), Stage::Run) => match run(&m) {
            Err(e) => Ok(e),
            Ok(_) => Err("ran without error".to_string()),
        },
    }));
    let message = match outcome {
        Err(_) => return Some(format!("{case}: panicked")),
        Ok(Err(problem)) => return Some(format!("{case}: {problem}")),
        Ok(Ok(message)) => message,
    };
    let path = dir.join(file).display().to_string();
    let missing: Vec<&str> = std::iter::once(path.as_str())
        .chain(needles.iter().copied())
        .filter(|n| !message.contains(n))
        .collect();
    (!missing.is_empty()).then(|| format!("{case}: {message:?} lacks {missing:?}"))
}

#[test]
fn every_broken_checkpoint_fails_naming_the_file_and_the_key_or_tensor() {
    let problems: Vec<String> = CASES
        .iter()
        .filter_map(|&(case, stage, file, needles)| check(case, stage, file, needles))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_corpus_is_complete_and_documented() {
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES
        .iter()
        .map(|c| c.0)
        .chain(VALID.iter().copied())
        .map(str::to_string)
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed, "tests/malformed/hf and CASES disagree");
    assert!(CASES.len() >= 16, "only {} broken cases", CASES.len());
    let readme = std::fs::read_to_string(corpus().join("README.md")).unwrap();
    for case in &listed {
        assert!(
            readme.contains(&format!("| `{case}/` |")),
            "README.md does not describe {case}"
        );
    }
}

#[test]
fn the_valid_checkpoints_import_and_run_alike() {
    let mut logits = Vec::new();
    for case in VALID {
        let model = import(&corpus().join(case)).unwrap_or_else(|e| panic!("{case}: {e}"));
        let s = &model.summary;
        assert_eq!(s.architecture, "BitNetForCausalLM");
        assert_eq!(s.tensors.len(), 20, "{case}");
        // 32×16 embedding + 96 norm weights + 7 scales + 576 packed bytes of 4 weights each.
        assert_eq!(s.parameters, 512 + 96 + 7 + 576 * 4, "{case}");
        let t = run(&model).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(t.shape, vec![1, TOKENS.len(), 32], "{case}");
        let v = t.data.to_f32();
        assert!(v.iter().all(|x| x.is_finite()), "{case}: {v:?}");
        assert!(v.iter().any(|&x| x != 0.0), "{case}: all zero");
        logits.push(v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>());
    }
    assert_eq!(logits[0], logits[1], "sharding changed the logits");
}
