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
//! - `grad`: `@main`'s first result (a one-element float loss) differentiated by `autodiff::backward`
//!   at the argument values given in `; with %name = [..]` lines (nn.weight reads the store above);
//!   the snapshot holds the loss and every gradient (6 significant digits), and each element of
//!   every argument's and weight's gradient is checked against the central finite difference
//!   `(L(x + h) − L(x − h)) / 2h` of the f64 interpreter (2h: the distance the element really moved,
//!   which f32 rounding shortens), within `tol × max(1e-3, max |gradient|)`
//!   (`; fd: step = h, tol = t`; 1e-6 and 1e-6 by default; `; fd: off` where the rule differs from
//!   the forward's derivative on purpose, as the straight-through estimator does). A mismatch fails
//!   the test whatever the snapshot says; a rule that refuses prints its error. The same function
//!   is also differentiated by `autodiff::emit_backward` and the training-step function it writes
//!   interpreted: its loss and gradients must be the sweep's bit for bit (a refusal the same error);
//!   so must the sweep that starts from the argument-free values computed once (`frozen::Frozen`).
//!
//! Three coverage tests make the suite's promise checkable: every op has an eval filetest, every op
//! has a verify filetest whose diagnostics name it, and every op appears in a grad filetest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_ir::autodiff::{Gradients, backward, emit_backward};
use bitnet_ir::diagnostic::render_all;
use bitnet_ir::{Data, MemoryWeights, OpKind, Tensor, WeightStore, interp, text, verify};
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
        "filetests that failed or whose snapshot changed or is missing: {failed:?} (the panic above \
         says which; `cargo insta review` re-blesses a snapshot)"
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

/// The `; with %name = [..]` values of `f`'s arguments, in argument order.
fn grad_inputs(src: &str, name: &str, f: &bitnet_ir::Function) -> Vec<Tensor> {
    let mut given = std::collections::BTreeMap::new();
    for (n, line) in src.lines().enumerate() {
        let Some(rest) = line.strip_prefix("; with %") else {
            continue;
        };
        let (arg, values) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}:{}: expected `; with %name = [..]`", n + 1));
        let values = values.trim();
        let inner = values
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or_else(|| panic!("{name}:{}: the values must be in [..]", n + 1));
        let parsed: Vec<f64> = inner
            .split(',')
            .map(|v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}:{}: not a number: {v:?}", n + 1))
            })
            .collect();
        given.insert(arg.trim().to_string(), parsed);
    }
    let inputs: Vec<Tensor> = f
        .args
        .iter()
        .map(|&a| {
            let v = f.value(a);
            let arg = v.name.clone().unwrap_or_default();
            let values = given
                .remove(&arg)
                .unwrap_or_else(|| panic!("{name}: no `; with %{arg} = [..]` line"));
            let ty = &v.ty;
            let shape: Vec<usize> = ty
                .dims
                .iter()
                .map(|d| d.as_static().unwrap() as usize)
                .collect();
            let n: usize = shape.iter().product();
            assert_eq!(values.len(), n, "{name}: %{arg} needs {n} values");
            Tensor::new(shape, Data::from_f64(ty.elem, values)).unwrap()
        })
        .collect();
    let unused: Vec<&String> = given.keys().collect();
    assert!(
        unused.is_empty(),
        "{name}: `; with` lines for no argument of @main: {unused:?}"
    );
    inputs
}

/// The loss of `f` (its first result) as f64.
fn loss_of(f: &bitnet_ir::Function, inputs: &[Tensor], w: &dyn WeightStore) -> f64 {
    interp::run_function(f, inputs, w).unwrap()[0].data.to_f64()[0]
}

/// `t` with element `k` moved by `d`, and how far it really moved (an f32 or bf16 element rounds).
fn nudged(t: &Tensor, k: usize, d: f64) -> (Tensor, f64) {
    let mut v = t.data.to_f64();
    v[k] += d;
    let moved = Tensor::new(t.shape.clone(), Data::from_f64(t.elem(), v)).unwrap();
    let delta = moved.data.to_f64()[k] - t.data.to_f64()[k];
    (moved, delta)
}

/// Checks `rule` (the gradient of one input) against central differences of `loss` (the loss with
/// element `k` moved by about `d`, and the distance it really moved); returns the failures.
fn finite_difference_failures(
    what: &str,
    rule: &[f64],
    (step, tol): (f64, f64),
    loss: &dyn Fn(usize, f64) -> (f64, f64),
) -> Vec<String> {
    let scale = rule.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    let mut failures = Vec::new();
    for (k, &g) in rule.iter().enumerate() {
        let (plus, up) = loss(k, step);
        let (minus, down) = loss(k, -step);
        let fd = (plus - minus) / (up - down);
        if (fd - g).abs() > tol * scale || fd.is_nan() != g.is_nan() {
            failures.push(format!("{what}[{k}]: rule {g:e}, finite difference {fd:e}"));
        }
    }
    failures
}

