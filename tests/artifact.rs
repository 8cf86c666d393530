//! Ahead-of-time artifacts (`.bnx`) end to end: every hf-tiny form and every gguf-tiny file compiled
//! to an artifact, loaded by the runtime alone, reproduces transformers' logits (≤ 1e-3 · max|logit|,
//! same argmax) and greedy tokens through the KV cache, bit for bit what the JIT computes; the same
//! inputs give the same bytes; a truncated, edited, foreign or future artifact fails with a message
//! naming the file and the part; and `bitnetc compile` / `bitnetc logits` on artifacts.
//!
//! Linking needs a C compiler driver (`cc`); without one these tests print a skip message and pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnet_frontend::npy;
use bitnet_runtime::artifact::{self, Manifest};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use support::{argmax, check_logits, ids, root};

/// The artifact of `model` for `target`, built for `context` tokens.
fn compile(model: &Path, context: u64, target: &str) -> Vec<u8> {
    compile_for(model, context, target, None)
}

/// `compile` at CPU level `cpu` (`--target-cpu`).
fn compile_for(model: &Path, context: u64, target: &str, cpu: Option<&str>) -> Vec<u8> {
    let mut m = bitnetc::OpenOptions {
        context: Some(context),
        ..Default::default()
    }
    .open(model)
    .unwrap();
    let options = bitnetc::ArtifactOptions {
        target: target.to_string(),
        target_cpu: cpu.map(str::to_string),
        ..bitnetc::ArtifactOptions::default()
    };
    bitnetc::compile_cpu_object(&mut m, &options)
        .and_then(|object| object.link(None))
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()))
}

/// Compiles `model` to an artifact, loads it, and checks logits and greedy decoding against the
/// reference and, bit for bit, against the JIT.
fn check(model: &Path, prompt: &[i64], reference: &Path, greedy: &[i64], threads: usize) {
    let context = (prompt.len() + greedy.len()) as u64;
    let dir = support::Scratch::create(&format!(
        "artifact-{}",
        model.file_name().unwrap().to_string_lossy()
    ));
    let path = dir.join("model.bnx");
    std::fs::write(&path, compile(model, context, "native")).unwrap();
    let mut aot = artifact::load(&path, threads).unwrap_or_else(|e| panic!("{e}"));
    let mut m = bitnetc::OpenOptions {
        context: Some(context),
        ..Default::default()
    }
    .open(model)
    .unwrap();
    let mut jit =
        bitnetc::compile_cpu(&mut m, &bitnetc::CpuOptions::with_threads(threads)).unwrap();
    let vocab = aot.program().vocab as usize;
    let ours = aot.forward(prompt, 0).unwrap().to_vec();
    let jit_logits = jit.forward(prompt, 0).unwrap().to_vec();
    assert!(
        ours.iter()
            .zip(&jit_logits)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{}: AOT and JIT prefill logits differ",
        model.display()
    );
    let theirs = npy::read(reference).unwrap().data.to_f32();
    let what = format!("{} (artifact, {threads} threads)", model.display());
    let ours_arg = check_logits(&what, &ours, &theirs, vocab, 1e-3);
    let mut next = *ours_arg.last().unwrap();
    let mut got = vec![next];
    for step in 0..greedy.len() - 1 {
        let pos = (prompt.len() + step) as u64;
        let logits = aot.forward(&[next], pos).unwrap().to_vec();
        let j = jit.forward(&[next], pos).unwrap();
        assert!(
            logits
                .iter()
                .zip(j)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}: AOT and JIT decode logits differ at step {step}",
            model.display()
        );
        next = argmax(&logits);
        got.push(next);
    }
    assert_eq!(
        got,
        greedy,
        "{}: greedy tokens with the KV cache",
        model.display()
    );
}

fn hf(form: &str, threads: usize) {
    if !support::have_cc(form) {
        return;
    }
    let dir = root().join("tests/fixtures/hf-tiny").join(form);
    let r: Value = support::reference(&dir);
    check(
        &dir,
        &ids(&r["prompt_ids"]),
        &dir.join("logits.npy"),
        &ids(&r["greedy_new_tokens"]),
        threads,
    );
}

#[test]
fn hf_online_artifact() {
    hf("online", 2);
}

#[test]
fn hf_packed_artifact() {
    hf("packed", 1);
}

#[test]
fn hf_packed_bitlinear_artifact() {
    hf("packed_bitlinear", 3);
}

