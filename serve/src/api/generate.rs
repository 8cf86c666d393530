//! `POST /v1/completions` and `POST /v1/chat/completions`: read and check the request, turn it into
//! a prompt and generation parameters, queue it for the model's engine, and answer with the whole
//! response or a stream (`api::stream`).
//!
//! Checks, each a 400 naming the field unless said otherwise: the body's size (413), JSON and field
//! types (`api::request`), the model (404; 503 while it loads), the prompt (not empty, token ids in
//! the vocabulary, shorter than the context), and `max_tokens` (prompt + `max_tokens` within the
//! context). Without `max_tokens`, a completion gets 16 tokens (OpenAI's default) and a chat reply
//! the rest of the context. A full queue is a 429 with `Retry-After`.

use super::openai::{Api, Meta, finish_reason, usage};
use super::request::{self, Common, Prompt};
use super::stream;
use crate::audit::RequestAudit;
use crate::chat_prompt;
use crate::engine::{Event, Job, Refused};
use crate::error::ApiError;
use crate::state::{AppState, ReadyModel};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bitnet_runtime::sampling::SamplingParams;
use bitnet_runtime::session::GenerateParams;
use std::sync::Arc;
use std::time::Instant;

/// A completion's tokens when the request gives no `max_tokens` (OpenAI's default).
const DEFAULT_COMPLETION_TOKENS: usize = 16;

/// `POST /v1/completions`.
pub async fn completions(State(state): State<Arc<AppState>>, body: Body) -> Response {
    generate(&state, body, Api::Completions, "/v1/completions").await
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(state): State<Arc<AppState>>, body: Body) -> Response {
    generate(&state, body, Api::Chat, "/v1/chat/completions").await
}

/// Answers a request on `route`, and writes its audit record when it ends (`crate::audit`).
async fn generate(state: &AppState, body: Body, api: Api, route: &str) -> Response {
    let mut audit = RequestAudit::new(state.gateway.audit.clone(), route);
    let answered = match start(state, body, api, &mut audit).await {
        Ok(Started {
            meta,
            rx,
            prompt_ids,
            stream: true,
        }) => return stream::respond(meta, rx, prompt_ids, audit),
        Ok(Started {
            meta,
            rx,
            prompt_ids,
            stream: false,
        }) => collect(meta, rx, prompt_ids, &mut audit).await,
        Err(e) => Err(e),
    };
    answered.unwrap_or_else(|e| {
        audit.fail(e.status.as_u16(), &e.message);
        e.into_response()
    })
}

/// Reads the body, at most `limit` bytes (413 past it).
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::too_large(limit);
            }
            source = s.source();
        }
        ApiError::bad_body(format!("The request body could not be read: {e}"))
    })
}

/// A 400 on `param` if a token of `ids` is outside the model's vocabulary (a text prompt's too: a
/// tokenizer may know more tokens than the model has rows).
fn check_vocab(ids: &[u32], vocab: u64, param: impl Fn(usize) -> String) -> Result<(), ApiError> {
    match ids.iter().position(|&id| u64::from(id) >= vocab) {
        None => Ok(()),
        Some(i) => {
            let param = param(i);
            Err(ApiError::invalid(
                &param,
                "invalid_value",
                format!(
                    "Invalid '{param}': token id {} (prompt position {i}) is outside the model's vocabulary (0..{vocab}).",
                    ids[i]
                ),
            ))
        }
    }
}

/// The prompt's ids, the stop tokens the prompt's format adds, and the field the prompt came from.
fn encode(
    map: &serde_json::Map<String, serde_json::Value>,
    api: Api,
    model: &ReadyModel,
) -> Result<(Vec<u32>, Vec<u32>, &'static str), ApiError> {
    let vocab = model.vocab;
    match api {
        Api::Completions => match request::prompt(map)? {
            Prompt::Text(text) => {
                let ids = model.tokenizer.encode(&text, true).map_err(|e| {
                    ApiError::invalid("prompt", "invalid_value", format!("Invalid 'prompt': {e}"))
                })?;
                check_vocab(&ids, vocab, |_| "prompt".into())?;
                Ok((ids, Vec::new(), "prompt"))
            }
            Prompt::Tokens(ids) => {
                check_vocab(&ids, vocab, |i| format!("prompt[{i}]"))?;
                Ok((ids, Vec::new(), "prompt"))
            }
        },
        Api::Chat => {
            let messages = request::messages(map)?;
            let p = chat_prompt::encode(&model.chat, &model.tokenizer, &messages)
                .map_err(|e| ApiError::invalid("messages", "unsupported_chat_format", e))?;
            check_vocab(&p.ids, vocab, |_| "messages".into())?;
            Ok((p.ids, p.stop_tokens, "messages"))
        }
    }
}

