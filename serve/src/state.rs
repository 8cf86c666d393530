//! What the routes share (`AppState`): the model table (each model loading, ready with its engine,
//! or failed), the key's digest, the body limit, the metrics, the audit log, the gateway's
//! toolchain and compile jobs, and where the server is in its life (`Phase`).

use crate::audit::Audit;
use crate::engine::{Engine, EngineOptions};
use crate::error::ApiError;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::toolchain::{ModelInfo, Toolchain};
use bitnet_runtime::chat::ChatFormat;
use bitnet_runtime::tokenizer::Tokenizer;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Where the server is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A model given at start is still loading.
    Loading,
    /// Every model given at start is served.
    Ready,
    /// A model given at start failed to load (the server stops).
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
    /// Its slots.
    pub slots: usize,
    /// When it was ready (Unix seconds).
    pub created: u64,
    /// Where it came from and what it costs.
    pub info: ModelInfo,
}

/// Where a model of the table is.
#[derive(Clone)]
pub enum ModelState {
    /// Being loaded (or compiled).
    Loading,
    /// Served.
    Ready(Arc<ReadyModel>),
    /// Its load failed, for this reason (a model loaded at run time stays listed until deleted).
    Failed(String),
}

/// A model of the table.
#[derive(Clone)]
pub struct Entry {
    /// Its id.
    pub id: String,
    /// Given at start (its failure stops the server, `/health` waits for it).
    pub startup: bool,
    /// Where it is.
    pub state: ModelState,
    /// What was known when it was asked for (the path of a model loaded at run time).
    pub asked: ModelInfo,
    /// Tells this entry from an earlier one of the same name (deleted while it loaded).
    pub serial: u64,
}

/// What the gateway routes need besides the models.
pub struct Gateway {
    /// Loads and compiles models (`None`: those routes answer 501).
    pub toolchain: Option<Arc<dyn Toolchain>>,
    /// The audit log, if any.
    pub audit: Option<Arc<Audit>>,
    /// The compile jobs.
    pub jobs: Jobs,
    /// How a model loaded at run time is scheduled.
    pub engine: EngineOptions,
    /// How long an unloaded model's requests in flight may go on before they are cancelled.
    pub unload_grace: Duration,
}

/// What the routes share.
pub struct AppState {
    /// The largest body.
    pub max_body: usize,
    /// SHA-256 of the API key.
    pub key: Option<[u8; 32]>,
    /// The metrics.
    pub metrics: Metrics,
    /// The gateway's toolchain, audit log and jobs.
    pub gateway: Gateway,
    /// Every model, in the order given or asked for.
    models: RwLock<Vec<Entry>>,
    stopping: AtomicBool,
    next_serial: AtomicU64,
    /// The model given at start that failed to load, and why.
    failed: Mutex<Option<(String, String)>>,
}

impl AppState {
    /// A state for the models `ids` given at start, all loading; the serial of each is its index.
    pub fn new(
        max_body: usize,
        key: Option<[u8; 32]>,
        ids: Vec<String>,
        gateway: Gateway,
    ) -> AppState {
        let entries: Vec<Entry> = ids
            .into_iter()
            .zip(0..)
            .map(|(id, serial)| Entry {
                id,
                startup: true,
                state: ModelState::Loading,
                asked: ModelInfo::default(),
                serial,
            })
            .collect();
        let next_serial = AtomicU64::new(entries.len() as u64);
        AppState {
            max_body,
            key,
            metrics: Metrics::default(),
            gateway,
            models: RwLock::new(entries),
            stopping: AtomicBool::new(false),
            next_serial,
            failed: Mutex::new(None),
        }
    }

    /// Serves `model` in its loading entry `serial`; gives it back if that entry is gone (it was
    /// deleted while it loaded).
    pub fn set_ready(&self, model: ReadyModel, serial: u64) -> Option<ReadyModel> {
        let Ok(mut models) = self.models.write() else {
            return Some(model);
        };
        match models
            .iter_mut()
            .find(|e| e.serial == serial && matches!(e.state, ModelState::Loading))
        {
            Some(entry) => {
                entry.state = ModelState::Ready(Arc::new(model));
                None
            }
            None => Some(model),
        }
    }

