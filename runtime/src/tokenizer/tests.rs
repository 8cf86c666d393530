//! Unit tests of the tokenizer: byte-level round trips, streaming, the Llama 3 split, GGUF errors.

use super::*;

/// GPT-2's byte → character table (`bytes_to_unicode`): printable Latin-1 bytes map to
/// themselves, the others to U+0100 onwards, in byte order.
fn byte_chars() -> Vec<char> {
    let mut out = vec!['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        let keep = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if keep {
            b
        } else {
            next += 1;
            next - 1
        };
        out[b as usize] = char::from_u32(c).unwrap();
    }
    out
}

/// A byte-level tokenizer whose ids 0..256 are the bytes, then `<s>` (256) and `</s>` (257),
/// then the merged tokens of `merges`.
fn byte_vocab(merges: &[&str], pre: Option<&str>) -> GgufVocab {
    let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
    tokens.push("<s>".into());
    tokens.push("</s>".into());
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut token_types = vec![1; tokens.len()];
    token_types[256] = 3;
    token_types[257] = 3;
    GgufVocab {
        model: "gpt2".into(),
        pre: pre.map(str::to_string),
        tokens,
        token_types,
        merges: merges.iter().map(|m| m.to_string()).collect(),
        bos: Some(256),
        eos: Some(257),
        add_bos: Some(true),
        ..GgufVocab::default()
    }
}

fn byte_tokenizer() -> Tokenizer {
    // One merge: a BPE model needs at least one, and this one never fires on the tests' bytes.
    Tokenizer::from_gguf_vocab(&byte_vocab(&["1 2"], None), "bytes.gguf").unwrap()
}

fn byte_ids(bytes: &[u8]) -> Vec<u32> {
    bytes.iter().map(|&b| u32::from(b)).collect()
}

/// Streams `ids` and returns the pieces, the last one from `finish`.
fn stream(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut s = tok.decode_stream(true);
    let mut pieces: Vec<String> = ids.iter().map(|&id| s.step(id).unwrap()).collect();
    pieces.push(s.finish().unwrap());
    pieces
}

#[test]
fn byte_tokens_round_trip() {
    let tok = byte_tokenizer();
    let text = "héllo, wörld € 😀";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(ids[0], 256, "bos is prepended");
    assert_eq!(&ids[1..], byte_ids(text.as_bytes()).as_slice());
    assert_eq!(tok.decode(&ids, true).unwrap(), text);
    assert_eq!(tok.decode(&ids, false).unwrap(), format!("<s>{text}"));
    assert_eq!(tok.bos(), Some(256));
    assert_eq!(tok.eos(), &[257]);
    assert_eq!(tok.token_id("</s>"), Some(257));
    assert_eq!(tok.vocab_size(), 259);
    assert_eq!(tok.token_text(u32::from(b' ')).as_deref(), Some(" "));
    assert_eq!(
        tok.token_text(0xC3).as_deref(),
        Some("Ã"),
        "a lone lead byte shows its entry"
    );
    assert_eq!(tok.token_text(999), None);
}

#[test]
fn stream_holds_back_split_characters() {
    let tok = byte_tokenizer();
    // é is C3 A9, € is E2 82 AC, 😀 is F0 9F 98 80: each arrives byte by byte.
    let text = "aé€😀b";
    let pieces = stream(&tok, &byte_ids(text.as_bytes()));
    let expected: Vec<&str> = vec!["a", "", "é", "", "", "€", "", "", "", "😀", "b", ""];
    assert_eq!(pieces, expected);
    assert_eq!(pieces.concat(), text);
}

#[test]
fn stream_ends_lossily_like_decode() {
    let tok = byte_tokenizer();
    // A truncated character at the end, a stray continuation byte, and an interrupted
    // sequence in the middle, around special tokens the stream skips.
    let cases: Vec<Vec<u32>> = vec![
        vec![256, u32::from(b'x'), 0xE2, 0x82],
        vec![0x80, 0x80, u32::from(b'#'), 257],
        vec![0xE2, 0x82, u32::from(b'a'), 0xC3, 257, 0xA9],
        vec![0xF0, 0x9F, 0x98],
    ];
    for ids in cases {
        let pieces = stream(&tok, &ids);
        let whole = tok.decode(&ids, true).unwrap();
        assert!(whole.contains('\u{FFFD}'), "{ids:?}");
        assert_eq!(pieces.concat(), whole, "{ids:?}: {pieces:?}");
    }
}