/// Gradient values, six significant digits, one row (last axis) per line.
fn format_gradient(values: &[f64], shape: &[usize]) -> String {
    let row = shape.last().copied().unwrap_or(1).max(1);
    let mut out = String::new();
    for chunk in values.chunks(row) {
        let cells: Vec<String> = chunk.iter().map(|v| format!("{v:.5e}")).collect();
        let _ = writeln!(out, "  [{}]", cells.join(", "));
    }
    out
}

/// The message of an op's run-time error.
fn eval_message(e: &bitnet_ir::IrError) -> String {
    match e {
        bitnet_ir::IrError::Eval { message, .. } => message.clone(),
        other => panic!("expected an op's error, found {other}"),
    }
}

/// `emit_backward`'s function of `f`, every float argument asked for, interpreted.
fn emitted(
    name: &str,
    f: &bitnet_ir::Function,
    inputs: &[Tensor],
    store: &dyn WeightStore,
) -> (
    Option<bitnet_ir::autodiff::Backward>,
    Result<Vec<Tensor>, bitnet_ir::IrError>,
) {
    let b = match emit_backward(f, 0, &vec![true; f.args.len()]) {
        Ok(b) => b,
        Err(e) => return (None, Err(e)),
    };
    let printed = text::printer::print_function(&b.function);
    let reparsed = text::parse(&printed, name).unwrap_or_else(|d| {
        panic!(
            "{name}: the backward function does not parse back: {}",
            d.message
        )
    });
    assert!(
        verify::verify_module(&reparsed).is_empty(),
        "{name}: the backward function does not verify once printed and parsed"
    );
    let out = interp::run_function(&b.function, inputs, store);
    (Some(b), out)
}

/// The emitted backward function gives the sweep's loss and gradients, bit for bit (a gradient the
/// sweep does not give is absent or zero).
fn check_emitted_backward(
    name: &str,
    f: &bitnet_ir::Function,
    inputs: &[Tensor],
    store: &dyn WeightStore,
    g: &Gradients,
) {
    let (b, out) = emitted(name, f, inputs, store);
    let out = out.unwrap_or_else(|e| panic!("{name}: the backward function fails: {e}"));
    let b = b.expect("the function ran, so it was emitted");
    assert_eq!(
        out[0].data.to_f64()[0].to_bits(),
        g.loss.to_bits(),
        "{name}: the backward function's loss"
    );
    let same =
        |what: String, emitted: Option<&Tensor>, swept: Option<&Vec<f64>>| match (emitted, swept) {
            (Some(e), Some(s)) => assert!(
                e.data.to_f64() == *s,
                "{name}: {what}: the backward function's gradient differs from the sweep's"
            ),
            (Some(e), None) => assert!(
                e.data.to_f64().iter().all(|&v| v == 0.0),
                "{name}: {what}: the backward function has a gradient the sweep has not"
            ),
            (None, Some(s)) => assert!(
                s.iter().all(|&v| v == 0.0),
                "{name}: {what}: the backward function has no gradient, the sweep has one"
            ),
            (None, None) => {}
        };
    for (i, swept) in g.args.iter().enumerate() {
        same(
            format!("argument {i}"),
            b.args[i].map(|r| &out[r]),
            swept.as_ref(),
        );
    }
    let names: BTreeSet<&String> = b.weights.keys().chain(g.weights.keys()).collect();
    for w in names {
        same(
            format!("@{w}"),
            b.weights.get(w).map(|&r| &out[r]),
            g.weights.get(w),
        );
    }
}

/// The sweep starting from the argument-free values computed once (`Frozen`) gives the same loss
/// and gradients bit for bit, and so does a forward run from them.
fn check_frozen(
    name: &str,
    f: &bitnet_ir::Function,
    inputs: &[Tensor],
    store: &dyn WeightStore,
    g: &Gradients,
) {
    let frozen = bitnet_ir::frozen::Frozen::new(f, store)
        .unwrap_or_else(|e| panic!("{name}: the argument-free values: {e}"));
    let h = bitnet_ir::autodiff::backward_checkpointed(f, inputs, store, 0, &[], Some(&frozen))
        .unwrap_or_else(|e| panic!("{name}: the sweep from frozen values: {e}"));
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(h.loss.to_bits(), g.loss.to_bits(), "{name}: frozen loss");
    for (a, b) in h.args.iter().zip(&g.args) {
        assert_eq!(
            a.as_deref().map(bits),
            b.as_deref().map(bits),
            "{name}: an argument's gradient from frozen values"
        );
    }
    assert_eq!(h.weights.len(), g.weights.len(), "{name}: frozen weights");
    for (w, v) in &g.weights {
        assert_eq!(
            h.weights.get(w).map(|x| bits(x)),
            Some(bits(v)),
            "{name}: @{w} from frozen values"
        );
    }
    let run = frozen.run(f, inputs, store).unwrap();
    let plain = interp::run_function(f, inputs, store).unwrap();
    for (a, b) in run.iter().zip(&plain) {
        assert_eq!(
            bits(&a.data.to_f64()),
            bits(&b.data.to_f64()),
            "{name}: a run from frozen values"
        );
    }
}

