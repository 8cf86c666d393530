//! Reading the body of `/v1/completions` and `/v1/chat/completions`: JSON checked field by field, so
//! that a wrong type or value is a 400 naming the field. Unknown fields are ignored (clients send
//! many); `null` counts as absent.
//!
//! Fields read: `model`; `prompt` (a string or an array of token ids) or `messages` (roles
//! `system`/`developer`, `user`, `assistant`; content a string or an array of text parts);
//! `max_tokens` / `max_completion_tokens`; `temperature` (0–2, default 1, 0 is greedy); `top_p`
//! (in (0, 1], default 1); `seed` (default: a random one); `stop` (a string or up to 4); `stream`;
//! `stream_options.include_usage` (with `stream` only); `n` (1 only); and `return_token_ids` (an
//! extension: the prompt's and the output's token ids in the response).

use crate::chat_prompt::Role;
use crate::error::ApiError;
use serde_json::{Map, Value};

/// The most stop strings a request may give (as OpenAI).
const MAX_STOPS: usize = 4;

/// What both routes read.
#[derive(Clone, Debug, PartialEq)]
pub struct Common {
    /// The model's id.
    pub model: String,
    /// The most new tokens, if given.
    pub max_tokens: Option<usize>,
    /// 0: greedy.
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: f32,
    /// The sampling seed, if given.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Stream server-sent events.
    pub stream: bool,
    /// With `stream`: a last chunk with the usage.
    pub include_usage: bool,
    /// Put the token ids in the response (extension).
    pub return_token_ids: bool,
}

/// A completion's prompt.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// Text, encoded with the model's tokenizer (with its special tokens).
    Text(String),
    /// Token ids, as they are.
    Tokens(Vec<u32>),
}

/// The fields of a JSON object, read with type checks.
pub(crate) struct Fields<'a>(pub(crate) &'a Map<String, Value>);

pub(crate) fn type_error(name: &str, want: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::invalid(
        name,
        "invalid_type",
        format!("Invalid type for '{name}': expected {want}, but got {got} instead."),
    )
}

impl<'a> Fields<'a> {
    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(type_error(name, "a string", v)),
        }
    }

    pub(crate) fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(type_error(name, "a boolean", v)),
        }
    }

    pub(crate) fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| type_error(name, "an integer", v)),
        }
    }

    pub(crate) fn number(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| type_error(name, "a number", v)),
        }
    }
}

/// Parses the body as a JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_body(
            "The request body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::bad_body(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

/// Reads the fields both routes share.
pub fn common(map: &Map<String, Value>) -> Result<Common, ApiError> {
    let f = Fields(map);
    let model = f.string("model")?.ok_or_else(|| {
        ApiError::invalid(
            "model",
            "missing_required_parameter",
            "Missing required parameter: 'model'.".into(),
        )
    })?;
    let max_tokens = match f.integer("max_completion_tokens")? {
        Some(n) => Some((n, "max_completion_tokens")),
        None => f.integer("max_tokens")?.map(|n| (n, "max_tokens")),
    };
    let max_tokens = match max_tokens {
        None => None,
        Some((n, name)) if n < 1 => {
            return Err(ApiError::invalid(
                name,
                "invalid_value",
                format!("Invalid '{name}': {n} is below the minimum of 1."),
            ));
        }
        Some((n, _)) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let temperature = f.number("temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            "invalid_value",
            format!("Invalid 'temperature': {temperature} is not in [0, 2]."),
        ));
    }
    let top_p = f.number("top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            "invalid_value",
            format!("Invalid 'top_p': {top_p} is not in (0, 1]."),
        ));
    }
    // A negative seed is taken as its two's complement bits, so every integer is a seed.
    let seed = f.integer("seed")?.map(|s| s as u64);
    let stop = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOPS {
                return Err(ApiError::invalid(
                    "stop",
                    "invalid_value",
                    format!(
                        "Invalid 'stop': {} strings, at most {MAX_STOPS}.",
                        items.len()
                    ),
                ));
            }
            let mut stop = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => stop.push(s.clone()),
                    v => return Err(type_error(&format!("stop[{i}]"), "a string", v)),
                }
            }
            stop
        }
        Some(v) => return Err(type_error("stop", "a string or an array of strings", v)),
    };
    let stream = f.bool("stream")?.unwrap_or(false);
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(o)) if stream => Fields(o)
            .bool("include_usage")
            .map_err(|mut e| {
                e.param = Some("stream_options.include_usage".into());
                e
            })?
            .unwrap_or(false),
        Some(Value::Object(_)) => {
            return Err(ApiError::invalid(
                "stream_options",
                "invalid_value",
                "Invalid 'stream_options': only allowed when 'stream' is true.".into(),
            ));
        }
        Some(v) => return Err(type_error("stream_options", "an object", v)),
    };
    match f.integer("n")? {
        None | Some(1) => {}
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                "invalid_value",
                format!("Invalid 'n': {n}; this server generates one choice per request (n = 1)."),
            ));
        }
    }
    Ok(Common {
        model: model.to_string(),
        max_tokens,
        temperature: temperature as f32,
        top_p: top_p as f32,
        seed,
        stop,
        stream,
        include_usage,
        return_token_ids: f.bool("return_token_ids")?.unwrap_or(false),
    })
}

