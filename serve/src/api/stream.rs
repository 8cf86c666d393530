//! Streamed responses: server-sent events, one `data: {json}` per chunk (`api::openai`), ending
//! with `data: [DONE]`. A failure mid-stream is sent as `data: {"error": …}` and ends the stream.
//! Dropping the body (the client went away) drops the event receiver, which tells the engine to
//! stop generating and free the slot.

use super::openai::{Api, Meta, finish_reason, usage};
use crate::audit::RequestAudit;
use crate::engine::Event;
use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

/// Where a stream is.
struct Stream {
    meta: Meta,
    rx: UnboundedReceiver<Event>,
    /// With `return_token_ids`: the prompt's ids, sent in the first chunk.
    prompt_ids: Option<Vec<u32>>,
    /// Token ids are sent (`return_token_ids`).
    with_ids: bool,
    /// Nothing sent yet.
    first: bool,
    /// The stream is over.
    done: bool,
    /// The request's audit record (written at the end, or when the client goes away).
    audit: RequestAudit,
}

/// `data: {value}` and the blank line that ends an event.
fn event(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl Stream {
    /// A chunk with `text` (and `ids`), the prompt's ids on the first.
    fn chunk(&mut self, out: &mut Vec<u8>, text: &str, ids: Option<&[u32]>) {
        let role = self.first && self.meta.api == Api::Chat;
        let mut v = self.meta.chunk(text, role, ids);
        if self.first
            && let Some(p) = self.prompt_ids.take()
        {
            v["prompt_token_ids"] = serde_json::json!(p);
        }
        self.first = false;
        event(out, &v);
    }

    /// The bytes of the next events, or `None` once the stream is over.
    async fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        if self.first && self.meta.api == Api::Chat {
            self.chunk(&mut out, "", self.with_ids.then_some(&[]));
            return Some(Bytes::from(out));
        }
        loop {
            match self.rx.recv().await {
                Some(Event::Token { id, text }) => {
                    self.audit.push(&text);
                    if text.is_empty() && !self.with_ids {
                        continue;
                    }
                    self.chunk(&mut out, &text, self.with_ids.then_some(&[id]));
                }
                Some(Event::Done {
                    stop,
                    tail,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    self.audit.push(&tail);
                    self.audit
                        .finish(finish_reason(&stop), prompt_tokens, completion_tokens);
                    if !tail.is_empty() || self.first {
                        self.chunk(&mut out, &tail, self.with_ids.then_some(&[]));
                    }
                    event(&mut out, &self.meta.finish_chunk(finish_reason(&stop)));
                    if self.meta.include_usage {
                        let u = usage(prompt_tokens, completion_tokens);
                        event(&mut out, &self.meta.usage_chunk(u));
                    }
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    self.done = true;
                }
                Some(Event::Failed(message)) => {
                    let e = ApiError::internal(format!("Generation failed: {message}"));
                    self.audit.fail(e.status.as_u16(), &e.message);
                    event(&mut out, &e.body());
                    self.done = true;
                }
                Some(Event::Stopping) => {
                    let e = ApiError::unavailable(
                        "The server is shutting down: the request was cancelled".into(),
                    );
                    self.audit.fail(e.status.as_u16(), &e.message);
                    event(&mut out, &e.body());
                    self.done = true;
                }
                None => {
                    let e = ApiError::internal(
                        "The model's engine stopped before the request was answered".into(),
                    );
                    self.audit.fail(e.status.as_u16(), &e.message);
                    event(&mut out, &e.body());
                    self.done = true;
                }
            }
            return Some(Bytes::from(out));
        }
    }
}

/// The streamed response: 200 with `text/event-stream`, chunks as the engine sends tokens.
pub fn respond(
    meta: Meta,
    rx: UnboundedReceiver<Event>,
    prompt_ids: Option<Vec<u32>>,
    audit: RequestAudit,
) -> Response {
    let state = Stream {
        meta,
        rx,
        with_ids: prompt_ids.is_some(),
        prompt_ids,
        first: true,
        done: false,
        audit,
    };
    let body = futures_util::stream::unfold(state, |mut s| async move {
        let bytes = s.next().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(bytes), s))
    });
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
