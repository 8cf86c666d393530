//! Chat-template text (Jinja, Hugging Face's dialect) → `ChatFormat::new` with the hf-tiny
//! tokenizer (loaded once) → `render` of a fixed four-message conversation (with or without the
//! generation prompt, as the first byte's second bit says) and `encode` of it; the template also
//! goes through an artifact section (`to_section` → `from_section`) unchanged. A template that does
//! not parse or fails to render is an `Err`; none may panic, and none may run for long (the
//! script's `-timeout`), so inputs are bounded to `MAX_LEN` bytes. The `strftime_now` clock is
//! fixed so that runs repeat.
#![no_main]

use bitnet_runtime::chat::{BosRule, ChatFormat, ChatTemplate, Message};
use bitnet_runtime::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Longer inputs are skipped (the largest template llama.cpp ships is ~17 KB).
const MAX_LEN: usize = 20_000;

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf-tiny/packed");
        Tokenizer::from_hf_dir(&dir).expect("hf-tiny tokenizer")
    })
}

fn messages() -> &'static [Message] {
    static M: OnceLock<Vec<Message>> = OnceLock::new();
    M.get_or_init(|| {
        vec![
            Message::system("You are terse."),
            Message::user("Hi, what is 2 + 2?"),
            Message::assistant("4."),
            Message::user("Und auf Deutsch? ü ✓"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_LEN {
        return;
    }
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let bos = if data.first().is_some_and(|b| b & 1 == 1) {
        BosRule::Once
    } else {
        BosRule::AsWritten
    };
    let template = ChatTemplate {
        source: source.to_string(),
        origin: "fuzz.jinja".into(),
        bos_token: Some("<s>".into()),
        eos_token: None,
        bos,
    };
    let section = template.to_section();
    let back = ChatTemplate::from_section(&section, "fuzz.bnx").expect("to_section → from_section");
    assert_eq!(back.source, template.source);
    let tok = tokenizer();
    let Ok(format) = ChatFormat::new(Some(template), tok) else {
        return;
    };
    format.set_clock(1_700_000_000);
    let m = messages();
    // One render per input (the second bit picks the generation prompt), to keep runs fast.
    let prompt = data.first().is_some_and(|b| b & 2 == 2);
    if let Ok(text) = format.render(m, prompt) {
        // Encoding is bounded by the rendered size; long renders are not re-tokenized.
        if text.len() <= 4096 {
            let _ = format.encode(tok, m, prompt);
        }
    }
});
