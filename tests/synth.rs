//! `bitnetc synth`: synthetic checkpoints import through the HF importer and run, are deterministic in
//! the seed, never overwrite, and the presets have the sizes they claim (2b4t: formats.md §1.1, §2.2).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::decoder::{DecoderSpec, LayerWeights, Linear, emit};
use bitnet_frontend::import_model;
use bitnet_frontend::model::ImportOptions;
use bitnet_frontend::synth::{
    PRESETS, decoder_config, preset, summary, tensor_table, write_checkpoint,
};
use bitnet_ir::{ElemType, text};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// A fresh, absent scratch path unique to one test (its parent exists).
fn scratch(name: &str) -> support::Scratch {
    support::Scratch::reserve(&format!("synth-{name}"))
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn bitnetc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args(args)
        .output()
        .unwrap()
}

/// The spec the HF importer builds for a tied packed-autobitlinear checkpoint.
fn hf_spec(config: bitnet_frontend::decoder::DecoderConfig) -> DecoderSpec {
    let linear = |pre: &str, proj: &str| Linear::TernaryScaleMul {
        weight: format!("{pre}.{proj}.weight"),
        scale: format!("{pre}.{proj}.weight_scale"),
    };
    let layers = (0..config.layers)
        .map(|l| {
            let pre = format!("model.layers.{l}");
            LayerWeights {
                input_norm: format!("{pre}.input_layernorm.weight"),
                q: linear(&pre, "self_attn.q_proj"),
                k: linear(&pre, "self_attn.k_proj"),
                v: linear(&pre, "self_attn.v_proj"),
                o: linear(&pre, "self_attn.o_proj"),
                bias: Default::default(),
                attn_sub_norm: Some(format!("{pre}.self_attn.attn_sub_norm.weight")),
                post_norm: format!("{pre}.post_attention_layernorm.weight"),
                gate: linear(&pre, "mlp.gate_proj"),
                up: linear(&pre, "mlp.up_proj"),
                down: linear(&pre, "mlp.down_proj"),
                ffn_sub_norm: Some(format!("{pre}.mlp.ffn_sub_norm.weight")),
            }
        })
        .collect();
    DecoderSpec {
        config,
        embed: "model.embed_tokens.weight".into(),
        layers,
        final_norm: "model.norm.weight".into(),
        lm_head: "model.embed_tokens.weight".into(),
    }
}

