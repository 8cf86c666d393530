//! The router's middleware: the API key, a panic turned into a 500, and the request counter.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Whether `given` is the key whose SHA-256 is `key`, in time independent of where they differ:
/// both sides are hashed to 32 bytes and every byte is compared.
pub fn key_matches(given: &[u8], key: &[u8; 32]) -> bool {
    let given: [u8; 32] = Sha256::digest(given).into();
    let diff = given.iter().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// Answers 401 unless the request carries `Authorization: Bearer KEY` with the server's key (when
/// it has one).
pub async fn require_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !given.is_some_and(|g| key_matches(g, key)) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Turns a panic in a handler into a 500 error object (the connection and the server go on).
pub async fn catch_panic(request: Request, next: Next) -> Response {
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => ApiError::internal("The server failed while answering this request".into())
            .into_response(),
    }
}

/// Counts every answer by route (the matched route, or `other`) and status.
pub async fn count(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    state
        .metrics
        .count_request(&route, response.status().as_u16());
    response
}
