//! The HTTP API: the router, its middleware, and the routes.
//!
//! | route | key | answers |
//! |---|---|---|
//! | `POST /v1/chat/completions` | yes | `generate` |
//! | `POST /v1/completions` | yes | `generate` |
//! | `GET /v1/models` | yes | the models that are ready |
//! | `GET /metrics` | yes | Prometheus text (`metrics`) |
//! | `GET /health` | no | 200 `{"status": "ok"}`, or 503 while loading or stopping |
//!
//! Middleware, outermost first: counting every answer by route and status, turning a panic into a
//! 500 error object, and checking the API key (every route but `/health`).

mod generate;
mod middleware;
pub mod openai;
pub mod request;
mod routes;
mod stream;

use crate::state::AppState;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;

/// `value` as a JSON response with `status`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        value.to_string(),
    )
        .into_response()
}

/// The router over `state` (see the module doc).
pub fn router(state: Arc<AppState>) -> Router {
    let keyed = Router::new()
        .route("/v1/chat/completions", post(generate::chat_completions))
        .route("/v1/completions", post(generate::completions))
        .route("/v1/models", get(routes::models))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::fallback)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::require_key,
        ));
    Router::new()
        .route("/health", get(routes::health))
        .merge(keyed)
        .layer(axum::middleware::from_fn(middleware::catch_panic))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::count,
        ))
        .with_state(state)
}
