//! [`ChatTemplate`]: a chat template's Jinja text and where it came from, and how it is found in a
//! model's files: a Hugging Face folder's `chat_template.jinja`, else `chat_template` in its
//! `tokenizer_config.json` (a string, or a list of `{name, template}` of which `default` is taken);
//! a GGUF file's `tokenizer.chat_template` (read by the caller, which owns the GGUF reader); an
//! artifact's `chat_template` section (JSON written by [`ChatTemplate::to_section`]).

use super::ChatError;
use serde_json::Value;
use std::path::Path;

/// Whether the rendered prompt gets the tokenizer's begin-of-text token besides what the template
/// writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BosRule {
    /// transformers: only what the template writes (the text is encoded without added tokens).
    AsWritten,
    /// llama.cpp: the tokenizer's bos once: added when the tokenizer adds bos to text and the
    /// rendered prompt does not start with it.
    Once,
}

impl BosRule {
    fn name(self) -> &'static str {
        match self {
            BosRule::AsWritten => "as_written",
            BosRule::Once => "once",
        }
    }
}

/// A chat template (Jinja) and what it needs besides the conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatTemplate {
    /// The Jinja text.
    pub source: String,
    /// Where it came from, as messages name it (`…/tokenizer_config.json (chat_template)`).
    pub origin: String,
    /// The `bos_token` the template sees, when the model names it (`tokenizer_config.json`);
    /// otherwise the tokenizer's bos token is used.
    pub bos_token: Option<String>,
    /// The `eos_token` the template sees, when the model names it; otherwise the tokenizer's first
    /// end-of-sequence token.
    pub eos_token: Option<String>,
    /// Whether the tokenizer's bos is added to the rendered text.
    pub bos: BosRule,
}

impl ChatTemplate {
    /// The template of a Hugging Face folder: `chat_template.jinja` when present (transformers
    /// prefers it), else `chat_template` in `tokenizer_config.json`; `None` when neither exists.
    /// The special tokens come from `tokenizer_config.json`.
    pub fn from_hf_dir(dir: &Path) -> Result<Option<ChatTemplate>, ChatError> {
        let config_path = dir.join("tokenizer_config.json");
        let config_file = config_path.display().to_string();
        let config: Option<Value> = if config_path.is_file() {
            let text = read(&config_path)?;
            Some(serde_json::from_str(&text).map_err(|e| ChatError::Field {
                file: config_file.clone(),
                field: "(the whole file)".into(),
                message: format!("not JSON: {e}"),
            })?)
        } else {
            None
        };
        let jinja = dir.join("chat_template.jinja");
        let mut template = if jinja.is_file() {
            ChatTemplate {
                source: read(&jinja)?,
                origin: jinja.display().to_string(),
                bos_token: None,
                eos_token: None,
                bos: BosRule::AsWritten,
            }
        } else {
            match &config {
                Some(c) => match from_tokenizer_config(c, &config_file)? {
                    Some(t) => t,
                    None => return Ok(None),
                },
                None => return Ok(None),
            }
        };
        if let Some(c) = &config {
            template.bos_token = special_token(c, "bos_token", &config_file)?;
            template.eos_token = special_token(c, "eos_token", &config_file)?;
        }
        Ok(Some(template))
    }

    /// A GGUF file's `tokenizer.chat_template`; `file` names the GGUF file. llama.cpp's rule for
    /// bos applies.
    pub fn from_gguf(source: &str, file: &str) -> ChatTemplate {
        ChatTemplate {
            source: source.to_string(),
            origin: format!("{file} (tokenizer.chat_template)"),
            bos_token: None,
            eos_token: None,
            bos: BosRule::Once,
        }
    }

