//! `bitnetc export`: every bundled BitNet form (hf-tiny online, packed, packed_bitlinear; gguf-tiny
//! F32, TQ1_0, TQ2_0, I2_S; a `synth --preset tiny` checkpoint; the ternary Llamas) written as an HF
//! folder and as GGUF TQ2_0 and I2_S, re-imported, and compared with the source: the ternary values
//! always identical, γ identical in f32 (HF, I2_S) or rounded to f16 (TQ2_0), the optimized
//! interpreter's logits bit for bit where γ is stored exactly, and the CPU JIT's greedy tokens. Bad
//! inputs give clear errors and leave nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::export::{Scale, Source, TernaryProjection};
use bitnetc::{GenerateParams, Options};
use std::path::{Path, PathBuf};
use support::{Scratch, bitnetc, root};

const PROMPT: &str = "1,17,100,5,99,3,250,42";

fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

fn ok(args: &[&str]) -> String {
    let out = bitnetc(args);
    assert!(
        out.status.success(),
        "bitnetc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = bitnetc(args);
    assert!(!out.status.success(), "bitnetc {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn export(model: &Path, out: &Path, target: &str) {
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    match target {
        "hf" => ok(&["export", m, "-o", o, "--format", "hf"]),
        "tq2_0" => ok(&["export", m, "-o", o, "--format", "gguf"]),
        "i2_s" => ok(&[
            "export",
            m,
            "-o",
            o,
            "--format",
            "gguf",
            "--gguf-type",
            "i2_s",
        ]),
        other => panic!("{other}"),
    };
}

/// The optimized interpreter's logits on `PROMPT`, as f32 bits.
fn logits(model: &Path, scratch: &Path, tag: &str) -> Vec<u32> {
    let npy = scratch.join(format!("{tag}.npy"));
    ok(&[
        "logits",
        model.to_str().unwrap(),
        "--tokens",
        PROMPT,
        "-O",
        "-o",
        npy.to_str().unwrap(),
    ]);
    let t = bitnet_frontend::npy::read(&npy).unwrap();
    t.data.to_f32().iter().map(|x| x.to_bits()).collect()
}

/// The CPU JIT's greedy tokens after `PROMPT`.
fn greedy(model: &Path) -> Vec<u32> {
    let mut o = Options::default();
    o.cpu.threads = 2;
    let mut s = bitnetc::compile(model, &o).unwrap().token_session();
    let prompt: Vec<u32> = PROMPT.split(',').map(|x| x.parse().unwrap()).collect();
    let params = GenerateParams {
        max_tokens: 12,
        ..GenerateParams::default()
    };
    s.generate(&prompt, &params, &mut |_, _| {}).unwrap().tokens
}

fn projections(model: &Path) -> Vec<TernaryProjection> {
    Source::open(model, None).unwrap().projections().unwrap()
}

/// γ as the target stores it: f32 for HF and I2_S, rounded to f16 for TQ2_0; `bitlinear` HF keeps
/// 1/γ as stored.
fn expected_scale(src: Scale, target: &str) -> Scale {
    match (target, src) {
        ("hf", s) => s,
        ("tq2_0", s) => Scale::Gamma(half::f16::from_f32(s.gamma()).to_f32()),
        (_, s) => Scale::Gamma(s.gamma()),
    }
}

fn bits(s: Scale) -> (bool, u32) {
    match s {
        Scale::Gamma(g) => (true, g.to_bits()),
        Scale::InvGamma(g) => (false, g.to_bits()),
    }
}

/// Exports `model` to every target and checks values, scales, logits and greedy tokens.
fn round_trip(model: &Path, scratch: &Path, tag: &str) {
    let src = projections(model);
    let src_logits = logits(model, scratch, &format!("{tag}-src"));
    let src_greedy = greedy(model);
    for target in ["hf", "tq2_0", "i2_s"] {
        let out = match target {
            "hf" => scratch.join(format!("{tag}-hf")),
            t => scratch.join(format!("{tag}-{t}.gguf")),
        };
        export(model, &out, target);
        let back = projections(&out);
        assert_eq!(back.len(), src.len(), "{tag} → {target}");
        let mut exact = true;
        for (i, (a, b)) in src.iter().zip(&back).enumerate() {
            assert_eq!(
                a.values, b.values,
                "{tag} → {target}: projection {i} values"
            );
            let want = expected_scale(a.scale, target);
            assert_eq!(
                bits(b.scale),
                bits(want),
                "{tag} → {target}: projection {i} scale"
            );
            exact &= bits(want) == bits(a.scale)
                || (matches!(a.scale, Scale::InvGamma(_)) && target == "i2_s");
        }
        let back_logits = logits(&out, scratch, &format!("{tag}-{target}"));
        if exact {
            assert!(
                back_logits == src_logits,
                "{tag} → {target}: γ is stored exactly, so the logits must be identical"
            );
        }
        assert_eq!(greedy(&out), src_greedy, "{tag} → {target}: greedy tokens");
    }
}

#[test]
fn hf_tiny_forms_round_trip() {
    let scratch = Scratch::create("export-hf-tiny");
    for form in ["online", "packed", "packed_bitlinear"] {
        round_trip(&fixture(&format!("hf-tiny/{form}")), &scratch, form);
    }
}

#[test]
fn synth_tiny_round_trips() {
    let scratch = Scratch::create("export-synth");
    let model = scratch.join("synth");
    ok(&[
        "synth",
        "--preset",
        "tiny",
        "--seed",
        "7",
        "-o",
        model.to_str().unwrap(),
    ]);
    round_trip(&model, &scratch, "synth");
    // A packed checkpoint written back as HF is the same file: dtypes kept, tensors in name order.
    for f in ["model.safetensors", "config.json", "generation_config.json"] {
        let (a, b) = (
            std::fs::read(model.join(f)).unwrap(),
            std::fs::read(scratch.join("synth-hf").join(f)).unwrap(),
        );
        assert!(a == b, "{f} differs from the synth checkpoint's");
    }
}

#[test]
fn gguf_tiny_files_round_trip() {
    let scratch = Scratch::create("export-gguf-tiny");
    for ty in ["f32", "tq1_0", "tq2_0", "i2_s"] {
        round_trip(&fixture(&format!("gguf-tiny/tiny-{ty}.gguf")), &scratch, ty);
    }
}

#[test]
fn ternary_llamas_round_trip_as_hf() {
    let scratch = Scratch::create("export-llama");
    for name in ["ternary", "ternary_llama3", "ternary_tied_bias"] {
        let model = fixture(&format!("hf-llama/{name}"));
        let out = scratch.join(name);
        export(&model, &out, "hf");
        let (a, b) = (projections(&model), projections(&out));
        assert_eq!(a, b, "{name}");
        assert_eq!(
            logits(&model, &scratch, &format!("{name}-src")),
            logits(&out, &scratch, &format!("{name}-hf")),
            "{name}"
        );
        // GGUF has no BitNet architecture without sub-norms.
        let gguf = scratch.join(format!("{name}.gguf"));
        let err = fails(&[
            "export",
            model.to_str().unwrap(),
            "-o",
            gguf.to_str().unwrap(),
            "--format",
            "gguf",
        ]);
        assert!(err.contains("--format hf"), "{err}");
        assert!(!gguf.exists());
    }
}

#[test]
fn online_ternarization_is_the_interpreters() {
    // The exported values of the online fixture are the absmean chain's, computed here from the
    // master weights independently of `bitnet_ir::absmean`.
    let model = fixture("hf-tiny/online");
    let src = Source::open(&model, None).unwrap();
    let exported = src.projections().unwrap();
    let l0 = &src.spec.layers[0];
    let bitnet_frontend::decoder::Linear::Online { master } = &l0.q else {
        panic!("the online fixture's q is not online");
    };
    let c = &src.spec.config;
    let (out, inp) = ((c.heads * c.head_dim) as usize, c.hidden as usize);
    let w = src.float(master, &[out, inp]).unwrap();
    let mean = w.iter().map(|&x| f64::from(x.abs())).sum::<f64>() / w.len() as f64;
    let s = 1.0 / (mean as f32).max(1e-5);
    let t: Vec<i8> = w
        .iter()
        .map(|&x| (x * s).round_ties_even().clamp(-1.0, 1.0) as i8)
        .collect();
    assert_eq!(exported[0].values, t);
    assert_eq!(exported[0].scale, Scale::Gamma(1.0 / s));
    assert!(t.contains(&-1) && t.contains(&0) && t.contains(&1));
}

#[test]
fn hf_export_keeps_the_tokenizer_and_gguf_export_carries_it_both_ways() {
    let scratch = Scratch::create("export-tokenizer");
    let model = fixture("hf-tiny/packed");
    let r = support::reference(&model);
    let text = r["text_prompt"].as_str().unwrap();
    let hf = scratch.join("hf");
    let gguf = scratch.join("m.gguf");
    export(&model, &hf, "hf");
    export(&model, &gguf, "i2_s");
    // Back from the GGUF to an HF folder: the vocabulary becomes a tokenizer.json again, with the
    // bos/eos tokens and add_bos_token in tokenizer_config.json.
    let back = scratch.join("back");
    export(&gguf, &back, "hf");
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(back.join("tokenizer_config.json")).unwrap())
            .unwrap();
    let src_tc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    for k in ["bos_token", "eos_token"] {
        assert_eq!(tc[k], src_tc[k], "{k}");
    }
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert_eq!(
            std::fs::read(model.join(f)).unwrap(),
            std::fs::read(hf.join(f)).unwrap(),
            "{f}"
        );
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["quantization_config"],
        serde_json::json!({"linear_class": "autobitlinear", "quant_method": "bitnet", "quantization_mode": "offline"})
    );
    for m in [&model, &hf, &gguf, &back] {
        let out = ok(&[
            "run",
            m.to_str().unwrap(),
            "--prompt",
            text,
            "-n",
            "4",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["prompt_tokens"], r["text_prompt_ids"], "{}", m.display());
    }
}

#[test]
fn gguf_export_is_deterministic_and_a_fixpoint() {
    let scratch = Scratch::create("export-fixpoint");
    let a = scratch.join("a");
    let b = scratch.join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let first = a.join("m.gguf");
    export(&fixture("hf-tiny/packed"), &first, "i2_s");
    let second = b.join("m.gguf");
    export(&first, &second, "i2_s");
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap()
    );
}

