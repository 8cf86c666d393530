//! Compile jobs (`POST /v1/bitnetc/compile`): a table of jobs and one worker thread that runs them
//! one at a time, in the order they came (a compile already uses every core), through the
//! `Toolchain`. A job is `queued`, then `running`, then `done` (the artifact's path, size and
//! sha256) or `failed` (why). Each finished job is an audit record: `compile`, or `error` with
//! `"command": "compile"`.
//!
//! Jobs are kept for the server's life. A job still running when the server stops is abandoned.

use crate::audit::Audit;
use crate::error::ApiError;
use crate::toolchain::{CompileRequest, Toolchain};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where a job is.
#[derive(Clone, Debug, PartialEq)]
enum JobState {
    Queued,
    Running,
    Done {
        output: PathBuf,
        sha256: String,
        bytes: u64,
    },
    Failed(String),
}

/// A job of the table.
struct Job {
    id: String,
    request: CompileRequest,
    state: JobState,
    created: u64,
    wall_s: Option<f64>,
}

impl Job {
    /// The job as `GET /v1/bitnetc/jobs/{id}` answers it.
    fn json(&self) -> Value {
        let (status, mut v) = match &self.state {
            JobState::Queued => ("queued", json!({})),
            JobState::Running => ("running", json!({})),
            JobState::Done {
                output,
                sha256,
                bytes,
            } => (
                "done",
                json!({"artifact": output.display().to_string(), "sha256": sha256, "bytes": bytes}),
            ),
            JobState::Failed(message) => ("failed", json!({"error": message})),
        };
        v["id"] = self.id.clone().into();
        v["object"] = "bitnetc.compile_job".into();
        v["status"] = status.into();
        v["created"] = self.created.into();
        v["model"] = self.request.model.display().to_string().into();
        v["output"] = self.request.output.display().to_string().into();
        v["target"] = self.request.target.clone().into();
        v["context"] = self.request.context.into();
        v["wall_s"] = self.wall_s.into();
        v
    }
}

type Table = Arc<Mutex<Vec<Job>>>;

/// The jobs and their worker (see the module doc).
pub struct Jobs {
    table: Table,
    tx: Mutex<Option<Sender<String>>>,
}

impl Jobs {
    /// The job table; with a toolchain, its worker thread too.
    pub fn start(
        toolchain: Option<Arc<dyn Toolchain>>,
        audit: Option<Arc<Audit>>,
    ) -> std::io::Result<Jobs> {
        let table = Table::default();
        let tx = match toolchain {
            Some(toolchain) => {
                let (tx, rx) = std::sync::mpsc::channel();
                let table = Arc::clone(&table);
                std::thread::Builder::new()
                    .name("compile".into())
                    .spawn(move || work(&*toolchain, audit.as_deref(), &table, &rx))?;
                Some(tx)
            }
            None => None,
        };
        Ok(Jobs {
            table,
            tx: Mutex::new(tx),
        })
    }

    /// Queues `request` (checked); its status. 409 if a job not finished writes the same output.
    pub fn submit(&self, request: CompileRequest) -> Result<Value, ApiError> {
        let mut table = self
            .table
            .lock()
            .map_err(|_| ApiError::internal("The job table is unwritable".into()))?;
        if let Some(other) = table.iter().find(|j| {
            j.request.output == request.output
                && matches!(j.state, JobState::Queued | JobState::Running)
        }) {
            return Err(ApiError::conflict(
                "output",
                format!(
                    "Invalid 'output': {} is the output of job {}, which has not finished",
                    request.output.display(),
                    other.id
                ),
            ));
        }
        let tx = self
            .tx
            .lock()
            .map_err(|_| ApiError::internal("The job queue is unusable".into()))?;
        let Some(tx) = tx.as_ref() else {
            return Err(ApiError::unavailable(
                "The server is not taking compile jobs (it is stopping)".into(),
            ));
        };
        let id = format!("job-{}", table.len() + 1);
        let job = Job {
            id: id.clone(),
            request,
            state: JobState::Queued,
            created: crate::audit::now(),
            wall_s: None,
        };
        let status = job.json();
        tx.send(id)
            .map_err(|_| ApiError::internal("The compile worker has stopped".into()))?;
        table.push(job);
        Ok(status)
    }

    /// The status of job `id`, if there is one.
    pub fn status(&self, id: &str) -> Option<Value> {
        let table = self.table.lock().ok()?;
        table.iter().find(|j| j.id == id).map(Job::json)
    }

    /// Takes no more jobs; the worker ends after the one it runs.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }
}

/// Sets job `id`'s state; its request.
fn set(table: &Table, id: &str, state: JobState, wall_s: Option<f64>) -> Option<CompileRequest> {
    let mut table = table.lock().ok()?;
    let job = table.iter_mut().find(|j| j.id == id)?;
    job.state = state;
    job.wall_s = wall_s;
    Some(job.request.clone())
}

/// The worker: runs each job it is sent, until the sender is gone.
fn work(toolchain: &dyn Toolchain, audit: Option<&Audit>, table: &Table, rx: &Receiver<String>) {
    while let Ok(id) = rx.recv() {
        let Some(request) = set(table, &id, JobState::Running, None) else {
            continue;
        };
        let started = Instant::now();
        let compiled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| toolchain.compile(&request)))
                .unwrap_or_else(|_| Err("the compiler failed (a bug: it panicked)".into()))
                .and_then(|c| {
                    let (sha256, bytes) =
                        bitnet_runtime::audit::file_sha256(&c.output).map_err(|e| {
                            format!("the artifact was written but cannot be read back: {e}")
                        })?;
                    Ok(JobState::Done {
                        output: c.output,
                        sha256,
                        bytes,
                    })
                });
        let wall_s = started.elapsed().as_secs_f64();
        let state = compiled.unwrap_or_else(JobState::Failed);
        if let Some(audit) = audit {
            let mut fields = json!({
                "command": "compile",
                "job": id,
                "model": request.model.display().to_string(),
                "output": request.output.display().to_string(),
                "flags": {"target": request.target, "context": request.context},
                "wall_s": wall_s,
            });
            fields["inputs"] = bitnet_runtime::audit::input_digests(&request.model)
                .unwrap_or_else(|e| json!({"error": e.to_string()}));
            let kind = match &state {
                JobState::Done { sha256, .. } => {
                    fields["output_sha256"] = sha256.clone().into();
                    "compile"
                }
                JobState::Failed(message) => {
                    fields["message"] = message.clone().into();
                    "error"
                }
                JobState::Queued | JobState::Running => "error",
            };
            audit.record(kind, fields);
        }
        set(table, &id, state, Some(wall_s));
    }
}