/// How many tokens to generate: `max_tokens` if it fits the context with the prompt (400
/// otherwise), else the route's default within the context.
fn budget(
    common: &Common,
    api: Api,
    prompt: usize,
    field: &str,
    context: u64,
) -> Result<usize, ApiError> {
    let context = usize::try_from(context).unwrap_or(usize::MAX);
    if prompt == 0 {
        return Err(ApiError::invalid(
            field,
            "invalid_value",
            format!("Invalid '{field}': the prompt is empty."),
        ));
    }
    if prompt >= context {
        return Err(ApiError::invalid(
            field,
            "context_length_exceeded",
            format!(
                "This model's maximum context length is {context} tokens, and the prompt has {prompt}: no room is left for the reply."
            ),
        ));
    }
    let room = context - prompt;
    match common.max_tokens {
        Some(n) if n > room => Err(ApiError::invalid(
            "max_tokens",
            "context_length_exceeded",
            format!(
                "This model's maximum context length is {context} tokens. However, you requested {} tokens ({prompt} in the {field}, {n} in the completion).",
                prompt.saturating_add(n)
            ),
        )),
        Some(n) => Ok(n),
        None => Ok(match api {
            Api::Completions => DEFAULT_COMPLETION_TOKENS.min(room),
            Api::Chat => room,
        }),
    }
}

/// A seed for a request that gives none: random per request.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// A request queued for its model's engine.
struct Started {
    meta: Meta,
    rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    prompt_ids: Option<Vec<u32>>,
    stream: bool,
}

/// Reads and checks the request and queues it (see the module doc).
async fn start(
    state: &AppState,
    body: Body,
    api: Api,
    audit: &mut RequestAudit,
) -> Result<Started, ApiError> {
    let enqueued = Instant::now();
    let bytes = read_body(body, state.max_body).await?;
    let map = request::object(&bytes)?;
    let prompt_field = match api {
        Api::Completions => "prompt",
        Api::Chat => "messages",
    };
    if let Some(p) = map.get(prompt_field) {
        audit.prompt(p);
    }
    let common = request::common(&map)?;
    audit.model(&common.model);
    let model = state.model(&common.model)?;
    let (prompt, stop_tokens, field) = encode(&map, api, &model)?;
    let max_tokens = budget(&common, api, prompt.len(), field, model.context)?;
    let params = GenerateParams {
        max_tokens,
        sampling: SamplingParams {
            temperature: common.temperature,
            top_k: 0,
            top_p: common.top_p,
            repetition_penalty: 1.0,
            seed: common.seed.unwrap_or_else(random_seed),
        },
        stop_tokens,
        stop_strings: common.stop.clone(),
        ignore_eos: false,
        // A request whose client goes away is dropped by the engine between steps.
        cancel: None,
    };
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    let prompt_ids = common.return_token_ids.then(|| prompt.clone());
    let job = Job {
        prompt,
        params,
        events,
        enqueued,
    };
    model.engine.submit(job).map_err(|e| match e {
        Refused::Full => ApiError::busy(),
        Refused::Stopped => ApiError::unavailable("The server is shutting down".into()),
    })?;
    Ok(Started {
        meta: Meta::new(api, &model.id, common.include_usage),
        rx,
        prompt_ids,
        stream: common.stream,
    })
}

/// Waits for the whole generation and answers it in one response.
async fn collect(
    meta: Meta,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    prompt_ids: Option<Vec<u32>>,
    audit: &mut RequestAudit,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut ids = Vec::new();
    loop {
        match rx.recv().await {
            Some(Event::Token { id, text: piece }) => {
                text.push_str(&piece);
                ids.push(id);
            }
            Some(Event::Done {
                stop,
                tail,
                prompt_tokens,
                completion_tokens,
            }) => {
                text.push_str(&tail);
                audit.push(&text);
                audit.finish(finish_reason(&stop), prompt_tokens, completion_tokens);
                let ids = prompt_ids.as_deref().map(|p| (p, ids.as_slice()));
                let body = meta.response(
                    &text,
                    finish_reason(&stop),
                    usage(prompt_tokens, completion_tokens),
                    ids,
                );
                return Ok(super::json(axum::http::StatusCode::OK, &body));
            }
            Some(Event::Failed(message)) => {
                return Err(ApiError::internal(format!("Generation failed: {message}")));
            }
            Some(Event::Stopping) => {
                return Err(ApiError::unavailable(
                    "The server is shutting down: the request was cancelled".into(),
                ));
            }
            None => {
                return Err(ApiError::internal(
                    "The model's engine stopped before the request was answered".into(),
                ));
            }
        }
    }
}
