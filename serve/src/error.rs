//! The crate's errors: `ServeError`, what can stop the server from starting or a step from running;
//! and `ApiError`, an error answered to a client as OpenAI answers them: a status and
//! `{"error": {"message", "type", "param", "code"}}`, with `param` naming the request field at
//! fault where there is one.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bitnet_runtime::RuntimeError;

/// Everything that can go wrong starting the server or running a model step.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound or served.
    #[error("{addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A model could not be loaded.
    #[error("model {model}: {message}")]
    Load {
        /// The model's id.
        model: String,
        /// Why.
        message: String,
    },
    /// Two models were given the same id.
    #[error("two models are named {0}: give one another name with NAME=PATH")]
    DuplicateModel(String),
    /// A setting out of range.
    #[error("{0}")]
    Config(String),
    /// A model step failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A step named a slot the model does not have (an engine bug).
    #[error("slot {slot} does not exist: the model has {slots} slots")]
    NoSlot {
        /// The slot asked for.
        slot: usize,
        /// How many there are.
        slots: usize,
    },
}

/// An error answered to the client (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, `authentication_error`, …).
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// A machine-readable code (`invalid_type`, `model_not_found`, …).
    pub code: Option<&'static str>,
    /// Seconds after which to try again (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 about `param`, with `code`.
    pub fn invalid(param: &str, code: &'static str, message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message,
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: Some(code),
            retry_after: None,
        }
    }

    /// A 400 about the body as a whole.
    pub fn bad_body(message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message,
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_json"),
            retry_after: None,
        }
    }

    /// 404 for a model this server does not serve.
    pub fn unknown_model(model: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The model `{model}` does not exist (GET /v1/models lists the models)"
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
            code: Some("model_not_found"),
            retry_after: None,
        }
    }

    /// 404 for a route this server does not have.
    pub fn no_route(method: &str, path: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("No route {method} {path}"),
            kind: "invalid_request_error",
            param: None,
            code: Some("unknown_url"),
            retry_after: None,
        }
    }

    /// 401: no API key, or the wrong one.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect or missing API key: send `Authorization: Bearer KEY`".into(),
            kind: "authentication_error",
            param: None,
            code: Some("invalid_api_key"),
            retry_after: None,
        }
    }

    /// 413: the body is over `limit` bytes.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("The request body is over the limit of {limit} bytes"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
            retry_after: None,
        }
    }

    /// 429: every slot is busy and the queue is full.
    pub fn busy() -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "The server is busy: every slot is generating and the queue is full".into(),
            kind: "rate_limit_error",
            param: None,
            code: Some("queue_full"),
            retry_after: Some(1),
        }
    }

    /// 503: the model is loading, or the server is stopping.
    pub fn unavailable(message: String) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
            kind: "server_error",
            param: None,
            code: Some("unavailable"),
            retry_after: Some(5),
        }
    }

    /// 500: something failed on the server's side.
    pub fn internal(message: String) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
            kind: "server_error",
            param: None,
            code: Some("internal_error"),
            retry_after: None,
        }
    }

    /// 409: `param` names something that exists already.
    pub fn conflict(param: &str, message: String) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            message,
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: Some("conflict"),
            retry_after: None,
        }
    }

    /// 404 for something other than a model or a route (a compile job).
    pub fn not_found(param: Option<&str>, message: String) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message,
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: Some("not_found"),
            retry_after: None,
        }
    }

    /// 501: the route exists but what it needs is not there (a command not built yet, or a
    /// server started without a compiler).
    pub fn not_implemented(message: String) -> ApiError {
        ApiError {
            status: StatusCode::NOT_IMPLEMENTED,
            message,
            kind: "server_error",
            param: None,
            code: Some("not_implemented"),
            retry_after: None,
        }
    }

    /// The error object, as the body and as an event in a stream.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body().to_string(),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