#[test]
fn gguf_artifacts() {
    if !support::have_cc("gguf_artifacts") {
        return;
    }
    let dir = root().join("tests/fixtures/gguf-tiny");
    let r: Value = support::reference(&dir);
    for file in support::GGUF_FILES {
        let f = &r["files"][file];
        let expected = dir.join(f["expected_logits"].as_str().unwrap());
        check(
            &dir.join(file),
            &ids(&r["prompt_ids"]),
            &expected,
            &ids(&f["greedy_new_tokens"]),
            2,
        );
    }
}

const PACKED: &str = "tests/fixtures/hf-tiny/packed";

#[test]
fn same_inputs_give_identical_bytes() {
    if !support::have_cc("same_inputs_give_identical_bytes") {
        return;
    }
    let model = root().join(PACKED);
    let a = compile(&model, 8, "native");
    let b = compile(&model, 8, "native");
    assert!(a == b, "two compiles of the same model differ");
    let p = artifact::parse(&a).unwrap();
    let m = &p.manifest;
    assert_eq!(m.format_version, artifact::FORMAT_VERSION);
    assert!(m.compiler.starts_with("bitnetc "));
    assert!(m.passes.iter().any(|p| p == "plan-memory"));
    assert!(m.inputs.iter().any(|i| i.name == "model.safetensors"));
    assert!(m.inputs.iter().any(|i| i.name == "config.json"));
    assert_eq!(m.program.context, 8);
    // Every runtime symbol gets a slot: the math functions and the micro-kernels.
    let symbols: Vec<&str> = m.imports.iter().map(|i| i.symbol.as_str()).collect();
    assert_eq!(
        symbols,
        [
            "bitnet_rt_exp_f64",
            "bitnet_rt_ternary_matmul",
            "bitnet_rt_matmul_nt_half",
            "bitnet_rt_matmul_i8",
            "bitnet_rt_attention_head_major",
            "bitnet_rt_matmul_q4"
        ]
    );
    assert_eq!(m.target.arch, std::env::consts::ARCH);
    let names: Vec<&str> = m.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["code", "weights", "tokenizer", "tokenizer_special", "ir"]
    );
    // The weights are 64-byte aligned in the file (so a mapping of it is too).
    assert_eq!(p.sections["weights"].start % 64, 0);
    assert_eq!(
        &a[p.sections["tokenizer"].clone()],
        std::fs::read(model.join("tokenizer.json"))
            .unwrap()
            .as_slice()
    );
    // The manifest's JSON keys come out sorted.
    let json = std::str::from_utf8(&a[artifact::HEADER_BYTES..p.sections["code"].start]).unwrap();
    let top: Vec<&str> = json
        .lines()
        .filter(|l| l.starts_with("  \"") && !l.starts_with("   "))
        .map(|l| l.trim().split('"').nth(1).unwrap())
        .collect();
    let mut sorted = top.clone();
    sorted.sort();
    assert_eq!(top, sorted);
    assert!(top.len() >= 12, "{top:?}");
}

#[test]
fn portable_x86_64_target_runs() {
    if std::env::consts::ARCH != "x86_64" || !support::have_cc("portable_x86_64_target_runs") {
        return;
    }
    let model = root().join(PACKED);
    let bytes = compile(&model, 8, "x86_64-unknown-linux-gnu");
    let m = artifact::parse(&bytes).unwrap().manifest;
    assert!(m.target.features.contains(&"sse4.1".to_string()));
    assert!(!m.target.features.contains(&"avx".to_string()));
    let dir = support::Scratch::create("artifact-portable");
    let path = dir.join("portable.bnx");
    std::fs::write(&path, &bytes).unwrap();
    let mut aot = artifact::load(&path, 2).unwrap();
    let mut im = bitnetc::OpenOptions {
        context: Some(8),
        ..Default::default()
    }
    .open(&model)
    .unwrap();
    let mut jit = bitnetc::compile_cpu(&mut im, &bitnetc::CpuOptions::with_threads(2)).unwrap();
    let a = aot.forward(&[1, 17, 256], 0).unwrap().to_vec();
    let j = jit.forward(&[1, 17, 256], 0).unwrap();
    let max = j.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = a.iter().zip(j).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(diff <= 1e-5 * max, "portable vs JIT: {diff}");
}

