//! The server's life: bind, answer `/health` at once (503 while loading), load the models one after
//! another on a thread of their own (each then gets an engine and is served), and stop gracefully.
//!
//! Stopping (`Server::shutdown`, dropping the `Server`, or SIGTERM/Ctrl-C with
//! `ServeConfig::signals`): the listener closes, `/health` answers 503, new generation requests
//! get 503, and requests in flight go on for up to `shutdown_timeout`; then every engine cancels
//! what it still has (a stream ends with an error event, a waiting request gets 503), and
//! `Server::wait` returns after at most a few more seconds.

use crate::api;
use crate::audit::Audit;
use crate::engine::EngineOptions;
use crate::error::ServeError;
use crate::jobs::Jobs;
use crate::loading::load_all;
use crate::state::{AppState, Gateway, Phase};
use crate::toolchain::{ModelSource, Toolchain};
use bitnet_runtime::audit::AuditLog;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The host to bind (default 127.0.0.1: loopback only).
    pub host: String,
    /// The port (0: any free port; `Server::addr` says which).
    pub port: u16,
    /// Required as `Authorization: Bearer KEY` on every route but `/health`.
    pub api_key: Option<String>,
    /// Requests that may wait for a slot, per model, before a 429.
    pub queue: usize,
    /// The most prompt tokens a slot feeds in one step.
    pub prefill_chunk: usize,
    /// The largest request body, in bytes (413 past it).
    pub max_body_bytes: usize,
    /// How long requests in flight may go on after a shutdown begins.
    pub shutdown_timeout: Duration,
    /// Stop on SIGTERM and Ctrl-C.
    pub signals: bool,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            queue: 64,
            prefill_chunk: 64,
            max_body_bytes: 4 << 20,
            shutdown_timeout: Duration::from_secs(10),
            signals: false,
        }
    }
}

/// What the gateway (`/v1/bitnetc/`) works with besides the models; `Default`: no toolchain (its
/// load and compile routes answer 501) and no audit log.
#[derive(Default)]
pub struct GatewayConfig {
    /// Loads and compiles models at run time.
    pub toolchain: Option<Arc<dyn Toolchain>>,
    /// The audit log to append to.
    pub audit: Option<AuditLog>,
    /// Records keep the prompt and output text (else only their sha256).
    pub audit_text: bool,
}

/// A running server (see the module doc).
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    state: Arc<AppState>,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
    audit: Option<Arc<Audit>>,
}

impl Server {
    /// Binds, starts answering, and starts loading `models` (in order) in the background; no
    /// toolchain, no audit log.
    pub fn start(config: ServeConfig, models: Vec<ModelSource>) -> Result<Server, ServeError> {
        Server::start_with(config, models, GatewayConfig::default())
    }

    /// `Server::start` with the gateway's toolchain and audit log.
    pub fn start_with(
        config: ServeConfig,
        models: Vec<ModelSource>,
        gateway: GatewayConfig,
    ) -> Result<Server, ServeError> {
        if models.is_empty() {
            return Err(ServeError::Config("give at least one model".into()));
        }
        if config.queue == 0 || config.prefill_chunk == 0 {
            return Err(ServeError::Config(
                "the queue and the prefill chunk must be at least 1".into(),
            ));
        }
        for (i, m) in models.iter().enumerate() {
            if models[..i].iter().any(|o| o.id == m.id) {
                return Err(ServeError::DuplicateModel(m.id.clone()));
            }
        }
        let where_ = format!("{}:{}", config.host, config.port);
        let io = |source| ServeError::Io {
            addr: where_.clone(),
            source,
        };
        let listener =
            std::net::TcpListener::bind((config.host.as_str(), config.port)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("serve")
            .enable_all()
            .build()
            .map_err(io)?;
        let audit = match gateway.audit {
            Some(log) => Some(Arc::new(Audit::start(log, gateway.audit_text).map_err(io)?)),
            None => None,
        };
        let jobs = Jobs::start(gateway.toolchain.clone(), audit.clone()).map_err(io)?;
        let state = Arc::new(AppState::new(
            config.max_body_bytes,
            config
                .api_key
                .as_ref()
                .map(|k| Sha256::digest(k.as_bytes()).into()),
            models.iter().map(|m| m.id.clone()).collect(),
            Gateway {
                toolchain: gateway.toolchain,
                audit: audit.clone(),
                jobs,
                engine: EngineOptions {
                    queue: config.queue,
                    prefill_chunk: config.prefill_chunk,
                },
                unload_grace: config.shutdown_timeout,
            },
        ));
        let (stop, _) = watch::channel(false);
        {
            let state = Arc::clone(&state);
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("load".into())
                .spawn(move || load_all(models, &state, &stop))
                .map_err(io)?;
        }
        let thread = {
            let state = Arc::clone(&state);
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("serve".into())
                .spawn(move || runtime.block_on(serve(listener, addr, state, stop, config)))
                .map_err(io)?
        };
        Ok(Server {
            addr,
            stop,
            state,
            thread: Some(thread),
            audit,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the server is.
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// Begins a graceful shutdown (see the module doc).
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until the server has stopped, then writes what the audit log still has queued: an
    /// error if it could not serve or a model failed to load.
    pub fn wait(mut self) -> Result<(), ServeError> {
        let served = match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ServeError::Config("the server thread panicked".into())),
            None => Ok(()),
        };
        self.state.gateway.jobs.close();
        for m in self.state.ready_models() {
            m.engine.join();
        }
        if let Some(audit) = &self.audit {
            audit.close();
        }
        let failed = self.state.failure();
        match failed {
            Some((model, message)) => Err(ServeError::Load { model, message }),
            None => served,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Resolves once `stop` is set (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Resolves on SIGTERM or Ctrl-C.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Serves until stopped, then drains (see the module doc).
async fn serve(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    config: ServeConfig,
) -> Result<(), ServeError> {
    let io = |source| ServeError::Io {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::from_std(listener).map_err(io)?;
    if config.signals {
        let stop = stop.clone();
        tokio::spawn(async move {
            signal().await;
            stop.send_replace(true);
        });
    }
    let graceful = {
        let state = Arc::clone(&state);
        let rx = stop.subscribe();
        async move {
            stopped(rx).await;
            state.set_stopping();
        }
    };
    let deadline = {
        let state = Arc::clone(&state);
        let rx = stop.subscribe();
        async move {
            stopped(rx).await;
            tokio::time::sleep(config.shutdown_timeout).await;
            state.cancel_all();
            // Cancelled requests answer within a step; connections that still hold on are left.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    };
    let app = api::router(Arc::clone(&state));
    let served = tokio::select! {
        r = axum::serve(listener, app).with_graceful_shutdown(graceful).into_future() => r.map_err(io),
        () = deadline => Ok(()),
    };
    state.cancel_all();
    served
}