    /// The template as an artifact's `chat_template` section: JSON with sorted keys (`bos`,
    /// `bos_token`, `eos_token`, `origin`, `source`).
    pub fn to_section(&self) -> Vec<u8> {
        let mut m = serde_json::Map::new();
        m.insert("bos".into(), self.bos.name().into());
        m.insert("bos_token".into(), self.bos_token.clone().into());
        m.insert("eos_token".into(), self.eos_token.clone().into());
        m.insert("origin".into(), self.origin.clone().into());
        m.insert("source".into(), self.source.clone().into());
        Value::Object(m).to_string().into_bytes()
    }

    /// Reads an artifact's `chat_template` section; `artifact` names the artifact in messages,
    /// and becomes the template's origin.
    pub fn from_section(bytes: &[u8], artifact: &str) -> Result<ChatTemplate, ChatError> {
        let file = format!("{artifact} (chat_template section)");
        let bad = |field: &str, message: String| ChatError::Field {
            file: file.clone(),
            field: field.into(),
            message,
        };
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| bad("(the section)", format!("not JSON: {e}")))?;
        let string = |field: &str| -> Result<Option<String>, ChatError> {
            match &v[field] {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                other => Err(bad(field, format!("{other} is not a string"))),
            }
        };
        let source = string("source")?.ok_or_else(|| bad("source", "missing".into()))?;
        let bos = match v["bos"].as_str() {
            Some("as_written") => BosRule::AsWritten,
            Some("once") => BosRule::Once,
            _ => {
                return Err(bad(
                    "bos",
                    format!("{} is not \"as_written\" or \"once\"", v["bos"]),
                ));
            }
        };
        let origin = match string("origin")? {
            Some(o) => format!("{file}, from {o}"),
            None => file.clone(),
        };
        Ok(ChatTemplate {
            source,
            origin,
            bos_token: string("bos_token")?,
            eos_token: string("eos_token")?,
            bos,
        })
    }
}

/// The `chat_template` field of a parsed `tokenizer_config.json` (`file` names it): a string, or a
/// list of `{"name", "template"}` of which `default` is taken; `None` when absent or null.
pub(super) fn from_tokenizer_config(
    config: &Value,
    file: &str,
) -> Result<Option<ChatTemplate>, ChatError> {
    let bad = |message: String| ChatError::Field {
        file: file.to_string(),
        field: "chat_template".into(),
        message,
    };
    let source = match config.get("chat_template") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) => {
            let mut names = Vec::new();
            let mut found = None;
            for entry in list {
                let name = entry.get("name").and_then(Value::as_str);
                let template = entry.get("template").and_then(Value::as_str);
                let (Some(name), Some(template)) = (name, template) else {
                    return Err(bad(format!(
                        "{entry} is not {{\"name\": …, \"template\": …}}"
                    )));
                };
                if name == "default" {
                    found = Some(template.to_string());
                }
                names.push(name.to_string());
            }
            found.ok_or_else(|| {
                bad(format!(
                    "a list of templates without \"default\" (it has {})",
                    names.join(", ")
                ))
            })?
        }
        Some(other) => {
            return Err(bad(format!(
                "{other} is neither a string nor a list of templates"
            )));
        }
    };
    Ok(Some(ChatTemplate {
        source,
        origin: format!("{file} (chat_template)"),
        bos_token: special_token(config, "bos_token", file)?,
        eos_token: special_token(config, "eos_token", file)?,
        bos: BosRule::AsWritten,
    }))
}

/// A special token of `tokenizer_config.json`: a string or an `AddedToken` object
/// (`{"content": …}`); `None` when absent or null.
fn special_token(config: &Value, field: &str, file: &str) -> Result<Option<String>, ChatError> {
    match config.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(ChatError::Field {
                file: file.to_string(),
                field: field.to_string(),
                message: "an object without a string \"content\"".into(),
            }),
        },
        Some(other) => Err(ChatError::Field {
            file: file.to_string(),
            field: field.to_string(),
            message: format!("{other} is not a token"),
        }),
    }
}

fn read(path: &Path) -> Result<String, ChatError> {
    std::fs::read_to_string(path).map_err(|e| ChatError::Io {
        file: path.display().to_string(),
        message: e.to_string(),
    })
}
