//! The gateway's commands: `POST /v1/bitnetc/compile` (an artifact compiled in the background: 202
//! with a job, `GET /v1/bitnetc/jobs/{id}` for its status), `POST /v1/bitnetc/validate` (a
//! validation run the same way; the job's result is the report `bitnetc validate --json` prints),
//! and `profile` and `compliance`, which answer 501 until those commands exist.
//!
//! A compile's fields: `path` (the model, which must exist), `output` (the artifact: a file that
//! does not exist, in a folder that does; 409 if it exists or a job not finished writes it),
//! `target` (one of the toolchain's, default the first) and `context` (tokens, default the
//! model's). A validation's: `path` (the model), `reference` (`full`, the default, or a model's
//! path), `gates` (an object of thresholds), `text` and `tokenizer` (files on the server),
//! `window` and `windows` (positive integers). Each error is a 400 naming its field.

use super::json;
use super::models::{admin_body, existing_path, required};
use super::request::Fields;
use crate::error::ApiError;
use crate::jobs::JobRequest;
use crate::state::AppState;
use crate::toolchain::{CompileRequest, ValidateRequest};
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// `POST /v1/bitnetc/compile`.
pub async fn compile(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let submitted = async {
        let map = admin_body(&state, body).await?;
        let request = compile_request(&state, &map)?;
        state.gateway.jobs.submit(JobRequest::Compile(request))
    };
    match submitted.await {
        Ok(status) => json(StatusCode::ACCEPTED, &status),
        Err(e) => e.into_response(),
    }
}

/// The compile request in `map`, checked (see the module doc).
fn compile_request(state: &AppState, map: &Map<String, Value>) -> Result<CompileRequest, ApiError> {
    let model = existing_path(map, "path")?;
    let output = PathBuf::from(required(map, "output")?);
    if output.exists() {
        return Err(ApiError::conflict(
            "output",
            format!(
                "Invalid 'output': {} already exists (bitnetc does not overwrite files).",
                output.display()
            ),
        ));
    }
    let folder = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !folder.is_dir() || output.file_name().is_none() {
        return Err(ApiError::invalid(
            "output",
            "invalid_value",
            format!(
                "Invalid 'output': {} is not a file name in an existing folder.",
                output.display()
            ),
        ));
    }
    let Some(toolchain) = &state.gateway.toolchain else {
        return Err(ApiError::not_implemented(
            "This server was started without a compiler: it cannot compile models".into(),
        ));
    };
    let targets = toolchain.targets();
    let target = match Fields(map).string("target")? {
        Some(t) if targets.iter().any(|k| k == t) => t.to_string(),
        Some(t) => {
            return Err(ApiError::invalid(
                "target",
                "invalid_value",
                format!(
                    "Invalid 'target': {t:?} is not one of {}.",
                    targets.join(", ")
                ),
            ));
        }
        None => targets.first().cloned().unwrap_or_default(),
    };
    let context = match Fields(map).integer("context")? {
        None => None,
        Some(n) if n > 0 => Some(n.unsigned_abs()),
        Some(n) => {
            return Err(ApiError::invalid(
                "context",
                "invalid_value",
                format!("Invalid 'context': {n}; give a positive number of tokens."),
            ));
        }
    };
    Ok(CompileRequest {
        model,
        output,
        target,
        context,
    })
}

/// `GET /v1/bitnetc/jobs/{id}`.
pub async fn job(State(state): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Response {
    match state.gateway.jobs.status(&id) {
        Some(status) => json(StatusCode::OK, &status),
        None => ApiError::not_found(
            Some("id"),
            format!("There is no compile job `{id}` on this server"),
        )
        .into_response(),
    }
}

/// The 501 of a command that is not built yet.
fn not_built(command: &str) -> Response {
    ApiError::not_implemented(format!(
        "`bitnetc {command}` is not built yet (it comes with the validation work, issue 15): \
         this route answers once it exists"
    ))
    .into_response()
}

/// `POST /v1/bitnetc/validate`: 202 with a job.
pub async fn validate(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let submitted = async {
        let map = admin_body(&state, body).await?;
        let request = validate_request(&state, &map)?;
        state.gateway.jobs.submit(JobRequest::Validate(request))
    };
    match submitted.await {
        Ok(status) => json(StatusCode::ACCEPTED, &status),
        Err(e) => e.into_response(),
    }
}

/// The validation request in `map`, checked (see the module doc).
fn validate_request(
    state: &AppState,
    map: &Map<String, Value>,
) -> Result<ValidateRequest, ApiError> {
    let model = existing_path(map, "path")?;
    let optional_path = |name: &str| match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => existing_path(map, name).map(Some),
    };
    let reference = match Fields(map).string("reference")? {
        None | Some("full") => None,
        Some(_) => optional_path("reference")?,
    };
    let gates = match map.get("gates") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => {
            return Err(ApiError::invalid(
                "gates",
                "invalid_type",
                "Invalid 'gates': expected an object of gate names and thresholds.".into(),
            ));
        }
    };
    let positive = |name: &str| match Fields(map).integer(name)? {
        None => Ok(None),
        Some(n) if n > 0 => Ok(Some(n.unsigned_abs())),
        Some(n) => Err(ApiError::invalid(
            name,
            "invalid_value",
            format!("Invalid '{name}': {n}; give a positive integer."),
        )),
    };
    let request = ValidateRequest {
        model,
        reference,
        gates,
        text: optional_path("text")?,
        tokenizer: optional_path("tokenizer")?,
        window: positive("window")?,
        windows: positive("windows")?,
    };
    if state.gateway.toolchain.is_none() {
        return Err(ApiError::not_implemented(
            "This server was started without a compiler: it cannot validate models".into(),
        ));
    }
    Ok(request)
}

/// `POST /v1/bitnetc/profile`: 501 for now.
pub async fn profile() -> Response {
    not_built("profile")
}

/// `POST /v1/bitnetc/compliance`: 501 for now.
pub async fn compliance() -> Response {
    not_built("compliance")
}