#[test]
fn stream_concatenation_equals_decode_on_random_bytes() {
    let tok = byte_tokenizer();
    // A fixed linear congruential generator; bytes drawn mostly from UTF-8 lead and
    // continuation ranges so that valid, truncated and invalid sequences all occur.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 33) as u32
    };
    for _ in 0..300 {
        let len = next() % 24;
        let ids: Vec<u32> = (0..len)
            .map(|_| match next() % 6 {
                0 => next() % 128,
                1 => 0xC2 + next() % 30,
                2 => 0xE0 + next() % 16,
                3 => 0xF0 + next() % 5,
                4 => 256 + next() % 2,
                _ => 0x80 + next() % 64,
            })
            .collect();
        let pieces = stream(&tok, &ids);
        let bytes: Vec<u8> = ids
            .iter()
            .filter(|&&id| id < 256)
            .map(|&id| id as u8)
            .collect();
        let lossy = String::from_utf8_lossy(&bytes);
        assert_eq!(tok.decode(&ids, true).unwrap(), lossy);
        assert_eq!(pieces.concat(), lossy, "{ids:?}: {pieces:?}");
        for p in &pieces[..pieces.len() - 1] {
            assert!(!p.ends_with('\u{FFFD}'), "{ids:?}: a step returned {p:?}");
        }
    }
}

#[test]
fn unknown_ids_are_errors_naming_the_source() {
    let tok = byte_tokenizer();
    let e = tok.decode(&[1, 5000], true).unwrap_err();
    assert!(
        matches!(e, TokenizerError::IdOutOfRange { id: 5000, .. }),
        "{e}"
    );
    assert!(e.to_string().starts_with("bytes.gguf: "), "{e}");
    assert!(tok.decode_stream(true).step(5000).is_err());
    assert!(tok.clone().with_special_ids(Some(7), vec![9999]).is_err());
}

#[test]
fn llama3_split_groups_digits_by_three() {
    // "12345": the GPT-2 split keeps one pre-token and merges "3 4" first (12|34|5); Llama 3's
    // splits "123" | "45" before merging.
    let merges = ["3 4", "1 2", "12 3", "4 5"];
    let gpt2 = Tokenizer::from_gguf_vocab(&byte_vocab(&merges, Some("gpt-2")), "a").unwrap();
    let llama = Tokenizer::from_gguf_vocab(&byte_vocab(&merges, Some("llama-bpe")), "b").unwrap();
    let text = |tok: &Tokenizer| -> Vec<String> {
        let ids = tok.encode("12345", false).unwrap();
        ids.iter().map(|&id| tok.token_text(id).unwrap()).collect()
    };
    assert_eq!(text(&gpt2), ["12", "34", "5"]);
    assert_eq!(text(&llama), ["123", "45"]);
}

