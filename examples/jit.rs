//! Compile a model in-process and talk to it: the JIT API in a few lines.
//!
//! `cargo run --release --example jit [MODEL] [PROMPT]` (default: the bundled hf-tiny model and the
//! prompt of its reference). CI runs it.

use bitnetc::{GenerateParams, Options, SamplingParams};
use std::io::Write;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/packed"),
        PathBuf::from,
    );
    let prompt = args
        .next()
        .unwrap_or_else(|| "Return a new sorted list from the items in iterable.".into());

    // Compile for this CPU (an artifact .bnx would be loaded instead).
    let model = bitnetc::compile(&model, &Options::default())?;
    println!(
        "compiled {} in {:.2} s ({} weight bytes, context {})",
        model.source.display(),
        model.compile_time.as_secs_f64(),
        model.weight_bytes,
        model.context()
    );

    // A session owns the KV cache; generation streams tokens and text.
    let mut session = model.session()?;
    let ids = session.encode(&prompt)?;
    let params = GenerateParams {
        max_tokens: 16,
        sampling: SamplingParams::greedy(),
        ..GenerateParams::default()
    };
    print!("{prompt}");
    let out = session.generate(&ids, &params, &mut |_, text| {
        print!("{text}");
        let _ = std::io::stdout().flush();
    })?;
    println!();
    println!(
        "{} new tokens {:?}, stopped by {}",
        out.tokens.len(),
        out.tokens,
        out.stop.name()
    );

    // Logits for scripts: `forward` runs tokens after the context and returns their logits.
    session.reset();
    let vocab = session.vocab() as usize;
    let logits = session.forward(&ids)?;
    let last = &logits[logits.len() - vocab..];
    let best = bitnet_runtime::sampling::argmax(last);
    println!(
        "argmax after the prompt: {best} (= the first generated token {})",
        out.tokens[0]
    );
    Ok(())
}