#[test]
fn with_masters_keeps_the_online_weights() {
    let scratch = Scratch::create("export-masters");
    let model = fixture("hf-tiny/online");
    let out = scratch.join("hf");
    ok(&[
        "export",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "hf",
        "--with-masters",
    ]);
    let src = bitnet_frontend::SafetensorsStore::open(&model.join("model.safetensors")).unwrap();
    let masters =
        bitnet_frontend::SafetensorsStore::open(&out.join(bitnet_frontend::export::MASTERS_FILE))
            .unwrap();
    assert_eq!(masters.tensors().len(), 4 * 7);
    for name in masters.tensors().keys() {
        assert_eq!(
            masters.read(name).unwrap(),
            src.read(name).unwrap(),
            "{name}"
        );
    }
    // A packed source has no masters; GGUF cannot hold them.
    let packed = fixture("hf-tiny/packed");
    let o2 = scratch.join("packed");
    let err = fails(&[
        "export",
        packed.to_str().unwrap(),
        "-o",
        o2.to_str().unwrap(),
        "--format",
        "hf",
        "--with-masters",
    ]);
    assert!(err.contains("no master weights"), "{err}");
    let err = fails(&[
        "export",
        model.to_str().unwrap(),
        "-o",
        scratch.join("m.gguf").to_str().unwrap(),
        "--format",
        "gguf",
        "--with-masters",
    ]);
    assert!(
        err.contains("--with-masters applies to --format hf"),
        "{err}"
    );
    assert!(!o2.exists() && !scratch.join("m.gguf").exists());
}

