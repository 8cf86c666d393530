//! `bitnetc train`: one training step against PyTorch (tests/fixtures/train-step, made by
//! scripts/fixtures/make_train_step.py with autograd, clip_grad_norm_ and torch.optim.AdamW), and
//! the command end to end on the micro preset: the loss falls, checkpoints resume bit for bit, the
//! trained folder loads as a model, and bad flags are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_train::checkpoint::{ModelShape, f32_tensors};
use bitnet_train::optim::{AdamW, Schedule};
use bitnet_train::trainer::{Engine, TrainOptions, Trainer};
use std::collections::BTreeMap;
use std::path::Path;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train-step")
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn one_training_step_matches_pytorch() {
    let dir = fixture();
    let step: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("step.json")).unwrap()).unwrap();
    let m = &step["model"];
    let u = |v: &serde_json::Value| v.as_u64().unwrap();
    let model = ModelShape {
        vocab: u(&m["vocab"]),
        hidden: u(&m["hidden"]),
        intermediate: u(&m["intermediate"]),
        layers: u(&m["layers"]),
        heads: u(&m["heads"]),
        kv_heads: u(&m["kv_heads"]),
        max_positions: 64,
        rms_eps: m["rms_eps"].as_f64().unwrap(),
        rope_theta: m["rope_theta"].as_f64().unwrap(),
        bos: 1,
        eos: 2,
    };
    let seq = u(&step["seq"]) as usize;
    let options = TrainOptions {
        steps: 1,
        batch: 2,
        seq,
        lr: step["lr"].as_f64().unwrap(),
        warmup: 0,
        schedule: Schedule::Constant,
        adamw: AdamW {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: step["weight_decay"].as_f64().unwrap(),
        },
        clip: step["clip"].as_f64().unwrap(),
        seed: 0,
        eval_windows: 1,
        checkpoint_blocks: false,
        engine: Engine::Interpreter,
    };
    let mut t = Trainer::new(model, options).unwrap();
    let init = f32_tensors(&dir.join("init.safetensors")).unwrap();
    assert_eq!(
        init.keys().collect::<Vec<_>>(),
        t.params.keys().collect::<Vec<_>>(),
        "the fixture and the trainer name the same parameters"
    );
    t.params = init;
    // Both windows' losses and the mean gradient.
    // The interpreter's sweep and the compiled step, each against torch.
    let mut total: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut compiled_total: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let compiled_step = t.compile_step().unwrap();
    let windows = step["windows"].as_array().unwrap();
    for (b, w) in windows.iter().enumerate() {
        let ids: Vec<u32> = w.as_array().unwrap().iter().map(|v| u(v) as u32).collect();
        let (loss, grads) = t.gradients(&ids[..seq], &ids[1..]).unwrap();
        let (compiled_loss, compiled_grads, _) = t
            .compiled_gradients(&compiled_step, &ids[..seq], &ids[1..], None)
            .unwrap();
        let want = step["losses"][b].as_f64().unwrap();
        for (engine, l) in [("interpreter", loss), ("compiled", compiled_loss)] {
            assert!(
                rel(l, want) < 1e-5,
                "window {b}: the {engine}'s loss {l} vs torch {want}"
            );
        }
        for (sum, grads) in [(&mut total, grads), (&mut compiled_total, compiled_grads)] {
            for (n, g) in grads {
                let acc = sum.entry(n).or_insert_with(|| vec![0.0; g.len()]);
                acc.iter_mut()
                    .zip(&g)
                    .for_each(|(a, v)| *a += v / windows.len() as f64);
            }
        }
    }
    // Gradients, element by element, relative to each tensor's largest.
    let torch_grads = f32_tensors(&dir.join("grads.safetensors")).unwrap();
    let mut worst = 0f64;
    for ((engine, grads), (n, tg)) in [("interpreter", &total), ("compiled", &compiled_total)]
        .into_iter()
        .flat_map(|e| torch_grads.iter().map(move |t| (e, t)))
    {
        let ours = &grads[n];
        let tg = tg.data.to_f64();
        let scale = tg.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        let err = ours
            .iter()
            .zip(&tg)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs() / scale));
        worst = worst.max(err);
        assert!(
            err < 1e-4,
            "{engine}: {n}: gradient differs from torch's by {err} of its largest"
        );
        let norm = ours.iter().map(|v| v * v).sum::<f64>().sqrt();
        let want = step["grad_norms"][n].as_f64().unwrap();
        assert!(
            rel(norm, want) < 1e-4,
            "{engine}: {n}: |g| {norm} vs torch {want}"
        );
    }
    eprintln!("largest gradient difference: {worst:.2e} of the tensor's largest element");
    // Checkpointing per block recomputes instead of storing: the same gradients bit for bit, with
    // fewer forward values held at once.
    let ids: Vec<u32> = windows[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u(v) as u32)
        .collect();
    let stored = t.sweep(&ids[..seq], &ids[1..], None).unwrap();
    // The training step written as IR (`nn.vjp` ops after the forward ops) gives the sweep's loss
    // and gradients bit for bit.
    let step_ir = t.step_function(bitnet_ir::ElemType::F64).unwrap();
    let vjps = step_ir
        .function
        .ops
        .iter()
        .filter(|o| o.kind == bitnet_ir::OpKind::Vjp)
        .count();
    assert!(vjps > 0, "the step function has no nn.vjp");
    let (emitted_loss, emitted) = t
        .emitted_gradients(&step_ir, &ids[..seq], &ids[1..])
        .unwrap();
    assert_eq!(emitted_loss.to_bits(), stored.loss.to_bits());
    assert_eq!(emitted, stored.weights, "the step function's gradients");
    eprintln!(
        "the step function: {} ops, {vjps} nn.vjp",
        step_ir.function.ops.len()
    );
    // Narrower cotangents (each rule still in f64, its result and the sums rounded): how far the
    // gradients move from the f64 sweep's, relative to each tensor's largest element.
    for (elem, bound) in [
        (bitnet_ir::ElemType::F32, 1e-5),
        (bitnet_ir::ElemType::BF16, 5e-2),
    ] {
        let narrow = t.step_function(elem).unwrap();
        let (l, grads) = t
            .emitted_gradients(&narrow, &ids[..seq], &ids[1..])
            .unwrap();
        assert_eq!(
            l.to_bits(),
            stored.loss.to_bits(),
            "{elem}: the loss is forward"
        );
        let mut worst = (0f64, String::new());
        for (n, g) in &grads {
            let want = &stored.weights[n];
            let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
            let err = g
                .iter()
                .zip(want)
                .fold(0f64, |m, (a, b)| m.max((a - b).abs() / scale));
            if err > worst.0 {
                worst = (err, n.clone());
            }
        }
        eprintln!(
            "{elem} cotangents: gradients within {:.2e} of each tensor's largest (worst {})",
            worst.0, worst.1
        );
        assert!(
            worst.0 < bound,
            "{elem} cotangents: {} differs by {:.2e} of its largest",
            worst.1,
            worst.0
        );
    }
    // The step lowered for the CPU gives the f32 step function's loss and gradients bit for bit,
    // with the weight-only values computed once or not.
    let f32_step = t.step_function(bitnet_ir::ElemType::F32).unwrap();
    let (want_loss, want) = t
        .emitted_gradients(&f32_step, &ids[..seq], &ids[1..])
        .unwrap();
    let compiled = t.compile_step().unwrap();
    let frozen = t.freeze_compiled(&compiled).unwrap();
    for fz in [None, Some(&frozen)] {
        let (l, g, held) = t
            .compiled_gradients(&compiled, &ids[..seq], &ids[1..], fz)
            .unwrap();
        assert!(held > 0, "the compiled step measures what it holds");
        assert_eq!(l.to_bits(), want_loss.to_bits(), "compiled loss");
        assert_eq!(g, want, "compiled gradients (frozen: {})", fz.is_some());
    }
    // The training function lowered the same way (the held-out loss of `--engine compiled`) gives
    // the interpreter's loss bit for bit.
    let forward =
        bitnet_backends::cpu::step::StepPlan::new(t.function(), &[("T", seq as u64)]).unwrap();
    let inputs = bitnet_train::graph::step_inputs(&t.spec.config, &ids[..seq], &ids[1..]).unwrap();
    let store = bitnet_ir::weights::MemoryWeights {
        tensors: t.params.clone(),
        ..Default::default()
    };
    let fz = forward.freeze(&store, 2).unwrap();
    let out = forward.run(&inputs, Some(&fz), &store).unwrap();
    assert_eq!(
        out[0].data.to_f64()[0].to_bits(),
        t.loss(&ids[..seq], &ids[1..], None).unwrap().to_bits(),
        "the compiled forward's loss"
    );
    // Checkpointed per block, the compiled step recomputes each block before its backward ops:
    // the same bits, fewer bytes held at once.
    let (_, _, held) = t
        .compiled_gradients(&compiled, &ids[..seq], &ids[1..], Some(&frozen))
        .unwrap();
    t.options.checkpoint_blocks = true;
    let checkpointed = t.compile_step().unwrap();
    t.options.checkpoint_blocks = false;
    // The weight-only values on two threads: the same values.
    t.threads = 2;
    let cf = t.freeze_compiled(&checkpointed).unwrap();
    t.threads = 1;
    for fz in [None, Some(&cf)] {
        let (l, g, held_checkpointed) = t
            .compiled_gradients(&checkpointed, &ids[..seq], &ids[1..], fz)
            .unwrap();
        assert_eq!(
            l.to_bits(),
            want_loss.to_bits(),
            "checkpointed compiled loss"
        );
        assert_eq!(g, want, "checkpointed compiled gradients");
        if fz.is_some() {
            eprintln!("the compiled step held {held} bytes, checkpointed {held_checkpointed}");
            assert!(held_checkpointed < held, "{held_checkpointed} >= {held}");
        }
    }
    let coverage = compiled.plan().coverage();
    eprintln!(
        "the compiled step: {} ops native, interpreted: {:?}",
        coverage.native, coverage.interpreted
    );
    assert!(coverage.native > 0, "no op of the step runs natively");
    t.options.checkpoint_blocks = true;
    let recomputed = t.sweep(&ids[..seq], &ids[1..], None).unwrap();
    t.options.checkpoint_blocks = false;
    assert_eq!(stored.weights, recomputed.weights);
    assert_eq!(stored.loss, recomputed.loss);
    assert!(
        recomputed.peak_value_bytes < stored.peak_value_bytes,
        "checkpointing held {} bytes, storing {}",
        recomputed.peak_value_bytes,
        stored.peak_value_bytes
    );
    assert!(recomputed.ops_evaluated > stored.ops_evaluated);
    eprintln!(
        "forward values held: {} bytes stored, {} checkpointed per block",
        stored.peak_value_bytes, recomputed.peak_value_bytes
    );
    // The weight-only values computed once (`Trainer::freeze`, what a step shares between its
    // windows): the same loss and gradients to the bit, with and without checkpointing, and fewer
    // ops evaluated per window.
    let bits = |g: &BTreeMap<String, Vec<f64>>| -> BTreeMap<String, Vec<u64>> {
        g.iter()
            .map(|(n, v)| (n.clone(), v.iter().map(|x| x.to_bits()).collect()))
            .collect()
    };
    let frozen = t.freeze().unwrap();
    for checkpoint in [false, true] {
        t.options.checkpoint_blocks = checkpoint;
        let shared = t.sweep(&ids[..seq], &ids[1..], Some(&frozen)).unwrap();
        assert_eq!(
            bits(&shared.weights),
            bits(&stored.weights),
            "checkpoint {checkpoint}"
        );
        assert_eq!(shared.loss.to_bits(), stored.loss.to_bits());
        let without = if checkpoint {
            recomputed.ops_evaluated
        } else {
            stored.ops_evaluated
        };
        assert!(shared.ops_evaluated < without);
        eprintln!(
            "frozen weight values ({} bytes), checkpoint {checkpoint}: {} ops evaluated per window instead of {without}",
            frozen.bytes(),
            shared.ops_evaluated,
        );
    }
    t.options.checkpoint_blocks = false;
    assert_eq!(
        t.loss(&ids[..seq], &ids[1..], Some(&frozen))
            .unwrap()
            .to_bits(),
        t.loss(&ids[..seq], &ids[1..], None).unwrap().to_bits()
    );
    let (norm, _) = t.apply(total);
    let want = step["total_grad_norm"].as_f64().unwrap();
    assert!(rel(norm, want) < 1e-4, "global norm {norm} vs torch {want}");
    // The update: AdamW's first step moves each weight by about lr·sign(g), so a gradient within
    // rounding noise of zero could go either way; every other weight must agree closely.
    let updated = f32_tensors(&dir.join("updated.safetensors")).unwrap();
    let lr = step["lr"].as_f64().unwrap();
    for (n, want) in &updated {
        let ours = t.params[n].data.to_f64();
        let tg = torch_grads[n].data.to_f64();
        let scale = tg.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        for (k, (a, b)) in ours.iter().zip(want.data.to_f64()).enumerate() {
            let tolerance = if tg[k].abs() > 1e-3 * scale {
                1e-6
            } else {
                2.0 * lr
            };
            assert!(
                (a - b).abs() <= tolerance,
                "{n}[{k}]: updated {a} vs torch {b} (gradient {})",
                tg[k]
            );
        }
    }
}

