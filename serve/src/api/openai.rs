//! The response objects of OpenAI's completions and chat completions APIs, whole and as stream
//! chunks, with the fields and nesting OpenAI's clients read.
//!
//! Chat: `chat.completion` with `choices[0].message`; a stream is `chat.completion.chunk`s: the
//! first with `delta: {"role": "assistant", "content": ""}`, then one per piece of text
//! (`delta.content`), then one with an empty delta and the `finish_reason`. Completions:
//! `text_completion` with `choices[0].text`, streamed as `text_completion` objects. With
//! `stream_options.include_usage`, every chunk carries `"usage": null` and a last chunk with no
//! choices carries the usage. The `return_token_ids` extension adds `prompt_token_ids` to the
//! response (or the first chunk) and `token_ids` to each choice.

use bitnet_runtime::session::StopReason;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// Which API a response belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}

/// OpenAI's `finish_reason`: `stop` for a stop token or string, `length` for the token limit or a
/// full context.
pub fn finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::StopToken(_) | StopReason::StopString(_) => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        // The server cancels a request only when its client has gone: nobody reads this.
        StopReason::Cancelled => "stop",
    }
}

/// The `usage` object.
pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// What every object of one response shares.
#[derive(Clone, Debug)]
pub struct Meta {
    /// `chatcmpl-…` or `cmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model's id.
    pub model: String,
    /// Which API.
    pub api: Api,
    /// Stream chunks carry `"usage": null` until the last.
    pub include_usage: bool,
}

/// A distinct id per response in this process: the process id, its start and a counter.
fn next_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{:x}{:x}{n:x}",
        std::process::id(),
        start & 0xffff_ffff
    )
}

pub use crate::audit::now;

impl Meta {
    /// The shared fields of a new response.
    pub fn new(api: Api, model: &str, include_usage: bool) -> Meta {
        Meta {
            id: next_id(match api {
                Api::Chat => "chatcmpl",
                Api::Completions => "cmpl",
            }),
            created: now(),
            model: model.to_string(),
            api,
            include_usage,
        }
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.api, chunk) {
            (Api::Chat, false) => "chat.completion",
            (Api::Chat, true) => "chat.completion.chunk",
            (Api::Completions, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": concat!("bitnetc-", env!("CARGO_PKG_VERSION")),
            "choices": choices,
        });
        if chunk && self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    /// The whole response of a request that is not streamed.
    pub fn response(
        &self,
        text: &str,
        finish: &str,
        usage: Value,
        ids: Option<(&[u32], &[u32])>,
    ) -> Value {
        let mut choice = match self.api {
            Api::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish,
            }),
            Api::Completions => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        let mut v = self.envelope(false, Value::Null);
        if let Some((prompt, tokens)) = ids {
            choice["token_ids"] = json!(tokens);
            v["prompt_token_ids"] = json!(prompt);
        }
        v["choices"] = json!([choice]);
        v["usage"] = usage;
        v
    }

    /// A chunk with a piece of text (`role` set on a chat stream's first chunk), and the token ids
    /// it came from when they are asked for.
    pub fn chunk(&self, text: &str, role: bool, token_ids: Option<&[u32]>) -> Value {
        let mut choice = match self.api {
            Api::Chat => {
                let delta = if role {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": null})
            }
            Api::Completions => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": null})
            }
        };
        if let Some(ids) = token_ids {
            choice["token_ids"] = json!(ids);
        }
        self.envelope(true, json!([choice]))
    }

    /// The chunk that ends the choice.
    pub fn finish_chunk(&self, finish: &str) -> Value {
        let choice = match self.api {
            Api::Chat => {
                json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish})
            }
            Api::Completions => {
                json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish})
            }
        };
        self.envelope(true, json!([choice]))
    }

    /// The last chunk of a stream with `include_usage`: no choices, the usage.
    pub fn usage_chunk(&self, usage: Value) -> Value {
        let mut v = self.envelope(true, json!([]));
        v["usage"] = usage;
        v
    }
}
