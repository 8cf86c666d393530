//! The gateway's commands: `POST /v1/bitnetc/compile` (an artifact compiled in the background: 202
//! with a job, `GET /v1/bitnetc/jobs/{id}` for its status), `POST /v1/bitnetc/validate` (a
//! validation run the same way; the job's result is the report `bitnetc validate --json` prints),
//! `POST /v1/bitnetc/profile` and `POST /v1/bitnetc/compliance` (the same, with `bitnetc profile`'s
//! and `bitnetc compliance`'s reports).
//!
//! A compile's fields: `path` (the model, which must exist), `output` (the artifact: a file that
//! does not exist, in a folder that does; 409 if it exists or a job not finished writes it),
//! `target` (one of the toolchain's, default the first) and `context` (tokens, default the
//! model's). A validation's: `path` (the model), `reference` (`full`, the default, or a model's
//! path), `gates` (an object of thresholds), `text` and `tokenizer` (files on the server),
//! `window` and `windows` (positive integers). A profile's: `path`, `prompt_len` and `steps`
//! (positive), `baseline` (a saved profile on the server), `threshold` (a fraction ≥ 0). A
//! compliance check's: `path` (an artifact or a model; optional), `model` (an artifact's source),
//! `level` (`standard`, the default, `enhanced`, `defense-grade`). Each error is a 400 naming its
//! field.

use super::json;
use super::models::{admin_body, existing_path, required};
use super::request::Fields;
use crate::error::ApiError;
use crate::jobs::JobRequest;
use crate::state::AppState;
use crate::toolchain::{CompileRequest, ComplianceRequest, ProfileRequest, ValidateRequest};
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

/// `POST /v1/bitnetc/validate`: 202 with a job.
pub async fn validate(State(state): State<Arc<AppState>>, body: Body) -> Response {
    submit(state, body, |map| {
        validate_request(map).map(JobRequest::Validate)
    })
    .await
}

/// The validation request in `map`, checked (see the module doc).
fn validate_request(map: &Map<String, Value>) -> Result<ValidateRequest, ApiError> {
    let model = existing_path(map, "path")?;
    let reference = match Fields(map).string("reference")? {
        None | Some("full") => None,
        Some(_) => optional_path(map, "reference")?,
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
    Ok(ValidateRequest {
        model,
        reference,
        gates,
        text: optional_path(map, "text")?,
        tokenizer: optional_path(map, "tokenizer")?,
        window: positive(map, "window")?,
        windows: positive(map, "windows")?,
    })
}

/// Submits the job `parse` makes of the request's body: 202 with its status.
async fn submit(
    state: Arc<AppState>,
    body: Body,
    parse: impl FnOnce(&Map<String, Value>) -> Result<JobRequest, ApiError>,
) -> Response {
    let submitted = async {
        let map = admin_body(&state, body).await?;
        let request = parse(&map)?;
        if state.gateway.toolchain.is_none() {
            return Err(ApiError::not_implemented(format!(
                "This server was started without a compiler: it cannot run `{}` jobs",
                match request {
                    JobRequest::Compile(_) => "compile",
                    JobRequest::Validate(_) => "validate",
                    JobRequest::Profile(_) => "profile",
                    JobRequest::Compliance(_) => "compliance",
                }
            )));
        }
        state.gateway.jobs.submit(request)
    };
    match submitted.await {
        Ok(status) => json(StatusCode::ACCEPTED, &status),
        Err(e) => e.into_response(),
    }
}

/// The field `name` as the path of an existing file or folder, if given.
fn optional_path(map: &Map<String, Value>, name: &str) -> Result<Option<PathBuf>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => existing_path(map, name).map(Some),
    }
}

/// The field `name` as a positive integer, if given.
fn positive(map: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match Fields(map).integer(name)? {
        None => Ok(None),
        Some(n) if n > 0 => Ok(Some(n.unsigned_abs())),
        Some(n) => Err(ApiError::invalid(
            name,
            "invalid_value",
            format!("Invalid '{name}': {n}; give a positive integer."),
        )),
    }
}

/// `POST /v1/bitnetc/profile`: 202 with a job.
pub async fn profile(State(state): State<Arc<AppState>>, body: Body) -> Response {
    submit(state, body, |map| {
        let threshold = match map.get("threshold") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(t) if t.is_finite() && t >= 0.0 => Some(t),
                _ => {
                    return Err(ApiError::invalid(
                        "threshold",
                        "invalid_value",
                        format!("Invalid 'threshold': {v}; give a fraction of at least 0."),
                    ));
                }
            },
        };
        Ok(JobRequest::Profile(ProfileRequest {
            model: existing_path(map, "path")?,
            prompt_len: positive(map, "prompt_len")?,
            steps: positive(map, "steps")?,
            baseline: optional_path(map, "baseline")?,
            threshold,
        }))
    })
    .await
}

/// `POST /v1/bitnetc/compliance`: 202 with a job.
pub async fn compliance(State(state): State<Arc<AppState>>, body: Body) -> Response {
    submit(state, body, |map| {
        let level = match Fields(map).string("level")? {
            None => "standard".to_string(),
            Some(l @ ("standard" | "enhanced" | "defense-grade")) => l.to_string(),
            Some(l) => {
                return Err(ApiError::invalid(
                    "level",
                    "invalid_value",
                    format!(
                        "Invalid 'level': {l:?} is not one of standard, enhanced, defense-grade."
                    ),
                ));
            }
        };
        Ok(JobRequest::Compliance(ComplianceRequest {
            target: optional_path(map, "path")?,
            model: optional_path(map, "model")?,
            level,
        }))
    })
    .await
}
