//! Batched steps (`Executor::forward_batch`): several sequences, each in its own KV slot, share one
//! step, and each sequence's logits are bit for bit those it gets alone with the same feeds.
//!
//! Each model runs a schedule in which sequences join at different steps, prefill in chunks of
//! different sizes and then decode greedily, so steps mix prompt chunks and single tokens at
//! different positions; the reference is each sequence run alone through `forward_last` in a
//! fresh executor. Models: the ternary 2B-4T form (relu², tied head), a dense GGUF Llama (SiLU,
//! GQA, untied head) on its f32 and int8 dense paths, a ternary Llama with q/k/v biases, and an
//! AOT artifact (the launch plan's per-sequence marks survive the manifest). The server's `SlotBatch`
//! splits steps past the context and fails only a feed at fault.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bitnetc::backends::cpu::HeadDtype;
use bitnetc::runtime::{Executor, RuntimeError, SeqFeed};
use support::{argmax, root};

/// One sequence of the schedule: its prompt, when it joins, its prefill chunk, its decode steps.
struct Plan {
    prompt: Vec<i64>,
    joins: usize,
    chunk: usize,
    decode: usize,
}

/// Deterministic token ids below `vocab`.
fn tokens(seed: u64, n: usize, vocab: u64) -> Vec<i64> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab) as i64
        })
        .collect()
}

fn plans(vocab: u64) -> Vec<Plan> {
    [
        (7, 0, 3, 6),
        (1, 0, 1, 8),
        (12, 1, 5, 4),
        (4, 2, 16, 7),
        (9, 4, 2, 3),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(len, joins, chunk, decode))| Plan {
        prompt: tokens(i as u64 + 1, len, vocab),
        joins,
        chunk,
        decode,
    })
    .collect()
}

/// What a sequence feeds at each of its steps: prompt chunks, then each chosen token. Returns the
/// feeds and the logits after each, running `run(tokens, pos)` for the logits.
fn drive(plan: &Plan, mut run: impl FnMut(&[i64], u64) -> Vec<f32>) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < plan.prompt.len() {
        let end = (pos + plan.chunk).min(plan.prompt.len());
        out.push(run(&plan.prompt[pos..end], pos as u64));
        pos = end;
    }
    for _ in 0..plan.decode {
        let next = argmax(out.last().unwrap());
        out.push(run(&[next], pos as u64));
        pos += 1;
    }
    out
}

/// Every sequence alone, in a fresh sibling of `exec`.
fn alone(exec: &Executor, plans: &[Plan]) -> Vec<Vec<Vec<f32>>> {
    plans
        .iter()
        .map(|p| {
            let mut e = exec.sibling().unwrap();
            drive(p, |t, pos| e.forward_last(t, pos).unwrap().to_vec())
        })
        .collect()
}

/// Every sequence in one executor with a slot each, all active sequences in every step.
fn together(exec: &Executor, plans: &[Plan]) -> Vec<Vec<Vec<f32>>> {
    let mut batch = exec.with_slots(plans.len()).unwrap();
    let vocab = exec.program().vocab as usize;
    let mut logits: Vec<Vec<Vec<f32>>> = vec![Vec::new(); plans.len()];
    let mut pos = vec![0usize; plans.len()];
    let mut mixed = 0;
    for step in 0.. {
        let mut feeds: Vec<(usize, Vec<i64>, u64)> = Vec::new();
        for (s, p) in plans.iter().enumerate() {
            let steps_total = p.prompt.len().div_ceil(p.chunk) + p.decode;
            if step < p.joins || logits[s].len() == steps_total {
                continue;
            }
            let t = if pos[s] < p.prompt.len() {
                p.prompt[pos[s]..(pos[s] + p.chunk).min(p.prompt.len())].to_vec()
            } else {
                vec![argmax(logits[s].last().unwrap())]
            };
            feeds.push((s, t, pos[s] as u64));
        }
        if feeds.is_empty() {
            break;
        }
        if feeds.len() > 1 && feeds.iter().any(|f| f.1.len() > 1) {
            mixed += 1;
        }
        // Feeds in an order that is not the slots' order.
        feeds.reverse();
        let view: Vec<SeqFeed<'_>> = feeds
            .iter()
            .map(|(s, t, p)| SeqFeed {
                slot: *s,
                tokens: t,
                pos: *p,
            })
            .collect();
        let out = batch.forward_batch(&view).unwrap().to_vec();
        assert_eq!(out.len(), feeds.len() * vocab);
        for (i, (s, t, _)) in feeds.iter().enumerate() {
            logits[*s].push(out[i * vocab..(i + 1) * vocab].to_vec());
            pos[*s] += t.len();
        }
    }
    assert!(
        mixed > 2,
        "the schedule must mix prompt chunks with decoding"
    );
    logits
}

fn check(what: &str, exec: &Executor) {
    assert!(exec.batchable(), "{what}: the program must be batchable");
    let plans = plans(exec.program().vocab);
    let want = alone(exec, &plans);
    let got = together(exec, &plans);
    for (s, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.len(), g.len(), "{what}: sequence {s} steps");
        for (k, (a, b)) in w.iter().zip(g).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{what}: sequence {s}, step {k}: batched logits differ"
            );
        }
    }
}