/// Nothing but `keep` is left in `dir` (no output, no staging folder, no temporary file).
fn only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, keep, "{}", dir.display());
}

#[test]
fn bad_inputs_give_clear_errors_and_leave_nothing() {
    let scratch = Scratch::create("export-bad");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let packed = s(&fixture("hf-tiny/packed"));
    // A missing model.
    let err = fails(&[
        "export",
        &s(&scratch.join("nope")),
        "-o",
        &s(&scratch.join("o")),
        "--format",
        "hf",
    ]);
    assert!(
        err.contains("nope") && err.contains("no such file"),
        "{err}"
    );
    // An unknown format.
    let err = fails(&[
        "export",
        &packed,
        "-o",
        &s(&scratch.join("o")),
        "--format",
        "onnx",
    ]);
    assert!(err.contains("--format") && err.contains("onnx"), "{err}");
    // A dense model.
    let dense = s(&fixture("hf-llama/qwen2_dense"));
    let err = fails(&[
        "export",
        &dense,
        "-o",
        &s(&scratch.join("o")),
        "--format",
        "gguf",
    ]);
    assert!(
        err.contains("dense model") && err.contains("--quantize ternary"),
        "{err}"
    );
    only(&scratch, &[]);
    // An existing output: a file, and a non-empty folder; both untouched; --force replaces.
    let file = scratch.join("m.gguf");
    std::fs::write(&file, b"keep").unwrap();
    let err = fails(&["export", &packed, "-o", &s(&file), "--format", "gguf"]);
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    let folder = scratch.join("hf");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("x"), b"keep").unwrap();
    let err = fails(&["export", &packed, "-o", &s(&folder), "--format", "hf"]);
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(folder.join("x")).unwrap(), b"keep");
    only(&scratch, &["hf", "m.gguf"]);
    ok(&[
        "export",
        &packed,
        "-o",
        &s(&file),
        "--format",
        "gguf",
        "--force",
    ]);
    ok(&[
        "export",
        &packed,
        "-o",
        &s(&folder),
        "--format",
        "hf",
        "--force",
    ]);
    assert!(!folder.join("x").exists() && folder.join("model.safetensors").is_file());
    assert_eq!(projections(&file), projections(&folder));
    only(&scratch, &["hf", "m.gguf"]);
    // A model that fails while being written (a projection the GGUF blocks cannot hold) leaves
    // nothing: the ternary Llama's rows of 64 are not whole TQ2_0 blocks... it is refused first;
    // the staging folder of a failed HF write is removed.
    let err = fails(&[
        "export",
        &s(&fixture("hf-llama/ternary")),
        "-o",
        &s(&scratch.join("l.gguf")),
        "--format",
        "gguf",
    ]);
    assert!(err.contains("sub-norms"), "{err}");
    only(&scratch, &["hf", "m.gguf"]);
}