#[test]
fn gguf_errors_name_the_file_and_field() {
    let mut v = byte_vocab(&["1 2"], None);
    v.model = "t5".into();
    let e = Tokenizer::from_gguf_vocab(&v, "m.gguf").unwrap_err();
    assert!(matches!(e, TokenizerError::Unsupported { .. }), "{e}");
    assert!(
        e.to_string().contains("m.gguf") && e.to_string().contains("'t5'"),
        "{e}"
    );
    v.model = "llama".into();
    let e = Tokenizer::from_gguf_vocab(&v, "m.gguf").unwrap_err();
    assert!(matches!(e, TokenizerError::MissingField { .. }), "{e}");
    assert!(e.to_string().contains("tokenizer.ggml.scores"), "{e}");
    v.scores = vec![0.0; 3];
    let e = Tokenizer::from_gguf_vocab(&v, "m.gguf").unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.scores"), "{e}");

    // An unknown pre-tokenizer names itself and every name that is known.
    let mut v = byte_vocab(&["1 2"], Some("deepseek-llm"));
    let e = Tokenizer::from_gguf_vocab(&v, "m.gguf").unwrap_err();
    assert!(matches!(e, TokenizerError::Unsupported { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("m.gguf: ") && msg.contains("'deepseek-llm'"),
        "{msg}"
    );
    for known in ["'gpt-2'", "'llama-bpe'", "'falcon3'", "'qwen2'", "'smollm'"] {
        assert!(msg.contains(known), "{msg} lacks {known}");
    }
    v.pre = None;
    v.merges = vec!["12".into()];
    let e = Tokenizer::from_gguf_vocab(&v, "m.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    v.merges = vec!["1 2".into()];
    v.bos = Some(100_000);
    let e = Tokenizer::from_gguf_vocab(&v, "m.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.ggml.bos_token_id"), "{e}");
    v.bos = None;
    v.add_bos = Some(true);
    let e = Tokenizer::from_gguf_vocab(&v, "m.gguf").unwrap_err();
    assert!(matches!(e, TokenizerError::MissingField { .. }), "{e}");
    v.add_bos = None;
    v.unk = Some(300);
    let e = Tokenizer::from_gguf_vocab(&v, "m.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.ggml.unknown_token_id"), "{e}");
    v.unk = None;
    v.eos = None;
    v.add_eos = Some(true);
    let e = Tokenizer::from_gguf_vocab(&v, "m.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.ggml.eos_token_id"), "{e}");
    v.add_eos = None;
    v.token_types.pop();
    let e = Tokenizer::from_gguf_vocab(&v, "m.gguf")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.ggml.token_type"), "{e}");
}

#[test]
fn no_bos_when_add_bos_is_false_and_json_round_trips() {
    let mut v = byte_vocab(&["1 2"], None);
    v.add_bos = Some(false);
    let tok = Tokenizer::from_gguf_vocab(&v, "m.gguf").unwrap();
    assert_eq!(tok.encode("12", true).unwrap(), [258]);
    let json = byte_tokenizer().to_json().unwrap();
    let back = Tokenizer::from_json_bytes(json.as_bytes(), "t.json").unwrap();
    assert_eq!(back.encode("a12", true).unwrap(), [256, 97, 258]);
    assert_eq!(back.to_json().unwrap(), json);
    let e = Tokenizer::from_json_bytes(&json.as_bytes()[..json.len() / 2], "t.json").unwrap_err();
    assert!(matches!(e, TokenizerError::Json { .. }) && e.to_string().starts_with("t.json: "));
}

#[test]
fn bos_and_eos_follow_the_file_or_the_family_default() {
    let encode = |pre: Option<&str>, add_bos: Option<bool>, add_eos: Option<bool>| {
        let mut v = byte_vocab(&["1 2"], pre);
        (v.add_bos, v.add_eos) = (add_bos, add_eos);
        let tok = Tokenizer::from_gguf_vocab(&v, "m.gguf").unwrap();
        (
            tok.encode("a12", true).unwrap(),
            tok.encode("a12", false).unwrap(),
        )
    };
    // Unsaid: bos for Llama 3's family only, as llama.cpp does; never eos.
    assert_eq!(encode(Some("llama-bpe"), None, None).0, [256, 97, 258]);
    assert_eq!(encode(Some("gpt-2"), None, None).0, [97, 258]);
    // Qwen2 and SmolLM split digits one by one, so "1 2" never merges.
    assert_eq!(encode(Some("qwen2"), None, None).0, [97, 49, 50]);
    assert_eq!(encode(Some("smollm"), None, None).0, [97, 49, 50]);
    // Said: the file decides.
    assert_eq!(encode(Some("llama-bpe"), Some(false), None).0, [97, 258]);
    assert_eq!(
        encode(Some("gpt-2"), Some(true), Some(true)).0,
        [256, 97, 258, 257]
    );
    assert_eq!(encode(None, Some(false), Some(true)).0, [97, 258, 257]);
    assert_eq!(encode(None, Some(true), Some(true)).1, [97, 258]);
}