fn bitnetc(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args(args)
        .output()
        .unwrap()
}

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bitnetc-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A short run on the micro preset: `steps` steps of 2×16 tokens (unless `extra` says otherwise),
/// held-out loss every 4.
fn train(out: &Path, steps: u64, extra: &[&str]) -> std::process::Output {
    let steps = steps.to_string();
    let seq = if extra.contains(&"--seq") {
        None
    } else {
        Some("16")
    };
    let mut args = vec![
        "train",
        "--preset",
        "micro",
        "--steps",
        &steps,
        "--batch",
        "2",
        "--eval-every",
        "4",
        "--eval-windows",
        "2",
        "--lr",
        "1e-2",
        "-o",
        out.to_str().unwrap(),
    ];
    if let Some(seq) = seq {
        args.extend(["--seq", seq]);
    }
    args.extend_from_slice(extra);
    bitnetc(&args)
}

fn state(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("trainer_state.json")).unwrap()).unwrap()
}

#[test]
fn training_lowers_the_loss_and_resumes_bit_for_bit() {
    // Uninterrupted: 16 steps, checkpoints every 8.
    let full = temp("full");
    let o = train(&full, 16, &["--checkpoint-every", "8", "--threads", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = state(&full);
    let losses: Vec<f64> = s["history"]["train"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 16);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&losses[12..]) < mean(&losses[..4]) - 0.3,
        "the training loss does not fall: {losses:?}"
    );
    let heldout: Vec<f64> = s["history"]["heldout"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    assert_eq!(heldout.len(), 4, "held-out loss at steps 4, 8, 12 and 16");
    assert!(heldout[3] < heldout[0], "held-out loss {heldout:?}");
    // One thread or several: the same run, bit for bit.
    let single = temp("single");
    let o = train(&single, 16, &["--threads", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read(full.join("model.safetensors")).unwrap()
            == std::fs::read(single.join("model.safetensors")).unwrap(),
        "the weights depend on the thread count"
    );
    std::fs::remove_dir_all(&single).unwrap();
    // Resumed from the step-8 checkpoint to 16: the same weights, moments and history, bit for bit.
    let resumed = temp("resumed");
    let ckpt = full.join("checkpoint-8");
    let o = bitnetc(&[
        "train",
        "--resume",
        ckpt.to_str().unwrap(),
        "--steps",
        "16",
        "--eval-every",
        "4",
        "-o",
        resumed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in [
        "model.safetensors",
        "optimizer.safetensors",
        "tokenizer.json",
    ] {
        assert!(
            std::fs::read(full.join(file)).unwrap() == std::fs::read(resumed.join(file)).unwrap(),
            "{file} differs between the uninterrupted and the resumed run"
        );
    }
    assert_eq!(state(&full)["history"], state(&resumed)["history"]);
    // A resumed run keeps the checkpoint's options: giving one again is refused, not ignored.
    let o = bitnetc(&[
        "train",
        "--resume",
        ckpt.to_str().unwrap(),
        "--steps",
        "16",
        "--lr",
        "1e-3",
        "-o",
        temp("resumed-lr").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--lr"), "{err}");
    // The trained folder is a model: bitnetc runs it (online BitNet form, its own tokenizer).
    let o = bitnetc(&[
        "run",
        full.to_str().unwrap(),
        "--prompt",
        "In the beginning",
        "-n",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for d in [full, resumed] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn the_compiled_engine_trains_and_resumes_bit_for_bit() {
    let full = temp("compiled");
    let o = train(
        &full,
        12,
        &[
            "--engine",
            "compiled",
            "--checkpoint-every",
            "6",
            "--threads",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = state(&full);
    assert_eq!(
        s["options"]["engine"], "compiled",
        "the checkpoint records the engine"
    );
    let losses: Vec<f64> = s["history"]["train"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&losses[9..]) < mean(&losses[..3]) - 0.3,
        "the training loss does not fall: {losses:?}"
    );
    // Resumed from step 6 (with the checkpoint's engine): the same weights and moments.
    let resumed = temp("compiled-resumed");
    let ckpt = full.join("checkpoint-6");
    let o = bitnetc(&[
        "train",
        "--resume",
        ckpt.to_str().unwrap(),
        "--steps",
        "12",
        "--eval-every",
        "4",
        "--threads",
        "1",
        "-o",
        resumed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in ["model.safetensors", "optimizer.safetensors"] {
        assert!(
            std::fs::read(full.join(file)).unwrap() == std::fs::read(resumed.join(file)).unwrap(),
            "{file} differs between the uninterrupted and the resumed compiled run"
        );
    }
    // The compiled step is the default; the interpreter is chosen by name. The checkpoint says
    // which.
    for (extra, engine) in [
        (&[][..], "compiled"),
        (&["--engine", "interpreter"][..], "interpreter"),
        (
            &["--engine", "interpreter", "--checkpoint-blocks"][..],
            "interpreter",
        ),
    ] {
        let d = temp("default-engine");
        let o = train(&d, 2, extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(state(&d)["options"]["engine"], engine, "{extra:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
    // Checkpointed per block, the compiled step trains to the same bytes.
    let blocks = temp("compiled-blocks");
    let o = train(
        &blocks,
        12,
        &[
            "--engine",
            "compiled",
            "--checkpoint-blocks",
            "--threads",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read(full.join("model.safetensors")).unwrap()
            == std::fs::read(blocks.join("model.safetensors")).unwrap(),
        "checkpointing per block changed the compiled run's weights"
    );
    std::fs::remove_dir_all(&blocks).unwrap();
    for d in [full, resumed] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn train_refuses_bad_flags_and_keeps_what_exists() {
    let out = temp("exists");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let o = train(&out, 2, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    std::fs::remove_dir_all(&out).unwrap();
    let fresh = temp("fresh");
    let o = train(&fresh, 2, &["--seq", "100000"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--seq 100000"), "{err}");
    let o = train(&fresh, 2, &["--text", "/nonexistent/text.txt"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("/nonexistent/text.txt"),
        "{err}"
    );
    assert!(!fresh.exists(), "a refused run leaves no output folder");
    let o = bitnetc(&[
        "train",
        "--resume",
        "/nonexistent/ckpt",
        "-o",
        fresh.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("/nonexistent/ckpt"),
        "{err}"
    );
}

/// The f32 tensors of a safetensors file.
fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    f32_tensors(path)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.data.to_f32()))
        .collect()
}

/// One step of negligible learning rate from `init` (`--init`), written to `out`.
fn step_from(init: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "--init", init.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend([
        "--steps",
        "1",
        "--seq",
        "16",
        "--batch",
        "1",
        "--lr",
        "1e-12",
        "--eval-windows",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    bitnetc(&args)
}

#[test]
fn init_starts_from_a_models_weights() {
    // A trained folder (online master weights) as the starting point: a step with a negligible
    // learning rate leaves its weights where they were.
    let first = temp("init-first");
    let o = train(&first, 2, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again = temp("init-again");
    let o = step_from(&first, &again, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (
        tensors(&first.join("model.safetensors")),
        tensors(&again.join("model.safetensors")),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (n, v) in &a {
        let d = v
            .iter()
            .zip(&b[n])
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(d < 1e-6, "{n} moved by {d}");
    }
    assert_eq!(
        std::fs::read(first.join("tokenizer.json")).unwrap(),
        std::fs::read(again.join("tokenizer.json")).unwrap(),
        "the init model's tokenizer is kept"
    );
    // A packed checkpoint (bitnetc synth): its projections start at γ·t, three values each.
    let packed = temp("init-packed");
    let o = bitnetc(&["synth", "--preset", "micro", "-o", packed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let from_packed = temp("init-from-packed");
    let tk = first.join("tokenizer.json");
    let o = step_from(
        &packed,
        &from_packed,
        &["--tokenizer", tk.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let w = tensors(&from_packed.join("model.safetensors"));
    let q = &w["model.layers.0.self_attn.q_proj.weight"];
    let gamma = q.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(gamma > 0.0);
    for v in q {
        let near = [-gamma, 0.0, gamma].iter().any(|c| (v - c).abs() < 1e-6);
        assert!(near, "{v} is not one of ±{gamma} or 0");
    }
    // Exported with its master weights (`export --with-masters`), the trained folder restarts from
    // them, not from γ·t: a negligible step leaves them in place.
    let exported = temp("init-exported");
    let o = bitnetc(&[
        "export",
        first.to_str().unwrap(),
        "-o",
        exported.to_str().unwrap(),
        "--format",
        "hf",
        "--with-masters",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let from_masters = temp("init-from-masters");
    let o = step_from(&exported, &from_masters, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m = tensors(&from_masters.join("model.safetensors"));
    for (n, v) in &a {
        let d = v
            .iter()
            .zip(&m[n])
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            d < 1e-6,
            "{n} moved by {d} through export --with-masters and --init"
        );
    }
    for d in [exported, from_masters] {
        std::fs::remove_dir_all(d).unwrap();
    }
    // Without a tokenizer, a folder that has none is refused by name.
    let o = bitnetc(&[
        "train",
        "--init",
        packed.to_str().unwrap(),
        "--steps",
        "1",
        "-o",
        temp("init-none").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("tokenizer.json"),
        "{err}"
    );
    for d in [first, again, packed, from_packed] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_killed_run_leaves_only_whole_checkpoints() {
    // A checkpoint every step, the process killed mid-run: every checkpoint folder there is
    // complete and loads; what was being written is at most a hidden staging folder.
    let out = temp("killed");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args([
            "--audit-log",
            "off",
            "train",
            "--preset",
            "micro",
            "--steps",
            "1000",
            "--batch",
            "1",
            "--seq",
            "16",
            "--eval-every",
            "0",
            "--checkpoint-every",
            "1",
            "-o",
            out.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first checkpoint (however slow the machine), then kill a little later.
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(120)
        && !std::fs::read_dir(&out).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("checkpoint-")))
        })
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let mut whole = 0;
    for e in std::fs::read_dir(&out).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        assert!(name.starts_with("checkpoint-"), "unexpected {name}");
        let ckpt = bitnet_train::checkpoint::load(&e.path())
            .unwrap_or_else(|err| panic!("{name} is not a whole checkpoint: {err}"));
        assert_eq!(format!("checkpoint-{}", ckpt.state.step), name);
        whole += 1;
    }
    assert!(whole > 0, "no checkpoint was written before the kill");
    std::fs::remove_dir_all(&out).unwrap();
}
