//! End-to-end tests of the `bitnetc` binary: exit codes, diagnostics on stderr, files written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{bitnetc, root};

use std::path::Path;
use std::process::Output;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory unique to one test, removed at its end.
fn scratch(name: &str) -> support::Scratch {
    support::Scratch::create(&format!("cli-{name}"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const VALID: &str = "; a comment\nfunc @main(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  %y = nn.relu2 %x : tensor<2xf32>\n  return %y\n}\n";

#[test]
fn check_accepts_valid_ir() {
    let dir = scratch("check-ok");
    let f = write(&dir, "ok.bir", VALID);
    let o = bitnetc(&["check", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ok (1 function(s), 1 op(s))"));
}

#[test]
fn check_reports_every_error_with_location_and_exits_1() {
    let dir = scratch("check-bad");
    let src = "func @main(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  %y = nn.add %x, %z : tensor<2xf32>\n  %w = nn.softmax %x {axis = 3} : tensor<2xf32>\n  return %y\n}\n";
    let f = write(&dir, "bad.bir", src);
    let o = bitnetc(&["check", &f]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains(&format!("{f}:2:")), "{err}");
    assert!(err.contains("use of undefined value %z"), "{err}");
    assert!(
        err.contains(&format!(
            "{f}:3:8: error: nn.softmax: axis 3 is out of range for rank 1"
        )),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
}

#[test]
fn check_reports_syntax_errors_and_missing_files() {
    let dir = scratch("check-syntax");
    let f = write(
        &dir,
        "syntax.bir",
        "func @main() -> () {\n  %y = nn.add %x, : tensor<2xf32>\n}\n",
    );
    let o = bitnetc(&["check", &f]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&format!("{f}:2:")), "{}", stderr(&o));
    let o = bitnetc(&["check", "/no/such/file.bir"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/no/such/file.bir"), "{}", stderr(&o));
}

#[test]
fn print_gives_the_canonical_form() {
    let dir = scratch("print");
    let f = write(&dir, "p.bir", VALID);
    let o = bitnetc(&["print", &f]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "func @main(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  %y = nn.relu2 %x : tensor<2xf32>\n  return %y\n}\n"
    );
}

#[test]
fn eval_runs_a_bitlinear_with_weights_and_writes_npy() {
    let dir = scratch("eval");
    let src = "func @main[T<=64](%x: tensor<1xTx128xf32>) -> (tensor<1xTx256xf32>) {\n  %w = nn.weight {name = \"up_proj.ternary\"} : tensor<256x128xternary>\n  %g = nn.weight {name = \"up_proj.gamma\"} : tensor<1xf32>\n  %xq, %xs = bit.act_quant %x : tensor<1xTx128xi8>, tensor<1xTx1xf32>\n  %y = bit.ternary_matmul %xq, %xs, %w, %g : tensor<1xTx256xf32>\n  return %y\n}\n";
    let f = write(&dir, "bl.bir", src);
    let fx = root().join("tests/fixtures/onnx");
    let out = dir.join("y.npy");
    let o = bitnetc(&[
        "eval",
        &f,
        "--weights",
        fx.join("bitlinear.safetensors").to_str().unwrap(),
        "--input",
        &format!("x={}", fx.join("x.npy").display()),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let y = bitnet_frontend::npy::read(&out).unwrap();
    let r = bitnet_frontend::npy::read(&fx.join("bitlinear_offline.ts.out.npy")).unwrap();
    assert_eq!(y.shape, vec![1, 9, 256]);
    let (y, r) = (y.data.to_f32(), r.data.to_f32());
    let max_ref = r.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_err = y
        .iter()
        .zip(&r)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        max_err <= 1e-5 * max_ref,
        "relative error {}",
        max_err / max_ref
    );
}

#[test]
fn eval_explains_missing_inputs_weights_and_bad_shapes() {
    let dir = scratch("eval-bad");
    let f = write(&dir, "e.bir", VALID);
    let o = bitnetc(&["eval", &f]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("needs --input x=FILE.npy (tensor<2xf32>)"),
        "{}",
        stderr(&o)
    );

    let x = root().join("tests/fixtures/onnx/x.npy");
    let o = bitnetc(&["eval", &f, "--input", &format!("x={}", x.display())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("input %x: expected tensor<2xf32>, given tensor<1x9x128xf32>"),
        "{}",
        stderr(&o)
    );

    let w = write(
        &dir,
        "w.bir",
        "func @main() -> (tensor<2xf32>) {\n  %w = nn.weight {name = \"nope\"} : tensor<2xf32>\n  return %w\n}\n",
    );
    let o = bitnetc(&["eval", &w]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("weight \"nope\" is not in"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("nn.weight (line 2)"), "{}", stderr(&o));
}

#[test]
fn eval_expect_reports_the_error_against_a_reference_and_fails_above_tolerance() {
    let fx = root().join("tests/fixtures/onnx");
    let p = |n: &str| fx.join(n).display().to_string();
    let base = [
        "eval".to_string(),
        p("mlp_bit.bir"),
        "--weights".into(),
        p("mlp.safetensors"),
        "--input".into(),
        format!("x={}", p("x.npy")),
    ];
    let mut args: Vec<String> = base.to_vec();
    args.extend(["--expect".into(), p("mlp_int8.ts.out.npy")]);
    let o = bitnetc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("max relative error") && stdout(&o).contains(" ok"),
        "{}",
        stdout(&o)
    );

    args.extend(["--tolerance".into(), "0".into()]);
    let o = bitnetc(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("FAIL"), "{}", stdout(&o));

    let mut wrong = base.to_vec();
    wrong.extend(["--expect".into(), p("bitlinear_offline.ts.out.npy")]);
    let o = bitnetc(&wrong.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("shapes differ"), "{}", stderr(&o));
}