/// Where the sweep refuses, emitting the backward function or running it fails with the same
/// message.
fn check_emitted_refusal(
    name: &str,
    f: &bitnet_ir::Function,
    inputs: &[Tensor],
    store: &dyn WeightStore,
    e: &bitnet_ir::IrError,
) {
    let (_, out) = emitted(name, f, inputs, store);
    let emitted = out.expect_err(&format!(
        "{name}: the sweep refuses, the backward function runs"
    ));
    assert_eq!(eval_message(&emitted), eval_message(e), "{name}");
}

/// The output of a `grad` filetest.
fn run_grad(path: &Path) -> String {
    let src = read(path);
    let name = file_name(path);
    let m = text::parse(&src, &name).unwrap_or_else(|d| panic!("{}", d.render(&name, Some(&src))));
    let diags = verify::verify_module(&m);
    assert!(
        diags.is_empty(),
        "{}",
        render_all(&diags, &name, Some(&src))
    );
    let f = m
        .function("main")
        .unwrap_or_else(|| panic!("{name}: no @main"));
    let fd = src
        .lines()
        .find_map(|l| l.strip_prefix("; fd:"))
        .map(str::trim);
    let fd = match fd {
        Some("off") => None,
        Some(spec) => {
            let mut step = 1e-6;
            let mut tol = 1e-6;
            for part in spec.split(',') {
                let (k, v) = part.split_once('=').unwrap_or_else(|| {
                    panic!("{name}: `; fd:` takes `step = h, tol = t` or `off`")
                });
                let v: f64 = v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: `; fd:` value {v:?} is not a number"));
                match k.trim() {
                    "step" => step = v,
                    "tol" => tol = v,
                    other => panic!("{name}: unknown `; fd:` key {other}"),
                }
            }
            Some((step, tol))
        }
        None => Some((1e-6, 1e-6)),
    };
    let inputs = grad_inputs(&src, &name, f);
    let store = test_weights();
    let g = match backward(f, &inputs, &store, 0) {
        Ok(g) => g,
        Err(e) => {
            check_emitted_refusal(&name, f, &inputs, &store, &e);
            return format!("error: {e}\n");
        }
    };
    check_emitted_backward(&name, f, &inputs, &store, &g);
    check_frozen(&name, f, &inputs, &store, &g);
    let mut out = String::new();
    let _ = writeln!(out, "loss: {:.5e}", g.loss);
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, x) in inputs.iter().enumerate() {
        let arg = f.value(f.args[i]).name.clone().unwrap_or_default();
        let Some(rule) = &g.args[i] else {
            let _ = writeln!(out, "grad %{arg}: none");
            continue;
        };
        let _ = writeln!(out, "grad %{arg}: {}", x.ty());
        out.push_str(&format_gradient(rule, &x.shape));
        if let Some(fd) = fd {
            let loss = |k: usize, d: f64| {
                let mut moved = inputs.clone();
                let (t, delta) = nudged(x, k, d);
                moved[i] = t;
                (loss_of(f, &moved, &store), delta)
            };
            failures.extend(finite_difference_failures(
                &format!("%{arg}"),
                rule,
                fd,
                &loss,
            ));
            checked += rule.len();
        }
    }
    for (w, rule) in &g.weights {
        let t = store.tensors[w].clone();
        let _ = writeln!(out, "grad @{w}: {}", t.ty());
        out.push_str(&format_gradient(rule, &t.shape));
        if let Some(fd) = fd {
            let loss = |k: usize, d: f64| {
                let mut moved = store.clone();
                let (t, delta) = nudged(&t, k, d);
                moved.tensors.insert(w.clone(), t);
                (loss_of(f, &inputs, &moved), delta)
            };
            failures.extend(finite_difference_failures(
                &format!("@{w}"),
                rule,
                fd,
                &loss,
            ));
            checked += rule.len();
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: gradient rules against central finite differences:\n{}",
        failures.join("\n")
    );
    match fd {
        Some((step, tol)) => {
            assert!(checked > 0, "{name}: no gradient element was checked");
            let _ = writeln!(
                out,
                "finite differences: {checked} elements agree (step {step:e}, tol {tol:e})"
            );
        }
        None => {
            let _ = writeln!(out, "finite differences: off");
        }
    }
    out
}

#[test]
fn grad_filetests() {
    check_snapshots("grad", run_grad);
}

#[test]
fn every_op_appears_in_a_grad_filetest() {
    let missing = ops_missing_from("grad");
    assert!(
        missing.is_empty(),
        "ops without a grad filetest: {missing:?}"
    );
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

/// The ops no filetest of `kind` uses.
fn ops_missing_from(kind: &str) -> Vec<&'static str> {
    let mut used = BTreeSet::new();
    for path in bir_files(kind) {
        let src = read(&path);
        let m = text::parse(&src, "x").unwrap();
        for f in &m.functions {
            used.extend(f.ops.iter().map(|op| op.kind.name()));
        }
    }
    OpKind::ALL
        .iter()
        .map(|k| k.name())
        .filter(|n| !used.contains(n))
        .collect()
}

#[test]
fn every_op_has_an_eval_filetest() {
    let missing = ops_missing_from("eval");
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