/// A SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then pieces.
fn spm_vocab(pieces: &[(&str, f32)], add_space_prefix: Option<bool>) -> GgufVocab {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut token_types = vec![2, 3, 3];
    let mut scores = vec![0.0; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        token_types.push(6);
        scores.push(0.0);
    }
    for (piece, score) in pieces {
        tokens.push(piece.to_string());
        token_types.push(1);
        scores.push(*score);
    }
    GgufVocab {
        model: "llama".into(),
        pre: Some("default".into()),
        tokens,
        token_types,
        scores,
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        add_space_prefix,
        ..GgufVocab::default()
    }
}

#[test]
fn sentencepiece_merges_by_score_with_byte_fallback() {
    let pieces = [
        ("\u{2581}", -1.0),
        ("h", -2.0),
        ("i", -3.0),
        ("\u{2581}h", -4.0),
        ("hi", -5.0),
        ("\u{2581}hi", -6.0),
    ];
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab(&pieces, None), "spm.gguf").unwrap();
    let id = |t: &str| tok.token_id(t).unwrap();
    // "▁hi": "▁h" (-4) merges before "hi" (-5), then "▁h"+"i" makes "▁hi".
    assert_eq!(tok.encode("hi", true).unwrap(), [1, id("\u{2581}hi")]);
    // A space inside becomes "▁"; "é" is not a piece, so it falls back to its two bytes.
    let ids = tok.encode("hi é", false).unwrap();
    assert_eq!(
        ids,
        [id("\u{2581}hi"), id("\u{2581}"), id("<0xC3>"), id("<0xA9>")]
    );
    assert_eq!(tok.decode(&ids, false).unwrap(), "hi é");
    // A control token in the text stays whole, and the text after it gets its own "▁".
    assert_eq!(
        tok.encode("hi</s>hi", false).unwrap(),
        [id("\u{2581}hi"), 2, id("\u{2581}hi")]
    );
    // Without the space prefix, "hi" is "hi" and decodes with no space to strip.
    let bare = Tokenizer::from_gguf_vocab(&spm_vocab(&pieces, Some(false)), "spm.gguf").unwrap();
    assert_eq!(bare.encode("hi", false).unwrap(), [id("hi")]);
    assert_eq!(bare.decode(&[id("\u{2581}hi")], false).unwrap(), " hi");
    // The JSON an artifact stores reloads to the same tokenizer.
    let json = tok.to_json().unwrap();
    let back = Tokenizer::from_json_bytes(json.as_bytes(), "t.json").unwrap();
    assert_eq!(
        back.encode("hi é</s>", true).unwrap(),
        tok.encode("hi é</s>", true).unwrap()
    );
    assert_eq!(back.to_json().unwrap(), json);
}

#[test]
fn stream_over_byte_fallback_never_fails() {
    let pieces = [("\u{2581}", -1.0), ("a", -2.0), ("\u{2581}a", -3.0)];
    let tok = Tokenizer::from_gguf_vocab(&spm_vocab(&pieces, None), "spm.gguf").unwrap();
    let id = |t: &str| tok.token_id(t).unwrap();
    let byte = |b: u8| id(&format!("<0x{b:02X}>"));
    // "▁a€a": the euro sign as three byte tokens, released only when whole.
    let ids = [id("\u{2581}a"), byte(0xE2), byte(0x82), byte(0xAC), id("a")];
    assert_eq!(stream(&tok, &ids), ["a", "", "", "€", "a", ""]);
    assert_eq!(stream(&tok, &ids).concat(), tok.decode(&ids, true).unwrap());
    // A stray lead byte after the euro sign: decode turns the whole run into U+FFFD per byte; the
    // stream keeps the euro sign it returned and marks the stray byte.
    let ids = [byte(0xE2), byte(0x82), byte(0xAC), byte(0xE2), id("a")];
    assert_eq!(tok.decode(&ids, true).unwrap(), "\u{FFFD}".repeat(4) + "a");
    assert_eq!(stream(&tok, &ids).concat(), "€\u{FFFD}a");
    let ids = [byte(0xE2), byte(0x82), byte(0xAC), byte(0xE2)];
    assert_eq!(stream(&tok, &ids).concat(), "€\u{FFFD}");
}