#[test]
fn export_is_audited() {
    let scratch = Scratch::create("export-audit");
    let log = scratch.join("audit.jsonl");
    let out = scratch.join("m.gguf");
    ok(&[
        "--audit-log",
        log.to_str().unwrap(),
        "export",
        fixture("hf-tiny/packed").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "gguf",
    ]);
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = records.last().unwrap();
    let body = serde_json::to_string(last).unwrap();
    assert!(body.contains("\"export\""), "{body}");
    assert!(body.contains("output_sha256"), "{body}");
    assert!(body.contains("\"projections\":28"), "{body}");
}

#[test]
fn a_failure_while_writing_leaves_no_folder_and_no_staging() {
    // A packed checkpoint whose last projection holds a 2-bit code 3: the importer accepts the
    // folder (shapes are right) and the error comes while the export is being written.
    let scratch = Scratch::create("export-midway");
    let src = fixture("hf-tiny/packed");
    let bad = scratch.join("bad");
    std::fs::create_dir(&bad).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "model.safetensors",
    ] {
        std::fs::copy(src.join(f), bad.join(f)).unwrap();
    }
    let path = bad.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = "model.layers.3.mlp.up_proj.weight";
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[8 + n + start] = 0xFF;
    std::fs::write(&path, bytes).unwrap();
    let out = scratch.join("out");
    let err = fails(&[
        "export",
        bad.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--format",
        "hf",
    ]);
    assert!(err.contains(name) && err.contains("code 3"), "{err}");
    only(&scratch, &["bad"]);
    let gguf = scratch.join("out.gguf");
    let err = fails(&[
        "export",
        bad.to_str().unwrap(),
        "-o",
        gguf.to_str().unwrap(),
        "--format",
        "gguf",
    ]);
    assert!(err.contains(name), "{err}");
    only(&scratch, &["bad"]);
}
