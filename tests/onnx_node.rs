//! ONNX's own backend node tests (`tests/fixtures/onnx-node`, copied from `shared/fixtures`, made by
//! onnx 1.23.2's test generator): each `model.onnx` is imported and run by the reference interpreter
//! on every `test_data_set_*/input_*.pb`, and each result is compared with `output_*.pb` the way
//! onnxruntime's backend tests do (`rtol 1e-3`, `atol 1e-7`; integers and bools exactly; NaN equals
//! NaN; shapes and element types exactly).
//!
//! Inputs that the IR needs at compile time (a Reshape shape, Slice bounds, axes: see
//! `onnx::constant_inputs`) are frozen to the data set's values at import.
//!
//! `tests/fixtures/onnx-node-skip.txt` lists the tests that cannot pass yet as `test_name: reason`.
//! The test fails if an unlisted test fails, or if a listed one passes (so the list stays true).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_frontend::onnx::{
    ImportOptions, constant_inputs, import_onnx_with, read_tensor_pb, tensor_pb_name,
};
use bitnet_ir::{Tensor, interp};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-7;
const TOTAL: usize = 282;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The files `prefix_<k>.pb` of a data set, in `k` order.
fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let k = name
                .strip_prefix(prefix)?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((k, p))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Compares one output the way onnxruntime's backend tests do.
fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.elem() != want.elem() || got.shape != want.shape {
        return Err(format!("got {}, expected {}", got.ty(), want.ty()));
    }
    if want.elem().is_float() {
        let (g, w) = (got.data.to_f64(), want.data.to_f64());
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= ATOL + RTOL * b.abs();
            if !ok {
                return Err(format!("element {i}: got {a}, expected {b}"));
            }
        }
    } else if got.data != want.data {
        let (g, w) = (got.data.to_i64(), want.data.to_i64());
        let i = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!("element {i}: got {}, expected {}", g[i], w[i]));
    }
    Ok(())
}

/// Runs every data set of one test.
fn run_test(dir: &Path) -> Result<(), String> {
    let model = dir.join("model.onnx");
    let frozen = constant_inputs(&model).map_err(|e| e.to_string())?;
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err("no test_data_set".into());
    }
    for set in sets {
        let mut inputs: BTreeMap<String, Tensor> = BTreeMap::new();
        for p in numbered(&set, "input_") {
            let name = tensor_pb_name(&p).map_err(|e| e.to_string())?;
            inputs.insert(name, read_tensor_pb(&p).map_err(|e| e.to_string())?);
        }
        let mut opts = ImportOptions::default();
        for name in &frozen {
            let t = inputs
                .get(name)
                .ok_or(format!("no data for input {name}"))?;
            opts.freeze_inputs.insert(name.clone(), t.clone());
        }
        let m = import_onnx_with(&model, &opts).map_err(|e| e.to_string())?;
        let args = m
            .inputs
            .iter()
            .map(|n| {
                inputs
                    .get(n)
                    .cloned()
                    .ok_or(format!("no data for input {n}"))
            })
            .collect::<Result<Vec<Tensor>, String>>()?;
        let got = interp::run(&m.module, "main", &args, &m.weights).map_err(|e| e.to_string())?;
        let want = numbered(&set, "output_");
        if want.len() != got.len() {
            return Err(format!("{} outputs, expected {}", got.len(), want.len()));
        }
        for (k, (g, p)) in got.iter().zip(&want).enumerate() {
            let w = read_tensor_pb(p).map_err(|e| e.to_string())?;
            compare(g, &w).map_err(|e| format!("output {k} ('{}'): {e}", m.outputs[k]))?;
        }
    }
    Ok(())
}

#[test]
fn onnx_backend_node_tests() {
    let dir = root().join("onnx-node");
    let list = std::fs::read_to_string(dir.join("LIST.txt")).unwrap();
    let tests: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(tests.len(), TOTAL, "LIST.txt");
    let skip_text = std::fs::read_to_string(root().join("onnx-node-skip.txt")).unwrap();
    let mut skip: BTreeMap<&str, &str> = BTreeMap::new();
    for line in skip_text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, reason) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("skip list line without `: reason`: {line}"));
        assert!(
            tests.contains(&name.trim()),
            "skip list names an unknown test {name}"
        );
        assert!(!reason.trim().is_empty(), "{name}: empty reason");
        skip.insert(name.trim(), reason.trim());
    }
    let (mut passed, mut skipped) = (0, 0);
    let mut problems = Vec::new();
    for t in &tests {
        let result = run_test(&dir.join(t));
        match (result, skip.get(t)) {
            (Ok(()), None) => passed += 1,
            (Ok(()), Some(_)) => problems.push(format!("{t}: passes but is in the skip list")),
            (Err(e), Some(reason)) => {
                skipped += 1;
                println!("skipped {t}: {reason} (now: {e})");
            }
            (Err(e), None) => problems.push(format!("{t}: {e}")),
        }
    }
    println!("onnx node tests: {passed} passed, {skipped} skipped of {TOTAL}");
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
