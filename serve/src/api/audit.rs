//! The gateway's audit routes: `GET /v1/bitnetc/audit` (the last records of the server's log,
//! oldest first; `?limit=N`, 1 to 10 000, default 100) and `GET /v1/bitnetc/audit/verify` (the
//! hash chain checked by `bitnet_runtime::audit::verify`: `ok`, the records that verify, and the
//! first broken link if any). Both first wait for the records queued before them to be written,
//! and read the file on a blocking thread. A server without a log answers 404.

use super::json;
use crate::audit::{Audit, recent, verify_report};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// The records `GET /v1/bitnetc/audit` gives without `limit`.
const DEFAULT_LIMIT: usize = 100;
/// The most it gives.
const MAX_LIMIT: usize = 10_000;

/// The server's log, written up to now; 404 without one.
async fn flushed(state: &AppState) -> Result<Arc<Audit>, ApiError> {
    let Some(audit) = state.gateway.audit.clone() else {
        return Err(ApiError::not_found(
            None,
            "This server keeps no audit log (start it with --audit-log PATH)".into(),
        ));
    };
    audit.flush().await;
    Ok(audit)
}

/// `limit` from the query string (400 naming it if it is not a number in range).
fn limit(uri: &Uri) -> Result<usize, ApiError> {
    let given = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "limit")
        .map(|(_, v)| v);
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(
                "limit",
                "invalid_value",
                format!("Invalid 'limit': {v:?}; give a number from 1 to {MAX_LIMIT}."),
            )),
        },
    }
}

/// Runs `read` on the log's path on a blocking thread.
async fn read_log(
    audit: &Audit,
    read: impl FnOnce(&std::path::Path) -> Result<Value, String> + Send + 'static,
) -> Result<Value, ApiError> {
    let path = audit.path().to_path_buf();
    match tokio::task::spawn_blocking(move || read(&path)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(message)) => Err(ApiError::internal(message)),
        Err(e) => Err(ApiError::internal(format!(
            "Reading the audit log failed: {e}"
        ))),
    }
}

/// `GET /v1/bitnetc/audit`.
pub async fn records(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let answer = async {
        let limit = limit(&uri)?;
        let audit = flushed(&state).await?;
        let path = audit.path().display().to_string();
        let data = read_log(&audit, move |p| recent(p, limit).map(Value::from)).await?;
        Ok::<Value, ApiError>(json!({"object": "list", "path": path, "data": data}))
    };
    match answer.await {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/bitnetc/audit/verify`.
pub async fn verify(State(state): State<Arc<AppState>>) -> Response {
    let answer = async {
        let audit = flushed(&state).await?;
        read_log(&audit, verify_report).await
    };
    match answer.await {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}
