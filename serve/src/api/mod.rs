//! The HTTP API: the router, its middleware, and the routes.
//!
//! | route | key | answers |
//! |---|---|---|
//! | `POST /v1/chat/completions` | yes | `generate` |
//! | `POST /v1/completions` | yes | `generate` |
//! | `GET /v1/models` | yes | the models that are ready |
//! | `GET /metrics` | yes | Prometheus text (`metrics`) |
//! | `GET /health` | no | 200 `{"status": "ok"}`, or 503 while loading or stopping |
//! | `GET /v1/bitnetc/models` | yes | every model and its state (`models`) |
//! | `GET`, `DELETE /v1/bitnetc/models/{name}` | yes | inspect, unload (`models`) |
//! | `POST /v1/bitnetc/models` | yes | load a model at run time (`models`) |
//! | `POST /v1/bitnetc/{compile,validate}`, `GET /v1/bitnetc/jobs/{id}` | yes | compile and validation jobs (`jobs`) |
//! | `POST /v1/bitnetc/{profile,compliance}` | yes | 501 until built (`jobs`) |
//! | `GET /v1/bitnetc/audit`, `GET /v1/bitnetc/audit/verify` | yes | the audit log (`audit`) |
//!
//! Middleware, outermost first: counting every answer by route and status, turning a panic into a
//! 500 error object, and checking the API key (every route but `/health`).

mod audit;
mod generate;
mod jobs;
mod middleware;
mod models;
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
        .route("/v1/bitnetc/models", get(models::list).post(models::load))
        .route(
            "/v1/bitnetc/models/{name}",
            get(models::inspect).delete(models::unload),
        )
        .route("/v1/bitnetc/compile", post(jobs::compile))
        .route("/v1/bitnetc/jobs/{id}", get(jobs::job))
        .route("/v1/bitnetc/validate", post(jobs::validate))
        .route("/v1/bitnetc/profile", post(jobs::profile))
        .route("/v1/bitnetc/compliance", post(jobs::compliance))
        .route("/v1/bitnetc/audit", get(audit::records))
        .route("/v1/bitnetc/audit/verify", get(audit::verify))
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