fn compile(path: &std::path::Path, dense: HeadDtype) -> Executor {
    let mut m = bitnetc::OpenOptions {
        context: Some(64),
        quantize: None,
    }
    .open(path)
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let options = bitnetc::CpuOptions {
        dense,
        ..bitnetc::CpuOptions::with_threads(2)
    };
    bitnetc::compile_cpu(&mut m, &options).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn ternary_2b4t_form_batches_bit_for_bit() {
    let path = root().join("tests/fixtures/hf-tiny/packed");
    check("hf-tiny", &compile(&path, HeadDtype::Auto));
}

#[test]
fn dense_llama_batches_bit_for_bit_on_f32_and_int8_paths() {
    let path = root().join("tests/fixtures/gguf-llama/llama-q8_0.gguf");
    check("gguf-llama f32", &compile(&path, HeadDtype::Auto));
    check("gguf-llama i8", &compile(&path, HeadDtype::I8));
}

#[test]
fn ternary_llama_with_biases_batches_bit_for_bit() {
    let path = root().join("tests/fixtures/hf-llama/ternary_tied_bias");
    check(
        "hf-llama ternary_tied_bias",
        &compile(&path, HeadDtype::Auto),
    );
}

#[test]
fn artifact_batches_bit_for_bit() {
    if !support::have_cc("artifact_batches_bit_for_bit") {
        return;
    }
    let mut m = bitnetc::OpenOptions {
        context: Some(64),
        quantize: None,
    }
    .open(&root().join("tests/fixtures/hf-tiny/packed"))
    .unwrap();
    let options = bitnetc::ArtifactOptions {
        cpu: bitnetc::CpuOptions::with_threads(2),
        ..bitnetc::ArtifactOptions::default()
    };
    let bytes = bitnetc::compile_cpu_object(&mut m, &options)
        .and_then(|object| object.link(None))
        .unwrap();
    let dir = support::Scratch::create("batched-artifact");
    let path = dir.join("model.bnx");
    std::fs::write(&path, bytes).unwrap();
    let exec = bitnet_runtime::artifact::load(&path, 2).unwrap();
    check("hf-tiny artifact", &exec);
}

#[test]
fn bad_batches_are_refused_by_name() {
    let exec = compile(
        &root().join("tests/fixtures/hf-tiny/packed"),
        HeadDtype::Auto,
    );
    let mut batch = exec.with_slots(2).unwrap();
    let a = [1i64, 2, 3];
    let feed = |slot, tokens, pos| SeqFeed { slot, tokens, pos };
    let err = |r: Result<&[f32], RuntimeError>| r.err().map(|e| e.to_string()).unwrap();
    let e = err(batch.forward_batch(&[feed(0, &a, 0), feed(0, &a, 3)]));
    assert!(e.contains("KV slot 0"), "{e}");
    let e = err(batch.forward_batch(&[feed(2, &a, 0)]));
    assert!(e.contains("KV slot 2 does not exist"), "{e}");
    let e = err(batch.forward_batch(&[feed(0, &a, 62)]));
    assert!(e.contains("context overflow"), "{e}");
    let long = vec![1i64; 40];
    let e = err(batch.forward_batch(&[feed(0, &long, 0), feed(1, &long, 0)]));
    assert!(e.contains("80 tokens exceeds the context length 64"), "{e}");
    let e = err(batch.forward_batch(&[feed(0, &[], 0)]));
    assert!(e.contains("no tokens"), "{e}");
    let e = err(batch.forward_batch(&[]));
    assert!(e.contains("no tokens"), "{e}");
    assert!(exec.with_slots(0).is_err());
}

/// The server's `SlotBatch`: feeds that together exceed the context are split over several batched
/// steps, and a feed with its own error (a token outside the vocabulary) fails alone while the
/// others of its step get their logits, equal to each sequence's alone.
#[test]
fn server_slots_split_long_steps_and_fail_only_the_bad_feed() {
    use bitnet_serve::{Feed, SlotBatch, StepModel};
    let exec = compile(
        &root().join("tests/fixtures/hf-tiny/packed"),
        HeadDtype::Auto,
    );
    let vocab = exec.program().vocab;
    let mut slots = SlotBatch::new(&exec, 3).unwrap();
    let a = tokens(11, 40, vocab);
    let b = tokens(12, 40, vocab);
    let bad = [vocab as i64 + 5];
    let feeds = [
        Feed {
            slot: 0,
            tokens: &a,
            pos: 0,
        },
        Feed {
            slot: 1,
            tokens: &b,
            pos: 0,
        },
        Feed {
            slot: 2,
            tokens: &bad,
            pos: 0,
        },
    ];
    let mut got: Vec<(usize, Result<Vec<f32>, String>)> = Vec::new();
    slots.step(&feeds, &mut |i, r| {
        got.push((i, r.map(<[f32]>::to_vec).map_err(|e| e.to_string())))
    });
    got.sort_by_key(|g| g.0);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 2]);
    for (i, prompt) in [(0, &a), (1, &b)] {
        let mut alone = exec.sibling().unwrap();
        let want = alone.forward_last(prompt, 0).unwrap();
        let have = got[i].1.as_ref().unwrap();
        assert!(
            want.iter()
                .zip(have)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "feed {i}: logits differ from the sequence alone"
        );
    }
    let e = got[2].1.as_ref().unwrap_err();
    assert!(e.contains("outside the vocabulary"), "{e}");
}
