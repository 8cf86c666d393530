//! Filetests: text IR in, expected text out, one `.bir` file per case under `tests/filetests/<kind>/`,
//! the expected output an insta snapshot beside it (`cargo insta review` re-blesses).
//!
//! Kinds (the first line of each file says `; test: <kind>`):
//! - `parse`: the canonical print of the parsed module (and print → parse → print must be identical),
//!   or the rendered syntax error;
//! - `verify`: every verifier diagnostic, rendered as `file:line:col: error: ...` with the line, or `ok`;
//! - `eval`: `@main` (no arguments; constants inline) run by the reference interpreter, each result
//!   printed with its type and values. `nn.weight` reads from a small fixed store (`test_weights`):
//!   `ternary_2x4` (i8 [2, 4]: 1 0 -1 1 / 0 0 1 -1), `dense_ternary_2x4` (f32: 0.5 × the same),
//!   `master_2x4` (f32 [2, 4]: 0.9 -0.1 -1.2 0.4 / 0.05 -0.7 1.1 -0.3), `f32_2x2` (f32 [2, 2]:
//!   1 2 / 3 4) and `bf16_3` (bf16 [3]: 1.5 -2 0.333984375).
//!
//! - `passes`: the module after the pipeline named on the second line (`; pipeline: canonicalize`),
//!   verified after every pass, followed by the passes' notes; the file is the "before", the snapshot
//!   the "after".
//!
//! Two coverage tests make the suite's promise checkable: every op has an eval filetest, and every op
//! has a verify filetest whose diagnostics name it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_ir::diagnostic::render_all;
use bitnet_ir::{Data, MemoryWeights, OpKind, Tensor, interp, text, verify};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};

fn file_name(path: &Path) -> String {
    format!(
        "{}/{}",
        path.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap(),
        path.file_name().unwrap().to_str().unwrap()
    )
}

fn read(path: &Path) -> String {
    let src = std::fs::read_to_string(path).unwrap();
    let kind = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let header = format!("; test: {kind}");
    assert!(
        src.starts_with(&header),
        "{}: the first line must be `{header}`",
        path.display()
    );
    src
}

/// The output of a `parse` filetest.
fn run_parse(path: &Path) -> String {
    let src = read(path);
    let name = file_name(path);
    match text::parse(&src, &name) {
        Err(d) => d.render(&name, Some(&src)),
        Ok(m) => {
            let printed = text::print_module(&m);
            let again = text::print_module(
                &text::parse(&printed, &name).expect("the printed form must parse"),
            );
            assert_eq!(
                printed, again,
                "{name}: print → parse → print is not identical"
            );
            printed
        }
    }
}

/// The output of a `verify` filetest.
fn run_verify(path: &Path) -> String {
    let src = read(path);
    let name = file_name(path);
    match text::parse(&src, &name) {
        Err(d) => d.render(&name, Some(&src)),
        Ok(m) => {
            let diags = verify::verify_module(&m);
            if diags.is_empty() {
                "ok\n".to_string()
            } else {
                render_all(&diags, &name, Some(&src))
            }
        }
    }
}

/// Formats a tensor's values, one row (last axis) per line.
fn format_tensor(t: &Tensor) -> String {
    let values: Vec<String> = match &t.data {
        Data::F32(_) | Data::F16(_) | Data::BF16(_) => {
            t.data.to_f32().iter().map(|v| format!("{v:?}")).collect()
        }
        Data::F64(v) => v.iter().map(|v| format!("{v:?}")).collect(),
        Data::Bool(v) => v.iter().map(|b| b.to_string()).collect(),
        Data::U64(v) => v.iter().map(|v| v.to_string()).collect(),
        Data::I8(_)
        | Data::I16(_)
        | Data::I32(_)
        | Data::I64(_)
        | Data::U8(_)
        | Data::U16(_)
        | Data::U32(_)
        | Data::Ternary(_) => t.data.to_i64().iter().map(|v| v.to_string()).collect(),
    };
    let row = t.shape.last().copied().unwrap_or(1).max(1);
    let mut out = String::new();
    for chunk in values.chunks(row) {
        let _ = writeln!(out, "  [{}]", chunk.join(", "));
    }
    out
}

/// The weights `nn.weight` can name in eval filetests.
fn test_weights() -> MemoryWeights {
    let mut w = MemoryWeights::default();
    let t = |shape: Vec<usize>, data: Data| Tensor::new(shape, data).unwrap();
    w.tensors.insert(
        "ternary_2x4".into(),
        t(vec![2, 4], Data::I8(vec![1, 0, -1, 1, 0, 0, 1, -1])),
    );
    w.tensors.insert(
        "dense_ternary_2x4".into(),
        t(
            vec![2, 4],
            Data::F32(vec![0.5, 0.0, -0.5, 0.5, 0.0, -0.0, 0.5, -0.5]),
        ),
    );
    w.tensors.insert(
        "master_2x4".into(),
        t(
            vec![2, 4],
            Data::F32(vec![0.9, -0.1, -1.2, 0.4, 0.05, -0.7, 1.1, -0.3]),
        ),
    );
    w.tensors.insert(
        "f32_2x2".into(),
        t(vec![2, 2], Data::F32(vec![1.0, 2.0, 3.0, 4.0])),
    );
    // 171/512 = 0.333984375 is exact in bf16.
    let bf = [1.5f32, -2.0, 171.0 / 512.0]
        .map(half::bf16::from_f32)
        .to_vec();
    w.tensors
        .insert("bf16_3".into(), t(vec![3], Data::BF16(bf)));
    w
}