#[test]
fn x86_64_levels_record_their_features_refuse_older_cpus_and_run() {
    if std::env::consts::ARCH != "x86_64" || !support::have_cc("x86_64_levels") {
        return;
    }
    let model = root().join(PACKED);
    let dir = support::Scratch::create("artifact-levels");
    let mut im = bitnetc::OpenOptions {
        context: Some(8),
        ..Default::default()
    }
    .open(&model)
    .unwrap();
    let mut jit = bitnetc::compile_cpu(&mut im, &bitnetc::CpuOptions::with_threads(2)).unwrap();
    let j = jit.forward(&[1, 17, 256], 0).unwrap().to_vec();
    let max = j.iter().fold(0f32, |m, x| m.max(x.abs()));
    // Each level's features, and one it must not claim.
    for (cpu, has, lacks) in [
        ("generic", &["sse4.2", "popcnt"][..], "avx2"),
        ("x86-64-v3", &["avx", "avx2", "fma", "bmi2"][..], "avx512f"),
        (
            "x86-64-v4",
            &["avx2", "avx512f", "avx512vl", "avx512dq"][..],
            "avx512vnni",
        ),
    ] {
        let bytes = compile_for(&model, 8, "x86_64-unknown-linux-gnu", Some(cpu));
        let m = artifact::parse(&bytes).unwrap().manifest;
        for f in has {
            assert!(
                m.target.features.iter().any(|g| g == f),
                "{cpu}: {f} in {:?}",
                m.target.features
            );
        }
        assert!(
            !m.target.features.iter().any(|g| g == lacks),
            "{cpu}: {lacks}"
        );
        assert_eq!(
            m.flags.get("bitnetc_target_cpu").map(String::as_str),
            Some(cpu)
        );
        // A CPU with everything but the level's last feature refuses it, naming the feature.
        let last = has[has.len() - 1];
        let without = |f: &str| Some(f != last);
        let msg = artifact::check_target_on(&m.target, "x86_64", "linux", &without)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_has(&msg, &[&format!("with {last}, which this CPU lacks")]);
        if m.target
            .features
            .iter()
            .any(|f| artifact::host_has_feature(f) != Some(true))
        {
            println!("{cpu}: this CPU lacks a feature of the level; not run");
            continue;
        }
        let path = dir.join(format!("{cpu}.bnx"));
        std::fs::write(&path, &bytes).unwrap();
        let mut aot = artifact::load(&path, 2).unwrap();
        let a = aot.forward(&[1, 17, 256], 0).unwrap().to_vec();
        let diff = a
            .iter()
            .zip(&j)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-5 * max, "{cpu} vs JIT: {diff}");
        let vocab = aot.program().vocab as usize;
        let last_row = |v: &[f32]| argmax(&v[v.len() - vocab..]);
        assert_eq!(last_row(&a), last_row(&j), "{cpu}: the next token");
    }
    // Levels that do not fit the target are refused by name.
    for (target, cpu, needle) in [
        ("aarch64-unknown-linux-gnu", "x86-64-v3", "an x86-64 level"),
        ("aarch64-unknown-linux-gnu", "native", "this CPU is x86_64"),
    ] {
        let options = bitnetc::ArtifactOptions {
            target: target.to_string(),
            target_cpu: Some(cpu.to_string()),
            ..bitnetc::ArtifactOptions::default()
        };
        let mut m = bitnetc::OpenOptions::default().open(&model).unwrap();
        let msg = bitnetc::compile_cpu_object(&mut m, &options)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_has(&msg, &[&format!("--target-cpu {cpu}"), needle]);
    }
}

/// Writes `bytes` to a file in `dir` and returns the load error's message (which must name the file).
fn load_error(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let msg = match artifact::load(&path, 1) {
        Ok(_) => panic!("{name}: loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains(&path.display().to_string()),
        "{name}: message lacks the path: {msg}"
    );
    msg
}

fn assert_has(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in: {msg}");
    }
}

/// Re-encodes `bytes` with its manifest changed by `edit` (hashes kept consistent).
fn with_manifest(bytes: &[u8], edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let p = artifact::parse(bytes).unwrap();
    let mut m = p.manifest.clone();
    edit(&mut m);
    let sections: Vec<(&str, &[u8])> = p
        .manifest
        .sections
        .iter()
        .map(|s| (s.name.as_str(), &bytes[p.sections[&s.name].clone()]))
        .collect();
    artifact::encode_manifest(&m, &sections).unwrap()
}

