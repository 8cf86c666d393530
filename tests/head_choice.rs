//! `--head-dtype auto --head-kl-bound B` (`bitnetc::head_choice`): the heads measured on the hf-tiny
//! fixture, the choice at bounds below, between and above their costs, and the flags through the
//! binary (`run` builds the head it names; other dtypes, for `run` and `serve`, and artifacts are
//! refused).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnetc::backends::cpu::HeadDtype;
use bitnetc::head_choice::{HeadCandidate, HeadCost, pick};
use std::path::PathBuf;
use support::{Scratch, bitnetc, root};

fn packed() -> PathBuf {
    root().join("tests/fixtures/hf-tiny/packed")
}

fn cost(c: &HeadCandidate) -> HeadCost {
    c.cost
        .clone()
        .unwrap_or_else(|e| panic!("{:?}: {e}", c.dtype))
}

#[test]
fn the_head_that_reads_least_within_the_bound_is_chosen() {
    let options = bitnetc::Options {
        cpu: bitnetc::CpuOptions::with_threads(1),
        ..bitnetc::Options::default()
    };
    let choice = bitnetc::choose_head(&packed(), &options, 0.0).unwrap();
    let dtypes: Vec<HeadDtype> = choice.candidates.iter().map(|c| c.dtype).collect();
    assert_eq!(dtypes, [HeadDtype::Auto, HeadDtype::Q4, HeadDtype::I8]);
    let [exact, q4, i8] = [0, 1, 2].map(|i| &choice.candidates[i]);
    // The fixture's head is its tied bf16 embedding: 2 bytes a weight, then 1, then 4.25 bits.
    assert!(q4.read_bytes_per_token < i8.read_bytes_per_token);
    assert!(i8.read_bytes_per_token < exact.read_bytes_per_token);
    assert_eq!(cost(exact).mean_kl, 0.0);
    for c in [q4, i8] {
        let k = cost(c);
        assert!(
            k.mean_kl > 0.0 && k.max_kl >= k.mean_kl,
            "{:?}: {k:?}",
            c.dtype
        );
        assert!((0.0..=1.0).contains(&k.same_top1));
    }
    // 4 bits cost more than 8.
    assert!(cost(q4).mean_kl > cost(i8).mean_kl);
    assert_eq!(choice.positions, 2 * (64 - 1 - 32));
    // A bound of 0 keeps the exact head; each lossy head is chosen from its own cost up.
    assert_eq!(choice.chosen, HeadDtype::Auto);
    let c = &choice.candidates;
    assert_eq!(pick(c, cost(i8).mean_kl * 0.99), HeadDtype::Auto);
    assert_eq!(pick(c, cost(i8).mean_kl), HeadDtype::I8);
    assert_eq!(pick(c, cost(q4).mean_kl * 0.99), HeadDtype::I8);
    assert_eq!(pick(c, cost(q4).mean_kl), HeadDtype::Q4);
    assert_eq!(pick(c, f64::MAX), HeadDtype::Q4);
    // A head that could not be built is never chosen.
    let mut unbuilt = c.clone();
    unbuilt[1].cost = Err("rows too long".into());
    assert_eq!(pick(&unbuilt, f64::MAX), HeadDtype::I8);
    let summary = choice.summary();
    assert!(
        summary.starts_with("lm_head: the exact head (auto)"),
        "{summary}"
    );
    assert!(
        summary.contains("q4 ") && summary.contains("i8 "),
        "{summary}"
    );
}

#[test]
fn bad_bounds_and_artifacts_are_refused() {
    let options = bitnetc::Options::default();
    for bound in [-1.0, f64::NAN, f64::INFINITY] {
        let e = bitnetc::choose_head(&packed(), &options, bound).unwrap_err();
        assert!(e.to_string().contains("--head-kl-bound"), "{e}");
    }
    let o = bitnetc(&[
        "run",
        packed().to_str().unwrap(),
        "--tokens",
        "1,2,3",
        "-n",
        "1",
        "--head-dtype",
        "i8",
        "--head-kl-bound",
        "1",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--head-dtype auto, not i8"), "{err}");
    // The same check for each model `serve` is given, before it listens.
    let o = bitnetc(&[
        "serve",
        packed().to_str().unwrap(),
        "--port",
        "0",
        "--head-dtype",
        "q4",
        "--head-kl-bound",
        "1",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--head-dtype auto, not q4"), "{err}");

    // A model whose context is shorter than the measuring window: the error says which flag.
    let short = Scratch::create("head-choice-short");
    for f in std::fs::read_dir(packed()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, short.join(f.file_name().unwrap())).unwrap();
    }
    let config = std::fs::read_to_string(short.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config).unwrap();
    config["max_position_embeddings"] = 32.into();
    std::fs::write(short.join("config.json"), config.to_string()).unwrap();
    let e = bitnetc::choose_head(&short, &options, 1.0).unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("--head-kl-bound (the model built for windows of 64 tokens)"),
        "{e}"
    );
    assert!(e.contains("more than the model's 32"), "{e}");

    if !support::have_cc("bad_bounds_and_artifacts_are_refused") {
        return;
    }
    let scratch = Scratch::create("head-choice-artifact");
    let artifact = scratch.join("tiny.bnx");
    let a = artifact.to_str().unwrap();
    let o = bitnetc(&["compile", packed().to_str().unwrap(), "-o", a]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bitnetc(&[
        "run",
        a,
        "--tokens",
        "1,2,3",
        "-n",
        "1",
        "--head-kl-bound",
        "1",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("an artifact's lm_head was chosen when it was compiled"),
        "{err}"
    );
}

#[test]
fn run_builds_the_head_it_chose() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            packed().to_str().unwrap().to_owned().leak(),
            "--tokens",
            "1,17,256,5",
            "-n",
            "6",
            "--greedy",
            "--threads",
            "1",
        ];
        args.extend_from_slice(extra);
        let o = bitnetc(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let chosen = run(&["--head-kl-bound", "1e9"]);
    let err = String::from_utf8_lossy(&chosen.stderr);
    assert!(err.contains("lm_head: q4 ("), "{err}");
    let q4 = run(&["--head-dtype", "q4"]);
    assert_eq!(chosen.stdout, q4.stdout);
}