/// The output of an `eval` filetest.
fn run_eval(path: &Path) -> String {
    let src = read(path);
    let name = file_name(path);
    let m = text::parse(&src, &name).unwrap_or_else(|d| panic!("{}", d.render(&name, Some(&src))));
    let diags = verify::verify_module(&m);
    assert!(
        diags.is_empty(),
        "{}",
        render_all(&diags, &name, Some(&src))
    );
    let mut out = String::new();
    match interp::run(&m, "main", &[], &test_weights()) {
        Ok(results) => {
            for (i, t) in results.iter().enumerate() {
                let _ = writeln!(out, "result {i}: {}", t.ty());
                out.push_str(&format_tensor(t));
            }
        }
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
        }
    }
    out
}

/// Runs `run` on every `.bir` file of `kind` and compares each output with its snapshot in
/// `tests/filetests/<kind>/snapshots/<name>.snap`; reports every mismatching file, not just the first.
fn check_snapshots(kind: &str, run: fn(&Path) -> String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/filetests")
        .join(kind);
    let mut failed = Vec::new();
    for path in bir_files(kind) {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let outcome = std::panic::catch_unwind(|| {
            let output = run(&path);
            let mut settings = insta::Settings::clone_current();
            settings.set_snapshot_path(dir.join("snapshots"));
            settings.set_prepend_module_to_snapshot(false);
            settings.set_input_file(&path);
            settings.set_omit_expression(true);
            settings.bind(|| insta::assert_snapshot!(stem.as_str(), output));
        });
        if outcome.is_err() {
            failed.push(file_name(&path));
        }
    }
    assert!(
        failed.is_empty(),
        "filetests with a changed or missing snapshot: {failed:?} (run `cargo insta review`)"
    );
}

/// The output of a `passes` filetest.
fn run_passes(path: &Path) -> String {
    let src = read(path);
    let name = file_name(path);
    let pipeline = src
        .lines()
        .nth(1)
        .and_then(|l| l.strip_prefix("; pipeline:"))
        .unwrap_or_else(|| panic!("{name}: the second line must be `; pipeline: <passes>`"))
        .trim()
        .to_string();
    let mut m =
        text::parse(&src, &name).unwrap_or_else(|d| panic!("{}", d.render(&name, Some(&src))));
    let diags = verify::verify_module(&m);
    assert!(
        diags.is_empty(),
        "{}",
        render_all(&diags, &name, Some(&src))
    );
    let weights = test_weights();
    let mut cx = bitnet_passes::PassContext::new(Some(&weights));
    cx.explain = true;
    let mut pm = bitnet_passes::PassManager::new(bitnet_passes::parse_pipeline(&pipeline).unwrap());
    pm.verify_each = true;
    match pm.run(&mut m, &mut cx) {
        Ok(_) => {
            let mut out = text::print_module(&m);
            for n in &cx.notes {
                let _ = writeln!(out, "; {n}");
            }
            out
        }
        Err(e) => format!("error: {e}\n"),
    }
}

#[test]
fn passes_filetests() {
    check_snapshots("passes", run_passes);
}

#[test]
fn parse_filetests() {
    check_snapshots("parse", run_parse);
}

#[test]
fn verify_filetests() {
    check_snapshots("verify", run_verify);
}

#[test]
fn eval_filetests() {
    check_snapshots("eval", run_eval);
}

fn bir_files(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/filetests")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bir"))
        .collect();
    files.sort();
    files
}

/// The ops used by the eval filetests.
fn ops_in_eval_files() -> BTreeSet<&'static str> {
    let mut used = BTreeSet::new();
    for path in bir_files("eval") {
        let src = read(&path);
        let m = text::parse(&src, "x").unwrap();
        for f in &m.functions {
            used.extend(f.ops.iter().map(|op| op.kind.name()));
        }
    }
    used
}

#[test]
fn every_op_has_an_eval_filetest() {
    let used = ops_in_eval_files();
    let missing: Vec<&str> = OpKind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|n| !used.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "ops without an eval filetest: {missing:?}"
    );
}

#[test]
fn every_op_has_a_verify_filetest_that_rejects_it() {
    let mut named = String::new();
    for path in bir_files("verify") {
        named.push_str(&run_verify(&path));
    }
    let missing: Vec<&str> = OpKind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|n| {
            !named.contains(&format!("error: {n}:")) && !named.contains(&format!("error: {n} "))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "ops no verify filetest reports an error for: {missing:?}"
    );
}

#[test]
fn malformed_inputs_give_diagnostics_not_panics() {
    let mut rejected = 0;
    for kind in ["parse", "verify"] {
        for path in bir_files(kind) {
            let out = if kind == "parse" {
                run_parse(&path)
            } else {
                run_verify(&path)
            };
            if out.contains(": error: ") {
                assert!(
                    out.lines().next().unwrap().starts_with(&file_name(&path)),
                    "{}: a diagnostic must start with file:line:col",
                    path.display()
                );
                rejected += 1;
            }
        }
    }
    assert!(
        rejected >= 15,
        "only {rejected} malformed-input filetests; the suite promises at least 15"
    );
}