#[test]
fn damaged_and_foreign_artifacts_fail_clearly() {
    if !support::have_cc("damaged_and_foreign_artifacts_fail_clearly") {
        return;
    }
    let good = compile(&root().join(PACKED), 8, "native");
    let dir = support::Scratch::create("artifact-damaged");
    let parsed = artifact::parse(&good).unwrap();
    // The unchanged bytes load (the re-encoding helper is faithful).
    let path = dir.join("good.bnx");
    std::fs::write(&path, with_manifest(&good, |_| {})).unwrap();
    assert!(artifact::load(&path, 1).is_ok());

    // Truncated: in the header, in the manifest, in each section.
    assert_has(
        &load_error(&dir, "t0.bnx", &good[..20]),
        &["truncated", "header"],
    );
    assert_has(
        &load_error(&dir, "t1.bnx", &good[..100]),
        &["truncated", "manifest"],
    );
    for s in &parsed.manifest.sections {
        let r = &parsed.sections[&s.name];
        let cut = r.start + (r.end - r.start) / 2;
        let msg = load_error(&dir, &format!("cut-{}.bnx", s.name), &good[..cut]);
        assert_has(&msg, &["truncated", &format!("{} section", s.name)]);
    }

    // One flipped byte in the manifest, its hash, and each section.
    let mut bad = good.clone();
    bad[artifact::HEADER_BYTES + 5] ^= 0x20;
    assert_has(
        &load_error(&dir, "flip-manifest.bnx", &bad),
        &["manifest is corrupt or was edited", "sha256"],
    );
    let mut bad = good.clone();
    bad[20] ^= 1;
    assert_has(
        &load_error(&dir, "flip-hash.bnx", &bad),
        &["manifest is corrupt"],
    );
    for s in &parsed.manifest.sections {
        let r = &parsed.sections[&s.name];
        let mut bad = good.clone();
        bad[r.start + (r.end - r.start) / 3] ^= 0x40;
        let msg = load_error(&dir, &format!("flip-{}.bnx", s.name), &bad);
        assert_has(
            &msg,
            &[&format!("{} section is corrupt or was edited", s.name)],
        );
    }

    // Not an artifact; a future format (header, and manifest with consistent hashes).
    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"GGUF");
    assert_has(
        &load_error(&dir, "magic.bnx", &bad),
        &["not a bitnetc artifact"],
    );
    assert_has(
        &load_error(&dir, "empty.bnx", b""),
        &["not a bitnetc artifact"],
    );
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_has(
        &load_error(&dir, "v2-header.bnx", &bad),
        &["format version 2", "reads version 1", "recompile"],
    );
    let bad = with_manifest(&good, |m| m.format_version = 2);
    assert_has(
        &load_error(&dir, "v2-manifest.bnx", &bad),
        &["format version 2"],
    );

    // Compiled for another machine: a feature this CPU lacks, one no runtime knows, another arch.
    let candidates = [
        "avx512fp16",
        "avx512vbmi",
        "avx512bitalg",
        "avxvnni",
        "avx512vnni",
        "avx512f",
        "avx2",
        "i8mm",
        "sve",
        "dotprod",
    ];
    match candidates
        .iter()
        .find(|f| artifact::host_has_feature(f) == Some(false))
    {
        Some(f) => {
            let bad = with_manifest(&good, |m| m.target.features.push((*f).to_string()));
            assert_has(
                &load_error(&dir, "feature.bnx", &bad),
                &[&format!(
                    "compiled for a CPU with {f}, which this CPU lacks"
                )],
            );
        }
        None => println!("this CPU has every candidate feature; checking a simulated CPU instead"),
    }
    let target = &parsed.manifest.target;
    let lacking = target.features.first().cloned().unwrap_or_default();
    let without = |f: &str| Some(f != lacking);
    let msg = artifact::check_target_on(target, &target.arch, &target.os, &without)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    if !target.features.is_empty() {
        assert_has(&msg, &[&format!("with {lacking}, which this CPU lacks")]);
    }
    let bad = with_manifest(&good, |m| {
        m.target.features.push("cranelift:has_teleport".into())
    });
    assert_has(
        &load_error(&dir, "unknown-feature.bnx", &bad),
        &["cranelift:has_teleport", "cannot check"],
    );
    let bad = with_manifest(&good, |m| {
        m.target.arch = "riscv64".into();
        m.target.triple = "riscv64gc-unknown-linux-gnu".into();
    });
    assert_has(
        &load_error(&dir, "arch.bnx", &bad),
        &[
            "compiled for riscv64gc-unknown-linux-gnu",
            "--target native",
        ],
    );

    // A manifest whose launch plan points outside the weights.
    let bad = with_manifest(&good, |m| {
        if let Some(b) = m.launches[0].bufs.first_mut() {
            b.offset = u64::MAX / 2;
        }
    });
    assert_has(
        &load_error(&dir, "plan.bnx", &bad),
        &["launch plan does not fit", "launch 0", "outside"],
    );
}

