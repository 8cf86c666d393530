//! The `tokenizer.ggml.*` metadata of an exported GGUF: copied key by key from a GGUF source, or
//! built from an HF folder's `tokenizer.json` (a byte-level BPE vocabulary: tokens by id, token
//! types, merges, the pre-tokenizer's name), `config.json`'s bos/eos ids, `tokenizer_config.json`'s
//! `add_bos_token` and chat template (or `chat_template.jinja`).

use super::Source;
use crate::detect::ModelFormat;
use crate::error::FrontendError;
use crate::gguf::{GgufArray, GgufFile, GgufValue};
use serde_json::Value;
use std::path::Path;

/// Llama 3's split regex as its `tokenizer.json` spells it (GGUF pre-tokenizer `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (GGUF pre-tokenizer `qwen2`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Metadata key/values, in the order written.
pub(super) type Metadata = Vec<(String, GgufValue)>;

/// GGUF token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// The tokenizer metadata for `src` with `vocab` tokens, and notes on what could not be written.
pub(super) fn tokenizer_metadata(
    src: &Source,
    vocab: usize,
) -> Result<(Metadata, Vec<String>), FrontendError> {
    match src.format {
        ModelFormat::Gguf => {
            let file = GgufFile::open(&src.path)?;
            let kv: Vec<(String, GgufValue)> = file
                .metadata()
                .iter()
                .filter(|(k, _)| k.starts_with("tokenizer."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let notes = if kv.is_empty() {
                vec!["the source GGUF has no tokenizer metadata; none written".to_string()]
            } else {
                Vec::new()
            };
            Ok((kv, notes))
        }
        _ => from_hf(&src.path, vocab),
    }
}

fn read_json(path: &Path) -> Result<Option<Value>, FrontendError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| FrontendError::format(path, format!("malformed JSON: {e}")))
}

