//! The gateway's model management under `/v1/bitnetc/models`: list every model with its state
//! (`loading`, `ready`, `failed`), inspect one (the same and what its loader measured: weight
//! bytes, KV bytes per slot, the artifact's manifest, …), load one at run time (`POST` with `name`
//! and `path`: 202, loading in the background), and unload one (`DELETE`: new requests get 404,
//! those in flight finish within the unload grace or are cancelled).
//!
//! Also the helpers the gateway's `POST` routes share: the body as a JSON object, and required
//! string fields and paths, each error a 400 naming the field.

use super::generate::read_body;
use super::json;
use super::request::{Fields, object};
use crate::error::ApiError;
use crate::loading;
use crate::state::{AppState, Entry, ModelState};
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::sync::Arc;

/// The body of a gateway `POST` as a JSON object (413 past the body limit, 400 if not an object).
pub(super) async fn admin_body(
    state: &AppState,
    body: Body,
) -> Result<Map<String, Value>, ApiError> {
    object(&read_body(body, state.max_body).await?)
}

/// The string field `name`: 400 naming it if it is missing, empty or not a string.
pub(super) fn required<'a>(map: &'a Map<String, Value>, name: &str) -> Result<&'a str, ApiError> {
    match Fields(map).string(name)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(ApiError::invalid(
            name,
            "invalid_value",
            format!("Invalid '{name}': it is empty."),
        )),
        None => Err(ApiError::invalid(
            name,
            "missing_required_parameter",
            format!("Missing required parameter: '{name}'."),
        )),
    }
}

/// The field `name` as the path of an existing file or folder (400 naming it otherwise).
pub(super) fn existing_path(map: &Map<String, Value>, name: &str) -> Result<PathBuf, ApiError> {
    let path = PathBuf::from(required(map, name)?);
    if !path.exists() {
        return Err(ApiError::invalid(
            name,
            "invalid_value",
            format!(
                "Invalid '{name}': {} is no file or folder on the server.",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// A model's entry as the gateway shows it; `detailed` adds what its loader measured.
fn describe(e: &Entry, detailed: bool) -> Value {
    let mut v = json!({
        "id": e.id,
        "object": "bitnetc.model",
        "startup": e.startup,
    });
    let info = match &e.state {
        ModelState::Loading => {
            v["state"] = "loading".into();
            &e.asked
        }
        ModelState::Failed(message) => {
            v["state"] = "failed".into();
            v["error"] = message.clone().into();
            &e.asked
        }
        ModelState::Ready(m) => {
            v["state"] = "ready".into();
            v["created"] = m.created.into();
            v["context"] = m.context.into();
            v["slots"] = m.slots.into();
            v["vocab"] = m.vocab.into();
            match &m.chat {
                Ok(format) => v["chat_format"] = format.describe().into(),
                Err(why) => {
                    v["chat_format"] = Value::Null;
                    v["chat_error"] = why.clone().into();
                }
            }
            if detailed {
                v["in_flight"] = m.engine.metrics().in_flight().into();
            }
            &m.info
        }
    };
    v["source"] = info.source.as_ref().map(|p| p.display().to_string()).into();
    v["kind"] = info.kind.clone().into();
    if detailed {
        v["details"] = info.details.clone();
    }
    v
}

/// `GET /v1/bitnetc/models`.
pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = state.entries().iter().map(|e| describe(e, false)).collect();
    json(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// `GET /v1/bitnetc/models/{name}`.
pub async fn inspect(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    match state.entries().iter().find(|e| e.id == name) {
        Some(e) => json(StatusCode::OK, &describe(e, true)),
        None => ApiError::unknown_model(&name).into_response(),
    }
}

/// Whether `name` can name a model: 1 to 128 characters, letters, digits, `.`, `_`, `-`, `:`.
fn valid_name(name: &str) -> bool {
    name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
}

/// `POST /v1/bitnetc/models` with `{"name", "path"}`.
pub async fn load(State(state): State<Arc<AppState>>, body: Body) -> Response {
    match load_model(&state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn load_model(state: &Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let map = admin_body(state, body).await?;
    let name = required(&map, "name")?;
    if !valid_name(name) {
        return Err(ApiError::invalid(
            "name",
            "invalid_value",
            "Invalid 'name': use 1 to 128 letters, digits, '.', '_', '-' or ':'.".into(),
        ));
    }
    let path = existing_path(&map, "path")?;
    if state.gateway.toolchain.is_none() {
        return Err(ApiError::not_implemented(
            "This server was started without a compiler: it cannot load models at run time".into(),
        ));
    }
    if state.is_stopping() {
        return Err(ApiError::unavailable("The server is shutting down".into()));
    }
    let asked = crate::toolchain::ModelInfo {
        source: Some(path.clone()),
        ..Default::default()
    };
    let serial = state.add_loading(name, asked)?;
    if let Err(e) = loading::load_at_run_time(Arc::clone(state), name.to_string(), serial, path) {
        state.set_load_failed(serial, format!("cannot start loading: {e}"));
    }
    let entry = state.entries().into_iter().find(|e| e.serial == serial);
    let body = entry.map_or_else(|| json!({"id": name}), |e| describe(&e, false));
    Ok(json(StatusCode::ACCEPTED, &body))
}

/// `DELETE /v1/bitnetc/models/{name}`: 200 with OpenAI's deleted-model object, and how many of its
/// requests were still in flight (they finish within the grace or are cancelled).
pub async fn unload(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let entry = match state.remove(&name) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let in_flight = match &entry.state {
        ModelState::Ready(m) => m.engine.metrics().in_flight(),
        ModelState::Loading | ModelState::Failed(_) => 0,
    };
    if let Err(e) = loading::unload(Arc::clone(&state), entry) {
        return ApiError::internal(format!("The model was removed but not freed: {e}"))
            .into_response();
    }
    json(
        StatusCode::OK,
        &json!({"id": name, "object": "model", "deleted": true, "in_flight": in_flight}),
    )
}
