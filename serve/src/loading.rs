//! Models coming and going: the models given at start, loaded one after another on a thread of
//! their own (the first failure stops the server); a model loaded at run time (`POST
//! /v1/bitnetc/models`) on a thread of its own through the `Toolchain` (a failure leaves it
//! listed as `failed`); and unloading (`DELETE /v1/bitnetc/models/{name}`): the model is already
//! out of the table, its requests in flight go on for up to the unload grace, then the rest are
//! cancelled, its engine ends and its memory is freed once the last request lets go of it.
//!
//! Every load and unload is an audit record (`load`, `unload`, or `error` with
//! `"command": "load"`).

use crate::engine::Engine;
use crate::metrics::ModelMetrics;
use crate::state::{AppState, Entry, ModelState, ReadyModel};
use crate::toolchain::{LoadedModel, ModelInfo, ModelSource};
use bitnet_runtime::chat::ChatFormat;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Starts the engine of `loaded` as model `id`.
fn ready(state: &AppState, id: &str, loaded: LoadedModel) -> Result<ReadyModel, String> {
    let metrics = Arc::new(ModelMetrics::default());
    let (context, vocab, slots) = (
        loaded.model.context(),
        loaded.model.vocab(),
        loaded.model.slots(),
    );
    let chat = ChatFormat::new(loaded.chat_template, &loaded.tokenizer).map_err(|e| e.to_string());
    let tokenizer = Arc::new(loaded.tokenizer);
    let engine = Engine::start(
        id,
        loaded.model,
        Arc::clone(&tokenizer),
        state.gateway.engine,
        Arc::clone(&metrics),
    )
    .map_err(|e| format!("starting its engine: {e}"))?;
    state.metrics.add_model(id, metrics);
    Ok(ReadyModel {
        id: id.to_string(),
        tokenizer,
        chat,
        engine,
        context,
        vocab,
        slots,
        created: crate::audit::now(),
        info: loaded.info,
    })
}

/// Runs `load` (catching a panic), starts the model's engine and serves it; the audit record; the
/// error if it failed. A model deleted while it loaded is dropped.
fn load_one(
    state: &AppState,
    id: &str,
    serial: u64,
    asked: &ModelInfo,
    load: impl FnOnce() -> Result<LoadedModel, String>,
) -> Result<(), String> {
    let started = Instant::now();
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
        .unwrap_or_else(|_| Err("loading panicked".into()));
    let result = loaded.and_then(|l| ready(state, id, l));
    if let Some(audit) = &state.gateway.audit {
        let info = match &result {
            Ok(m) => &m.info,
            Err(_) => asked,
        };
        let mut fields = json!({
            "command": "load",
            "model": id,
            "path": info.source.as_ref().map(|p| p.display().to_string()),
            "kind": info.kind,
            "wall_s": started.elapsed().as_secs_f64(),
        });
        if let Some(source) = &info.source {
            fields["inputs"] = bitnet_runtime::audit::input_digests(source)
                .unwrap_or_else(|e| json!({"error": e.to_string()}));
        }
        let kind = match &result {
            Ok(_) => "load",
            Err(message) => {
                fields["message"] = message.clone().into();
                "error"
            }
        };
        audit.record(kind, fields);
    }
    match result {
        Ok(model) => {
            if let Some(model) = state.set_ready(model, serial) {
                state.metrics.remove_model(id);
                model.engine.join();
            }
            Ok(())
        }
        Err(message) => Err(message),
    }
}

/// Loads every model given at start, in order; the first failure stops the server.
pub fn load_all(models: Vec<ModelSource>, state: &AppState, stop: &watch::Sender<bool>) {
    for (source, serial) in models.into_iter().zip(0..) {
        if *stop.borrow() {
            return;
        }
        let loaded = load_one(
            state,
            &source.id,
            serial,
            &ModelInfo::default(),
            source.load,
        );
        if let Err(message) = loaded {
            state.set_failed(source.id, serial, message);
            stop.send_replace(true);
            return;
        }
    }
}

/// Loads the model at `path` as `id` (in the table as loading entry `serial`) through the
/// toolchain, on a thread of its own.
pub fn load_at_run_time(
    state: Arc<AppState>,
    id: String,
    serial: u64,
    path: PathBuf,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("load {id}"))
        .spawn(move || {
            let asked = ModelInfo {
                source: Some(path.clone()),
                ..ModelInfo::default()
            };
            let Some(toolchain) = state.gateway.toolchain.clone() else {
                state.set_load_failed(serial, "this server cannot load models".into());
                return;
            };
            let loaded = load_one(&state, &id, serial, &asked, || {
                toolchain.load(&id, &path).map(|mut l| {
                    l.info.source.get_or_insert(path.clone());
                    l
                })
            });
            if let Err(message) = loaded {
                state.set_load_failed(serial, message);
            }
        })
        .map(drop)
}

/// How often an unloading model's requests in flight are looked at.
const UNLOAD_POLL: Duration = Duration::from_millis(20);

/// Unloads `entry`, already out of the table (see the module doc): its audit record now, the rest
/// on a thread of its own.
pub fn unload(state: Arc<AppState>, entry: Entry) -> std::io::Result<()> {
    if let Some(audit) = &state.gateway.audit {
        let (was, in_flight, source) = match &entry.state {
            ModelState::Ready(m) => ("ready", m.engine.metrics().in_flight(), &m.info.source),
            ModelState::Loading => ("loading", 0, &entry.asked.source),
            ModelState::Failed(_) => ("failed", 0, &entry.asked.source),
        };
        audit.record(
            "unload",
            json!({
                "model": entry.id,
                "path": source.as_ref().map(|p| p.display().to_string()),
                "state": was,
                "in_flight": in_flight,
            }),
        );
    }
    std::thread::Builder::new()
        .name(format!("unload {}", entry.id))
        .spawn(move || {
            if let ModelState::Ready(model) = entry.state {
                let end = Instant::now() + state.gateway.unload_grace;
                let metrics = Arc::clone(model.engine.metrics());
                while metrics.in_flight() > 0 && Instant::now() < end {
                    std::thread::sleep(UNLOAD_POLL);
                }
                model.engine.join();
                state.metrics.remove_model(&entry.id);
            }
        })
        .map(drop)
}