#[test]
fn tiny_imports_and_runs() {
    let root = scratch("tiny");
    let dir = root.join("nested/model");
    let p = preset("tiny").unwrap();
    let s = write_checkpoint(&p, &dir, 7).unwrap();
    assert_eq!(s, summary(&p));
    assert_eq!(
        std::fs::metadata(dir.join("model.safetensors"))
            .unwrap()
            .len(),
        s.bytes
    );
    let tokens = [1, 17, 256, 999];
    let opts = ImportOptions {
        context: Some(tokens.len() as u64),
        ..Default::default()
    };
    let m = import_model(&dir, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.summary.parameters, s.parameters);
    assert_eq!(m.summary.tensors.len(), s.tensors);
    assert_eq!(
        m.summary.config["quantization"],
        "packed ternary, weight_scale = gamma (autobitlinear)"
    );
    // decoder_config is what the importer derives: the same IR, op for op.
    let ours = emit(&hf_spec(decoder_config(&p, tokens.len() as u64))).unwrap();
    assert_eq!(text::print_module(&ours), text::print_module(&m.module));
    // The packed codes are valid (unpacking rejects code 3) and about 31% zeros.
    let w = m
        .weights
        .load(
            "model.layers.1.mlp.up_proj.weight",
            ElemType::Ternary,
            &[512, 256],
        )
        .unwrap();
    let v = w.data.to_f32();
    let zeros = v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64;
    let plus = v.iter().filter(|&&x| x == 1.0).count() as f64 / v.len() as f64;
    assert!((zeros - 0.31).abs() < 0.02, "P(0) = {zeros}");
    assert!((plus - (1.0 - zeros) / 2.0).abs() < 0.02, "P(+1) = {plus}");
    let logits = bitnetc::prompt_logits(&m.module, m.weights.as_ref(), &tokens)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(logits.shape, vec![1, 4, 1000]);
    let l = logits.data.to_f32();
    assert!(l.iter().all(|x| x.is_finite()));
    let (lo, hi) = l
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    assert!(hi - lo > 0.1, "logits span only {lo}..{hi}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn same_seed_same_bytes_other_seed_other_weights() {
    let p = preset("tiny").unwrap();
    let (a, b, c) = (scratch("seed-a"), scratch("seed-b"), scratch("seed-c"));
    write_checkpoint(&p, &a, 3).unwrap();
    write_checkpoint(&p, &b, 3).unwrap();
    write_checkpoint(&p, &c, 4).unwrap();
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    let names: Vec<&str> = fa.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["config.json", "generation_config.json", "model.safetensors"]
    );
    assert_eq!(fa, fb);
    assert_eq!(
        fa[1], fc[1],
        "generation_config.json does not depend on the seed"
    );
    assert_ne!(fa[2].1, fc[2].1);
    assert_eq!(fa[2].1.len(), fc[2].1.len());
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn refuses_a_non_empty_folder_and_accepts_an_empty_one() {
    let dir = scratch("refuse");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keep.txt"), b"mine").unwrap();
    let err = write_checkpoint(&preset("tiny").unwrap(), &dir, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(files(&dir), [("keep.txt".to_string(), b"mine".to_vec())]);
    // A file where the folder should be is refused too, and left alone.
    let file = dir.join("keep.txt");
    let err = write_checkpoint(&preset("tiny").unwrap(), &file, 0).unwrap_err();
    assert!(err.to_string().contains("keep.txt"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    std::fs::remove_file(&file).unwrap();
    write_checkpoint(&preset("tiny").unwrap(), &dir, 0).unwrap();
    assert_eq!(files(&dir).len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn small_imports() {
    let dir = scratch("small");
    let p = preset("small").unwrap();
    let s = write_checkpoint(&p, &dir, 1).unwrap();
    let m = import_model(
        &dir,
        &ImportOptions {
            context: Some(8),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.summary.parameters, s.parameters);
    assert_eq!(m.summary.config["hidden"], p.hidden.to_string());
    assert_eq!(m.summary.config["head_dim"], "64");
    assert_eq!(m.summary.config["max_positions"], "2048");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn presets_grow_and_follow_the_rules() {
    let mut last = 0;
    for name in PRESETS {
        let p = preset(name).unwrap();
        assert_eq!(p.name, *name);
        assert_eq!(p.hidden % p.heads, 0, "{name}");
        assert_eq!(p.heads % p.kv_heads, 0, "{name}");
        for d in [p.hidden, p.intermediate, p.kv_heads * p.head_dim()] {
            assert_eq!(d % 4, 0, "{name}");
        }
        if !matches!(*name, "micro" | "tiny" | "small") {
            assert_eq!(p.head_dim(), 128, "{name}");
        }
        let n = summary(&p).parameters;
        if *name != "2b4t" {
            assert!(n > last, "{name}: {n} parameters after {last}");
            last = n;
        }
    }
    assert_eq!(preset("huge"), None);
}

#[test]
fn the_2b4t_preset_is_microsofts_model() {
    let p = preset("2b4t").unwrap();
    // formats.md §1.1.
    let sizes = (
        p.vocab,
        p.hidden,
        p.intermediate,
        p.layers,
        p.heads,
        p.kv_heads,
        p.head_dim(),
        p.max_positions,
        p.bos,
        p.eos,
    );
    assert_eq!(
        sizes,
        (128256, 2560, 6912, 30, 20, 5, 128, 4096, 128000, 128001)
    );
    // formats.md §2.2, layer 0 and the shared tensors.
    let table = tensor_table(&p);
    let find = |n: &str| {
        let t = table
            .iter()
            .find(|t| t.name == n)
            .unwrap_or_else(|| panic!("no {n}"));
        (t.dtype, t.shape.clone())
    };
    for (name, dtype, shape) in [
        ("model.embed_tokens.weight", "BF16", vec![128256, 2560]),
        ("model.layers.0.input_layernorm.weight", "BF16", vec![2560]),
        (
            "model.layers.0.self_attn.q_proj.weight",
            "U8",
            vec![640, 2560],
        ),
        (
            "model.layers.0.self_attn.q_proj.weight_scale",
            "BF16",
            vec![1],
        ),
        (
            "model.layers.0.self_attn.k_proj.weight",
            "U8",
            vec![160, 2560],
        ),
        (
            "model.layers.0.self_attn.v_proj.weight",
            "U8",
            vec![160, 2560],
        ),
        (
            "model.layers.0.self_attn.o_proj.weight",
            "U8",
            vec![640, 2560],
        ),
        (
            "model.layers.0.self_attn.attn_sub_norm.weight",
            "BF16",
            vec![2560],
        ),
        (
            "model.layers.0.post_attention_layernorm.weight",
            "BF16",
            vec![2560],
        ),
        (
            "model.layers.0.mlp.gate_proj.weight",
            "U8",
            vec![1728, 2560],
        ),
        ("model.layers.0.mlp.up_proj.weight", "U8", vec![1728, 2560]),
        ("model.layers.0.mlp.down_proj.weight", "U8", vec![640, 6912]),
        ("model.layers.0.mlp.down_proj.weight_scale", "BF16", vec![1]),
        ("model.layers.0.mlp.ffn_sub_norm.weight", "BF16", vec![6912]),
        (
            "model.layers.29.mlp.ffn_sub_norm.weight",
            "BF16",
            vec![6912],
        ),
        ("model.norm.weight", "BF16", vec![2560]),
    ] {
        assert_eq!(find(name), (dtype, shape), "{name}");
    }
    assert!(table.iter().all(|t| !t.name.starts_with("lm_head")), "tied");
    assert!(table.windows(2).all(|w| w[0].name < w[1].name), "sorted");
    // 4 norms, 7 packed weights and 7 scales per layer, the embedding and the final norm; the bf16 variant's
    // 2,412,820,480 parameters (formats.md §2.2) plus the 210 scales.
    let s = summary(&p);
    assert_eq!(s.tensors, 30 * 18 + 2);
    assert_eq!(s.parameters, 2_412_820_480 + 210);
    let data: u64 = table.iter().map(|t| t.bytes()).sum();
    assert_eq!(data, 1_178_562_980);
    assert!(s.bytes > data && s.bytes < data + 100_000);
    let c = decoder_config(&p, 4096);
    assert_eq!(
        (c.head_dim, c.context, c.rms_eps, c.rope_theta),
        (128, 4096, 1e-5, 500000.0)
    );
}

#[test]
fn cli_synth_then_inspect() {
    let dir = scratch("cli");
    let d = dir.display().to_string();
    let o = bitnetc(&["synth", "--preset", "tiny", "-o", &d, "--seed", "5"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let s = summary(&preset("tiny").unwrap());
    assert!(out.contains(&format!("wrote {d}")), "{out}");
    assert!(
        out.contains(&format!("{} parameters", s.parameters)),
        "{out}"
    );
    let o = bitnetc(&["inspect", &d, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["architecture"], "BitNetForCausalLM");
    assert_eq!(j["parameters"], s.parameters);
    assert_eq!(j["config"]["hidden"], "256");
    assert_eq!(j["config"]["tied_embeddings"], "true");
    assert_eq!(j["tensors"].as_array().unwrap().len(), s.tensors);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "bitnet");
    assert_eq!(cfg["quantization_config"]["linear_class"], "autobitlinear");
    // A second run into the same folder fails, naming it, and changes nothing.
    let before = files(&dir);
    let o = bitnetc(&["synth", "--preset", "tiny", "-o", &d]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&d));
    assert_eq!(files(&dir), before);
    // An unknown preset is a usage error listing the presets.
    let o = bitnetc(&["synth", "--preset", "huge", "-o", &d]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("2b4t"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A synth killed (SIGKILL) at any moment leaves nothing at its folder or the whole checkpoint,
/// never a part of one; the next synth to the folder works and removes the staging folder the
/// killed one left.
#[test]
fn a_killed_synth_never_leaves_a_partial_checkpoint() {
    let root = support::Scratch::create("synth-killed");
    let reference = root.join("reference");
    let start = std::time::Instant::now();
    let o = bitnetc(&[
        "synth",
        "--preset",
        "tiny",
        "-o",
        reference.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let whole = start.elapsed();
    let expected = files(&reference);
    let out = root.join("model");
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..10 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = whole.mul_f64((rng % 1000) as f64 / 1000.0 * 1.2);
        let mut child = Command::new(env!("CARGO_BIN_EXE_bitnetc"))
            .args(["synth", "--preset", "tiny", "-o", out.to_str().unwrap()])
            .env("BITNETC_AUDIT_LOG", "off")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        if out.exists() {
            assert_eq!(files(&out), expected, "a partial or different checkpoint");
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
    let o = bitnetc(&["synth", "--preset", "tiny", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files(&out), expected);
    let mut left: Vec<String> = std::fs::read_dir(&*root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["model", "reference"], "staging folders left behind");
}
