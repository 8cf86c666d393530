//! The small routes: `/health`, `/v1/models`, `/metrics`, and the answers for unknown routes and
//! methods.

use super::json;
use crate::error::ApiError;
use crate::state::{AppState, Phase};
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// `GET /health`: 200 once every model is loaded; 503 while loading, after a model failed to
/// load, or while the server stops.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.phase() {
        Phase::Ready => json(StatusCode::OK, &json!({"status": "ok"})),
        Phase::Loading => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "loading"}),
        ),
        Phase::Stopping => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "shutting_down"}),
        ),
        Phase::Failed(message) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "error", "error": message}),
        ),
    }
}

/// `GET /v1/models`: the models that are ready, as OpenAI lists models.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    let data: Vec<serde_json::Value> = state
        .ready_models()
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": m.created,
                "owned_by": "bitnetc",
                "context_length": m.context,
            })
        })
        .collect();
    json(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Any other route: a 404 error object.
pub async fn fallback(method: Method, uri: Uri) -> Response {
    ApiError::no_route(method.as_str(), uri.path()).into_response()
}

/// A route asked with the wrong method: a 405 error object.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let mut e = ApiError::no_route(method.as_str(), uri.path());
    e.status = StatusCode::METHOD_NOT_ALLOWED;
    e.message = format!("{} does not take {}", uri.path(), method);
    e.code = Some("method_not_allowed");
    e.into_response()
}