/// The GGUF name of a `tokenizer.json` pre-tokenizer, if it is one GGUF names.
fn pre_name(pre: &Value) -> Option<&'static str> {
    let ty = pre.get("type").and_then(Value::as_str)?;
    match ty {
        "ByteLevel" if pre.get("use_regex").and_then(Value::as_bool) != Some(false) => {
            Some("gpt-2")
        }
        "Sequence" => {
            let steps = pre.get("pretokenizers").and_then(Value::as_array)?;
            let regex = steps
                .iter()
                .filter(|s| s.get("type").and_then(Value::as_str) == Some("Split"))
                .filter_map(|s| s.get("pattern")?.get("Regex")?.as_str())
                .collect::<Vec<_>>();
            let byte_level = steps.iter().any(|s| {
                s.get("type").and_then(Value::as_str) == Some("ByteLevel")
                    && s.get("use_regex").and_then(Value::as_bool) == Some(false)
            });
            match (regex.as_slice(), byte_level) {
                ([r], true) if *r == LLAMA3_SPLIT => Some("llama-bpe"),
                ([r], true) if *r == QWEN2_SPLIT => Some("qwen2"),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A token id from a config value (a number, or a list whose first element is one).
fn id_of(v: Option<&Value>) -> Option<u32> {
    let v = v?;
    let v = v.as_array().and_then(|a| a.first()).unwrap_or(v);
    v.as_u64().and_then(|x| u32::try_from(x).ok())
}

fn from_hf(dir: &Path, vocab: usize) -> Result<(Metadata, Vec<String>), FrontendError> {
    let path = dir.join("tokenizer.json");
    let Some(tok) = read_json(&path)? else {
        return Ok((
            Vec::new(),
            vec!["the source has no tokenizer.json: no tokenizer metadata written".into()],
        ));
    };
    let model = tok.get("model").cloned().unwrap_or(Value::Null);
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Ok((
            Vec::new(),
            vec![format!(
                "{}: not a BPE tokenizer; no tokenizer metadata written",
                path.display()
            )],
        ));
    }
    let Some(pre) = tok.get("pre_tokenizer").and_then(pre_name) else {
        return Ok((
            Vec::new(),
            vec![format!(
                "{}: the pre-tokenizer is not one GGUF names (gpt-2, llama-bpe, qwen2); no \
                 tokenizer metadata written",
                path.display()
            )],
        ));
    };
    let bad = |m: String| FrontendError::format(&path, m);
    let map = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("model.vocab is not an object".into()))?;
    let added = tok
        .get("added_tokens")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut entries: Vec<(usize, String, i32)> = Vec::new();
    for (t, id) in map {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("model.vocab[\"{t}\"] is not a token id")))?;
        entries.push((id as usize, t.clone(), NORMAL));
    }
    for a in &added {
        let (Some(id), Some(content)) = (
            a.get("id").and_then(Value::as_u64),
            a.get("content").and_then(Value::as_str),
        ) else {
            return Err(bad("an added token has no id or content".into()));
        };
        let ty = if a.get("special").and_then(Value::as_bool) == Some(true) {
            CONTROL
        } else {
            USER_DEFINED
        };
        entries.push((id as usize, content.to_string(), ty));
    }
    let n = entries
        .iter()
        .map(|e| e.0 + 1)
        .max()
        .unwrap_or(0)
        .max(vocab);
    if n > vocab {
        return Err(bad(format!(
            "token ids reach {}, but the model's vocabulary has {vocab} rows",
            n - 1
        )));
    }
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![UNUSED; n];
    for (id, t, ty) in entries {
        if let Some(slot) = tokens.get_mut(id) {
            *slot = Some(t);
            types[id] = ty;
        }
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    let mut merges = Vec::new();
    for m in model
        .get("merges")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        match m {
            Value::String(s) => merges.push(s.clone()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => merges.push(format!("{a} {b}")),
                _ => return Err(bad(format!("model.merges: {m} is not a pair of strings"))),
            },
            _ => return Err(bad(format!("model.merges: {m} is not a merge"))),
        }
    }
    let config = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
    let tcfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
    let s = |v: &str| GgufValue::String(v.to_string());
    let mut kv = vec![
        ("tokenizer.ggml.model".to_string(), s("gpt2")),
        ("tokenizer.ggml.pre".to_string(), s(pre)),
        (
            "tokenizer.ggml.tokens".to_string(),
            GgufValue::Array(GgufArray::String(tokens)),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::Array(GgufArray::I32(types)),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            GgufValue::Array(GgufArray::String(merges)),
        ),
    ];
    for (key, field) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
    ] {
        if let Some(id) = id_of(config.get(field)).filter(|&id| (id as usize) < n) {
            kv.push((key.to_string(), GgufValue::U32(id)));
        }
    }
    let add_bos = tcfg
        .get("add_bos_token")
        .and_then(Value::as_bool)
        .or_else(|| {
            // The post-processor's template: a special token first means bos is added.
            let pp = tok.get("post_processor")?;
            let steps = match pp.get("processors").and_then(Value::as_array) {
                Some(steps) => steps.clone(),
                None => vec![pp.clone()],
            };
            let tp = steps
                .iter()
                .find(|s| s.get("type").and_then(Value::as_str) == Some("TemplateProcessing"))?;
            let first = tp.get("single")?.as_array()?.first()?;
            Some(first.get("SpecialToken").is_some())
        });
    if let Some(b) = add_bos {
        kv.push(("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(b)));
    }
    let template = match tcfg.get("chat_template").and_then(Value::as_str) {
        Some(t) => Some(t.to_string()),
        None => {
            let jinja = dir.join("chat_template.jinja");
            if jinja.is_file() {
                Some(
                    std::fs::read_to_string(&jinja).map_err(|source| FrontendError::Io {
                        path: jinja.clone(),
                        source,
                    })?,
                )
            } else {
                None
            }
        }
    };
    if let Some(t) = template {
        kv.push(("tokenizer.chat_template".into(), GgufValue::String(t)));
    }
    // Sorted by key, as a GGUF source's keys are copied, so that exporting an exported GGUF gives
    // the same bytes.
    kv.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((kv, Vec::new()))
}