#[test]
fn two_artifacts_in_one_process() {
    if !support::have_cc("two_artifacts_in_one_process") {
        return;
    }
    // Same kernel symbols in two libraries, and the same library twice: each executor uses its own.
    let dir = support::Scratch::create("artifact-two");
    let a = dir.join("a.bnx");
    let b = dir.join("b.bnx");
    std::fs::write(&a, compile(&root().join(PACKED), 8, "native")).unwrap();
    std::fs::write(
        &b,
        compile(
            &root().join("tests/fixtures/gguf-tiny/tiny-i2_s.gguf"),
            8,
            "native",
        ),
    )
    .unwrap();
    let mut ea = artifact::load(&a, 2).unwrap();
    let mut eb = artifact::load(&b, 2).unwrap();
    let mut ea2 = artifact::load(&a, 1).unwrap();
    let la = ea.forward(&[1, 17, 256], 0).unwrap().to_vec();
    let lb = eb.forward(&[1, 17, 256], 0).unwrap().to_vec();
    let la2 = ea2.forward(&[1, 17, 256], 0).unwrap().to_vec();
    assert_eq!(la, la2);
    assert_ne!(la, lb);
}

fn bitnetc_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn cli_compile_emit_logits_and_no_overwrite() {
    if !support::have_cc("cli_compile_emit_logits_and_no_overwrite") {
        return;
    }
    let dir = support::Scratch::create("artifact-cli");
    let model = root().join(PACKED).display().to_string();
    let out = dir.join("model.bnx").display().to_string();
    let o = bitnetc_cmd(&[
        "compile",
        &model,
        "-o",
        &out,
        "--context",
        "8",
        "--emit",
        "ir,opt-ir,clif,asm,obj",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("model.bnx"));
    // The artifact's bytes against the folder's weights (issue 16's size measure).
    let weights: u64 = std::fs::read_dir(root().join(PACKED))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let bytes = std::fs::metadata(dir.join("model.bnx")).unwrap().len();
    let ratio = format!(
        "{:.3}× the input's {weights} bytes",
        bytes as f64 / weights as f64
    );
    assert!(text(&o.stdout).contains(&ratio), "{}", text(&o.stdout));
    for f in [
        "model.bnx",
        "model.ir.bir",
        "model.opt.bir",
        "model.clif",
        "model.s",
        "model.o",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(
        std::fs::read(dir.join("model.o"))
            .unwrap()
            .starts_with(b"\x7fELF")
    );
    let clif = std::fs::read_to_string(dir.join("model.clif")).unwrap();
    assert!(clif.contains("function") && clif.contains("bitnet_ternary_matmul"));
    let asm = std::fs::read_to_string(dir.join("model.s")).unwrap();
    assert!(asm.contains("bitnet_ternary_matmul") && asm.contains("bitnet_rt_exp_f64:"));
    assert!(
        std::fs::read_to_string(dir.join("model.opt.bir"))
            .unwrap()
            .contains("bit.")
    );

    // The artifact's logits are the JIT's.
    let a = bitnetc_cmd(&["logits", &out, "--tokens", "1,17,256", "--backend", "cpu"]);
    assert!(a.status.success(), "{}", text(&a.stderr));
    let d = bitnetc_cmd(&["logits", &out, "--tokens", "1,17,256"]);
    let j = bitnetc_cmd(&["logits", &model, "--tokens", "1,17,256", "--backend", "cpu"]);
    assert_eq!(text(&a.stdout), text(&j.stdout));
    assert_eq!(text(&d.stdout), text(&j.stdout));
    // The interpreter runs the compiled IR the artifact carries.
    let i = bitnetc_cmd(&["logits", &out, "--tokens", "1,2", "--backend", "interp"]);
    assert!(i.status.success(), "{}", text(&i.stderr));
    assert!(!text(&i.stdout).is_empty());
    let long = bitnetc_cmd(&["logits", &out, "--tokens", "1,2,3,4,5,6,7,8,9"]);
    assert_eq!(long.status.code(), Some(1));
    assert!(text(&long.stderr).contains("context"));

    // Nothing is overwritten: not the artifact, not a side file.
    let before = std::fs::read(dir.join("model.bnx")).unwrap();
    let again = bitnetc_cmd(&["compile", &model, "-o", &out, "--context", "8"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read(dir.join("model.bnx")).unwrap(), before);
    let other = dir.join("other.bnx").display().to_string();
    std::fs::write(dir.join("other.s"), "keep").unwrap();
    let side = bitnetc_cmd(&["compile", &model, "-o", &other, "--emit", "asm"]);
    assert_eq!(side.status.code(), Some(1));
    assert!(text(&side.stderr).contains("other.s: already exists"));
    assert!(!dir.join("other.bnx").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("other.s")).unwrap(),
        "keep"
    );

    // Bad arguments.
    let t = bitnetc_cmd(&["compile", &model, "-o", &other, "--target", "sparc"]);
    assert!(text(&t.stderr).contains("x86_64-unknown-linux-gnu"));
    let e = bitnetc_cmd(&["compile", &model, "-o", &other, "--emit", "exe"]);
    assert!(text(&e.stderr).contains("--emit exe"));
}

#[test]
fn no_linker_still_emits_the_object() {
    let dir = support::Scratch::create("artifact-nolinker");
    let model = root().join(PACKED).display().to_string();
    let out = dir.join("m.bnx").display().to_string();
    let missing = dir.join("no-such-cc").display().to_string();
    let o = bitnetc_cmd(&[
        "compile",
        &model,
        "-o",
        &out,
        "--context",
        "8",
        "--emit",
        "obj",
        "--linker",
        &missing,
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("was not written: no linker"));
    assert!(dir.join("m.o").is_file());
    assert!(!dir.join("m.bnx").exists());
    let o = bitnetc_cmd(&[
        "compile",
        &model,
        "-o",
        &dir.join("n.bnx").display().to_string(),
        "--context",
        "8",
        "--linker",
        &missing,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no linker"), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--emit obj"));
    // Another architecture's object needs no linker at all with --emit obj.
    let a64 = dir.join("a64.bnx").display().to_string();
    let o = bitnetc_cmd(&[
        "compile",
        &model,
        "-o",
        &a64,
        "--context",
        "8",
        "--target",
        "aarch64-unknown-linux-gnu",
        "--emit",
        "obj",
        "--linker",
        &missing,
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let obj = std::fs::read(dir.join("a64.o")).unwrap();
    assert!(obj.starts_with(b"\x7fELF"));
    assert_eq!(u16::from_le_bytes([obj[18], obj[19]]), 183, "EM_AARCH64");
}

/// Interpreter logits on an artifact's compiled IR and weights, and the CPU backend's on the same
/// artifact, checked against each other (≤ 1e-5 relative) and against the reference.
fn check_interp(model: &Path, prompt: &[i64], reference: &Path) {
    let dir = support::Scratch::create(&format!(
        "artifact-interp-{}",
        model.file_name().unwrap().to_string_lossy()
    ));
    let path = dir.join("model.bnx");
    std::fs::write(&path, compile(model, prompt.len() as u64 + 2, "native")).unwrap();
    let interp = bitnetc::artifact_prompt_logits(&path, prompt)
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()))
        .data
        .to_f32();
    let mut aot = artifact::load(&path, 2).unwrap_or_else(|e| panic!("{e}"));
    let vocab = aot.program().vocab as usize;
    let cpu = aot.forward(prompt, 0).unwrap().to_vec();
    assert_eq!(interp.len(), cpu.len());
    let max_cpu = cpu.iter().fold(0f32, |a, x| a.max(x.abs()));
    let rel = interp
        .iter()
        .zip(&cpu)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()))
        / max_cpu;
    let theirs = npy::read(reference).unwrap().data.to_f32();
    assert_eq!(interp.len(), theirs.len());
    let max_logit = theirs.iter().fold(0f32, |a, x| a.max(x.abs()));
    let max_diff = interp
        .iter()
        .zip(&theirs)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    println!(
        "{} (interp on artifact): vs cpu {rel:.3e}, vs reference {:.3e} · max|logit|",
        model.display(),
        max_diff / max_logit
    );
    assert!(
        rel <= 1e-5,
        "interp and cpu on the artifact differ by {rel:e} (relative)"
    );
    assert!(max_diff <= 1e-3 * max_logit, "logits differ by {max_diff}");
    let ours_arg: Vec<i64> = interp.chunks(vocab).map(argmax).collect();
    let theirs_arg: Vec<i64> = theirs.chunks(vocab).map(argmax).collect();
    assert_eq!(ours_arg, theirs_arg, "argmax per position");
}

#[test]
fn interp_runs_the_artifact_ir() {
    if !support::have_cc("interp_runs_the_artifact_ir") {
        return;
    }
    let dir = root().join(PACKED);
    let r: Value = support::reference(&dir);
    check_interp(&dir, &ids(&r["prompt_ids"]), &dir.join("logits.npy"));
    let gguf = root().join("tests/fixtures/gguf-tiny");
    let g: Value = support::reference(&gguf);
    let file = "tiny-tq2_0.gguf";
    check_interp(
        &gguf.join(file),
        &ids(&g["prompt_ids"]),
        &gguf.join(g["files"][file]["expected_logits"].as_str().unwrap()),
    );

    // An edited ir section fails the hash check.
    let good = compile(&dir, 8, "native");
    let p = artifact::parse(&good).unwrap();
    let ir = p.sections["ir"].clone();
    let mut bad = good.clone();
    bad[ir.start + 10] ^= 0x01;
    let scratch = support::Scratch::create("artifact-interp-edited");
    let path = scratch.join("edited.bnx");
    std::fs::write(&path, &bad).unwrap();
    let msg = match bitnetc::artifact_prompt_logits(&path, &[1, 2]) {
        Ok(_) => panic!("an edited ir section ran"),
        Err(e) => e.to_string(),
    };
    assert_has(&msg, &["ir section is corrupt or was edited", "sha256"]);
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    let msg = match artifact::load(&path, 1) {
        Ok(_) => panic!("an edited ir section loaded"),
        Err(e) => e.to_string(),
    };
    assert_has(&msg, &["ir section is corrupt or was edited"]);
}

#[test]
fn compile_profiles_preset_the_flags() {
    if !support::have_cc("compile_profiles_preset_the_flags") {
        return;
    }
    let dir = support::Scratch::create("artifact-profiles");
    let model = root().join(PACKED).display().to_string();
    let compile = |name: &str, profile: &str| {
        let out = dir.join(name).display().to_string();
        let o = bitnetc_cmd(&[
            "compile",
            &model,
            "-o",
            &out,
            "--context",
            "8",
            "--profile",
            profile,
        ]);
        (o, std::fs::read(dir.join(name)).unwrap_or_default())
    };
    // development keeps the IR beside the artifact.
    let (o, _) = compile("dev.bnx", "development");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(dir.join("dev.ir.bir").is_file() && dir.join("dev.opt.bir").is_file());
    // inference: the int8 lm_head; production: the portable target, the exact head.
    let (o, inference) = compile("inf.bnx", "inference");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (o, production) = compile("prod.bnx", "production");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let has = |bytes: &[u8], what: &str| text(bytes).contains(what);
    assert!(has(&inference, "bitnet_matmul_i8") && !has(&production, "bitnet_matmul_i8"));
    // Built for every x86-64-v2 CPU: no AVX2 (`native` uses it where the CPU has it).
    if cfg!(target_arch = "x86_64") {
        assert!(
            has(&production, "\"has_avx2\": \"false\""),
            "production uses this CPU's features"
        );
    }
    // training is not built; a profile and the flags it sets conflict.
    let (o, _) = compile("train.bnx", "training");
    assert!(
        !o.status.success() && text(&o.stderr).contains("issue 18"),
        "{}",
        text(&o.stderr)
    );
    let out = dir.join("x.bnx").display().to_string();
    let o = bitnetc_cmd(&[
        "compile",
        &model,
        "-o",
        &out,
        "--profile",
        "inference",
        "--head-dtype",
        "bf16",
    ]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("--head-dtype"),
        "{}",
        text(&o.stderr)
    );
}

/// A GGUF whose embedding, tied to the lm_head, is F16 (gguf-py's copy of tiny-tq2_0 with that one
/// tensor converted, `scripts/fixtures/make_gguf_f16_embedding.py`): the JIT and the artifact keep
/// the table as f16 (the embedding kernel `…_f16`, one copy shared with the head that
/// `--head-dtype auto` reads as f16; the artifact's weight index lists it once, f16, 2 bytes per
/// entry); and both give the interpreter's logits on the GGUF (≤ 1e-3 · max|logit|, the same
/// argmax at every position), the interpreter on the artifact's own weights (f16 pairs read back
/// in index order) within 1e-5.
#[test]
fn an_f16_embedding_stays_f16_and_gives_the_interpreters_logits() {
    if !support::have_cc("an_f16_embedding_stays_f16_and_gives_the_interpreters_logits") {
        return;
    }
    let dir = root().join("tests/fixtures/gguf-tiny");
    let model = dir.join("tiny-tq2_0-f16emb.gguf");
    let prompt = ids(&support::reference(&dir)["prompt_ids"]);
    let context = prompt.len() as u64 + 2;
    let open = |path: &Path| {
        bitnetc::OpenOptions {
            context: Some(context),
            ..Default::default()
        }
        .open(path)
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let reference = open(&model);
    let want = bitnetc::prompt_logits(&reference.module, reference.weights.as_ref(), &prompt)
        .unwrap_or_else(|e| panic!("{e}"))
        .data
        .to_f32();

    let options = bitnetc::CpuOptions::with_threads(2);
    let mut jit =
        bitnetc::compile_cpu(&mut open(&model), &options).unwrap_or_else(|e| panic!("{e}"));
    let program = jit.program();
    let vocab = program.vocab as usize;
    let symbols: Vec<&str> = program.kernels.iter().map(|(s, _)| s.as_str()).collect();
    let embedding = format!("bitnet_embedding_{vocab}x");
    let hidden: usize = symbols
        .iter()
        .find_map(|s| s.strip_prefix(embedding.as_str())?.strip_suffix("_f16"))
        .unwrap_or_else(|| panic!("no f16 embedding kernel: {symbols:?}"))
        .parse()
        .unwrap();
    let head = format!("bitnet_matmul_nt_{vocab}x{hidden}_f16_pairs");
    assert!(
        symbols.contains(&head.as_str()),
        "the tied head reads the f16 table: {symbols:?}"
    );
    let ours = jit.forward(&prompt, 0).unwrap().to_vec();
    check_logits("f16 embedding (jit)", &ours, &want, vocab, 1e-3);

    let scratch = support::Scratch::create("artifact-f16-embedding");
    let path = scratch.join("model.bnx");
    std::fs::write(&path, compile(&model, context, "native")).unwrap();
    // The artifact's weight index: the table once, as f16 in the paired row order.
    let (_, index, _) = artifact::read_ir(&path).unwrap_or_else(|e| panic!("{e}"));
    let tables: Vec<_> = index
        .iter()
        .filter(|(_, w)| w.shape == [vocab as u64, hidden as u64])
        .collect();
    assert_eq!(tables.len(), 1, "{tables:?}");
    let (_, table) = tables[0];
    assert_eq!(
        (table.elem.as_str(), table.bytes, table.layout.as_deref()),
        (
            "f16",
            2 * (vocab * hidden) as u64,
            Some(artifact::PAIRED_LAYOUT)
        ),
        "{table:?}"
    );
    let mut aot = artifact::load(&path, 2).unwrap_or_else(|e| panic!("{e}"));
    let cpu = aot.forward(&prompt, 0).unwrap().to_vec();
    assert_eq!(cpu, ours, "the artifact computes what the JIT does");
    let interp = bitnetc::artifact_prompt_logits(&path, &prompt)
        .unwrap_or_else(|e| panic!("{e}"))
        .data
        .to_f32();
    support::check_logits_within("interpreter on the artifact", &interp, &want, 1e-5);
}

/// `bitnetc compile` says how the lm_head is stored: what `--head-dtype auto` picked (f16 for the
/// exactly-f16 tied table, bf16 for hf-tiny's bf16 one), or the dtype asked for.
#[test]
fn compile_says_which_head_it_stored() {
    if !support::have_cc("compile_says_which_head_it_stored") {
        return;
    }
    let dir = support::Scratch::create("artifact-head-storage");
    let f16emb = root().join("tests/fixtures/gguf-tiny/tiny-tq2_0-f16emb.gguf");
    let hf = root().join("tests/fixtures/hf-tiny/packed");
    for (i, (model, head, said)) in [
        (&f16emb, "auto", "lm_head f16;"),
        (&f16emb, "i8", "lm_head i8;"),
        (&hf, "auto", "lm_head bf16;"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.join(format!("{i}.bnx"));
        let o = bitnetc_cmd(&[
            "compile",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--context",
            "8",
            "--head-dtype",
            head,
            "--audit-log",
            "off",
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains(said),
            "{head}: {}",
            text(&o.stdout)
        );
    }
}
