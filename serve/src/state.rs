//! What the routes share (`AppState`): the models by id (loading, then ready with their engine),
//! the key's digest, the body limit, the metrics, and where the server is in its life (`Phase`).

use crate::engine::Engine;
use crate::error::ApiError;
use crate::metrics::Metrics;
use bitnet_runtime::chat::ChatFormat;
use bitnet_runtime::tokenizer::Tokenizer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Where the server is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A model is still loading.
    Loading,
    /// Every model is served.
    Ready,
    /// A model failed to load (the server stops).
    Failed(String),
    /// The server is stopping.
    Stopping,
}

/// A model being served.
pub struct ReadyModel {
    /// Its id.
    pub id: String,
    /// Its tokenizer, shared with its engine.
    pub tokenizer: Arc<Tokenizer>,
    /// Its chat format (its own template or the built-in), or why it cannot chat.
    pub chat: Result<ChatFormat, String>,
    /// Its engine.
    pub engine: Engine,
    /// Each slot's context, in tokens.
    pub context: u64,
    /// Its vocabulary size.
    pub vocab: u64,
    /// When it was ready (Unix seconds).
    pub created: u64,
}

/// What the routes share.
pub struct AppState {
    /// The largest body.
    pub max_body: usize,
    /// SHA-256 of the API key.
    pub key: Option<[u8; 32]>,
    /// The metrics.
    pub metrics: Metrics,
    /// Every model by id, in the order given; `None` while it loads.
    models: RwLock<Vec<(String, Option<Arc<ReadyModel>>)>>,
    stopping: AtomicBool,
    /// The model that failed to load, and why.
    failed: Mutex<Option<(String, String)>>,
}

impl AppState {
    /// A state for models `ids`, all loading.
    pub fn new(max_body: usize, key: Option<[u8; 32]>, ids: Vec<String>) -> AppState {
        AppState {
            max_body,
            key,
            metrics: Metrics::default(),
            models: RwLock::new(ids.into_iter().map(|id| (id, None)).collect()),
            stopping: AtomicBool::new(false),
            failed: Mutex::new(None),
        }
    }

    /// Serves `model` (its id was given to `new`).
    pub fn set_ready(&self, model: ReadyModel) {
        if let Ok(mut models) = self.models.write()
            && let Some(entry) = models.iter_mut().find(|(id, _)| *id == model.id)
        {
            entry.1 = Some(Arc::new(model));
        }
    }

    /// Records that `model` failed to load, and why.
    pub fn set_failed(&self, model: String, message: String) {
        if let Ok(mut f) = self.failed.lock() {
            *f = Some((model, message));
        }
    }

    /// The model that failed to load, and why.
    pub fn failure(&self) -> Option<(String, String)> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    /// The server begins to stop: `/health` and new requests answer 503.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Where the server is.
    pub fn phase(&self) -> Phase {
        if let Ok(f) = self.failed.lock()
            && let Some((model, message)) = f.as_ref()
        {
            return Phase::Failed(format!("{model}: {message}"));
        }
        if self.stopping.load(Ordering::Acquire) {
            return Phase::Stopping;
        }
        let loading = self
            .models
            .read()
            .map_or(true, |m| m.iter().any(|(_, r)| r.is_none()));
        if loading {
            Phase::Loading
        } else {
            Phase::Ready
        }
    }

    /// The models being served.
    pub fn ready_models(&self) -> Vec<Arc<ReadyModel>> {
        self.models
            .read()
            .map(|m| m.iter().filter_map(|(_, r)| r.clone()).collect())
            .unwrap_or_default()
    }

    /// The model `id`: 404 if there is none, 503 while it loads or the server stops.
    pub fn model(&self, id: &str) -> Result<Arc<ReadyModel>, ApiError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(ApiError::unavailable("The server is shutting down".into()));
        }
        let models = self
            .models
            .read()
            .map_err(|_| ApiError::internal("The model table is unreadable".into()))?;
        match models.iter().find(|(name, _)| name == id) {
            None => Err(ApiError::unknown_model(id)),
            Some((_, None)) => Err(ApiError::unavailable(format!(
                "The model `{id}` is loading"
            ))),
            Some((_, Some(m))) if m.engine.metrics().failed() => Err(ApiError::internal(format!(
                "The model `{id}` failed and is no longer served"
            ))),
            Some((_, Some(m))) => Ok(Arc::clone(m)),
        }
    }

    /// Cancels everything every engine has.
    pub fn cancel_all(&self) {
        for m in self.ready_models() {
            m.engine.cancel_all();
        }
    }
}