    /// Marks the loading entry `serial` as failed, for `message`.
    pub fn set_load_failed(&self, serial: u64, message: String) {
        if let Ok(mut models) = self.models.write()
            && let Some(entry) = models
                .iter_mut()
                .find(|e| e.serial == serial && matches!(e.state, ModelState::Loading))
        {
            entry.state = ModelState::Failed(message);
        }
    }

    /// Records that `model` (entry `serial`), given at start, failed to load, and why (the server
    /// stops).
    pub fn set_failed(&self, model: String, serial: u64, message: String) {
        self.set_load_failed(serial, message.clone());
        if let Ok(mut f) = self.failed.lock() {
            *f = Some((model, message));
        }
    }

    /// The model given at start that failed to load, and why.
    pub fn failure(&self) -> Option<(String, String)> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    /// The server begins to stop: `/health` and new requests answer 503.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether the server is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Where the server is (models loaded at run time do not count).
    pub fn phase(&self) -> Phase {
        if let Some((model, message)) = self.failure() {
            return Phase::Failed(format!("{model}: {message}"));
        }
        if self.is_stopping() {
            return Phase::Stopping;
        }
        let loading = self.models.read().map_or(true, |m| {
            m.iter()
                .any(|e| e.startup && matches!(e.state, ModelState::Loading))
        });
        if loading {
            Phase::Loading
        } else {
            Phase::Ready
        }
    }

    /// Every model of the table, in order.
    pub fn entries(&self) -> Vec<Entry> {
        self.models.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// The models being served.
    pub fn ready_models(&self) -> Vec<Arc<ReadyModel>> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e.state {
                ModelState::Ready(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// Adds `id` as loading, asked for at run time; its serial. 409 if the name is taken.
    pub fn add_loading(&self, id: &str, asked: ModelInfo) -> Result<u64, ApiError> {
        let mut models = self
            .models
            .write()
            .map_err(|_| ApiError::internal("The model table is unwritable".into()))?;
        if models.iter().any(|e| e.id == id) {
            return Err(ApiError::conflict(
                "name",
                format!(
                    "A model named `{id}` already exists (DELETE /v1/bitnetc/models/{id} first)"
                ),
            ));
        }
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        models.push(Entry {
            id: id.to_string(),
            startup: false,
            state: ModelState::Loading,
            asked,
            serial,
        });
        Ok(serial)
    }

    /// Takes `id` out of the table (new requests for it get 404); 404 if there is none.
    pub fn remove(&self, id: &str) -> Result<Entry, ApiError> {
        let mut models = self
            .models
            .write()
            .map_err(|_| ApiError::internal("The model table is unwritable".into()))?;
        match models.iter().position(|e| e.id == id) {
            Some(i) => Ok(models.remove(i)),
            None => Err(ApiError::unknown_model(id)),
        }
    }

    /// The model `id`: 404 if there is none, 503 while it loads or the server stops.
    pub fn model(&self, id: &str) -> Result<Arc<ReadyModel>, ApiError> {
        if self.is_stopping() {
            return Err(ApiError::unavailable("The server is shutting down".into()));
        }
        let models = self
            .models
            .read()
            .map_err(|_| ApiError::internal("The model table is unreadable".into()))?;
        match models.iter().find(|e| e.id == id).map(|e| &e.state) {
            None => Err(ApiError::unknown_model(id)),
            Some(ModelState::Loading) => Err(ApiError::unavailable(format!(
                "The model `{id}` is loading"
            ))),
            Some(ModelState::Failed(message)) => Err(ApiError::internal(format!(
                "The model `{id}` failed to load: {message}"
            ))),
            Some(ModelState::Ready(m)) if m.engine.metrics().failed() => Err(ApiError::internal(
                format!("The model `{id}` failed and is no longer served"),
            )),
            Some(ModelState::Ready(m)) => Ok(Arc::clone(m)),
        }
    }

    /// Cancels everything every engine has.
    pub fn cancel_all(&self) {
        for m in self.ready_models() {
            m.engine.cancel_all();
        }
    }
}