/// Reads `prompt`: a string or an array of token ids.
pub fn prompt(map: &Map<String, Value>) -> Result<Prompt, ApiError> {
    let missing = || {
        ApiError::invalid(
            "prompt",
            "missing_required_parameter",
            "Missing required parameter: 'prompt'.".into(),
        )
    };
    match Fields(map).get("prompt").ok_or_else(missing)? {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            let mut ids = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let id = item.as_u64().and_then(|x| u32::try_from(x).ok());
                ids.push(id.ok_or_else(|| {
                    type_error(&format!("prompt[{i}]"), "a token id (an integer ≥ 0)", item)
                })?);
            }
            Ok(Prompt::Tokens(ids))
        }
        Value::Array(_) => Err(ApiError::invalid(
            "prompt",
            "invalid_type",
            "Invalid 'prompt': give one prompt, a string or an array of token ids (a batch of prompts is not supported)."
                .into(),
        )),
        v => Err(type_error("prompt", "a string or an array of token ids", v)),
    }
}

/// Reads `messages`: at least one, each with a role and text content.
pub fn messages(map: &Map<String, Value>) -> Result<Vec<(Role, String)>, ApiError> {
    let items = match Fields(map).get("messages") {
        None => {
            return Err(ApiError::invalid(
                "messages",
                "missing_required_parameter",
                "Missing required parameter: 'messages'.".into(),
            ));
        }
        Some(Value::Array(items)) => items,
        Some(v) => return Err(type_error("messages", "an array", v)),
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "empty_array",
            "Invalid 'messages': empty array. Expected an array with at least 1 message.".into(),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = format!("messages[{i}]");
        let Value::Object(m) = item else {
            return Err(type_error(&name, "an object", item));
        };
        let f = Fields(m);
        let role = match f.string("role").map_err(|e| rename(e, &name, "role"))? {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(ApiError::invalid(
                    &format!("{name}.role"),
                    "invalid_value",
                    format!(
                        "Invalid '{name}.role': {other:?}; expected system, developer, user or assistant."
                    ),
                ));
            }
            None => {
                return Err(ApiError::invalid(
                    &format!("{name}.role"),
                    "missing_required_parameter",
                    format!("Missing required parameter: '{name}.role'."),
                ));
            }
        };
        out.push((role, content(f.get("content"), &format!("{name}.content"))?));
    }
    Ok(out)
}

/// A message's content: a string, or an array of `{"type": "text", "text": …}` parts (joined).
fn content(v: Option<&Value>, name: &str) -> Result<String, ApiError> {
    match v {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                let pname = format!("{name}[{i}]");
                let Value::Object(p) = part else {
                    return Err(type_error(&pname, "an object", part));
                };
                let f = Fields(p);
                match f.string("type").map_err(|e| rename(e, &pname, "type"))? {
                    Some("text") => {}
                    other => {
                        return Err(ApiError::invalid(
                            &format!("{pname}.type"),
                            "invalid_value",
                            format!(
                                "Invalid '{pname}.type': {other:?}; only text parts are supported."
                            ),
                        ));
                    }
                }
                let t = f.string("text").map_err(|e| rename(e, &pname, "text"))?;
                text.push_str(t.unwrap_or_default());
            }
            Ok(text)
        }
        Some(v) => Err(type_error(name, "a string or an array of text parts", v)),
    }
}

/// `e` with its field named `outer.inner`.
fn rename(mut e: ApiError, outer: &str, inner: &str) -> ApiError {
    let full = format!("{outer}.{inner}");
    e.message = e
        .message
        .replace(&format!("'{inner}'"), &format!("'{full}'"));
    e.param = Some(full);
    e
}
