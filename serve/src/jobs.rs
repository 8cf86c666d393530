//! Gateway jobs: compiles (`POST /v1/bitnetc/compile`), validations, profiles and compliance
//! checks (`POST /v1/bitnetc/{validate,profile,compliance}`), kept in one table and run by one worker thread one at a time, in the
//! order they came (each already uses every core), through the `Toolchain`. A job is `queued`,
//! then `running`, then `done` (a compile's artifact path, size and sha256; the others' report
//! and whether it passed) or `failed` (why). Each finished job is an audit record: `compile`, or
//! `run` with the command's name, or `error` naming the command.
//!
//! Jobs are kept for the server's life. A job still running when the server stops is abandoned.

use crate::audit::Audit;
use crate::error::ApiError;
use crate::toolchain::{
    CompileRequest, ComplianceRequest, ProfileRequest, Toolchain, ValidateRequest,
};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a job does.
#[derive(Clone, Debug, PartialEq)]
pub enum JobRequest {
    /// Compile an artifact.
    Compile(CompileRequest),
    /// Validate a model.
    Validate(ValidateRequest),
    /// Profile a model.
    Profile(ProfileRequest),
    /// Run the compliance checks.
    Compliance(ComplianceRequest),
}

impl JobRequest {
    /// The command's name.
    fn command(&self) -> &'static str {
        match self {
            JobRequest::Compile(_) => "compile",
            JobRequest::Validate(_) => "validate",
            JobRequest::Profile(_) => "profile",
            JobRequest::Compliance(_) => "compliance",
        }
    }

    /// The model (or artifact) the job is about, if any.
    fn model(&self) -> Option<&Path> {
        match self {
            JobRequest::Compile(r) => Some(&r.model),
            JobRequest::Validate(r) => Some(&r.model),
            JobRequest::Profile(r) => Some(&r.model),
            JobRequest::Compliance(r) => r.target.as_deref(),
        }
    }

    /// The request's fields, as the job's status and its audit record show them.
    fn fields(&self) -> Value {
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        match self {
            JobRequest::Compile(r) => json!({
                "output": r.output.display().to_string(),
                "target": r.target,
                "context": r.context,
            }),
            JobRequest::Validate(r) => json!({
                "reference": path(&r.reference),
                "gates": r.gates,
                "text": path(&r.text),
                "tokenizer": path(&r.tokenizer),
                "window": r.window,
                "windows": r.windows,
            }),
            JobRequest::Profile(r) => json!({
                "prompt_len": r.prompt_len,
                "steps": r.steps,
                "baseline": path(&r.baseline),
                "threshold": r.threshold,
            }),
            JobRequest::Compliance(r) => json!({
                "source_model": path(&r.model),
                "level": r.level,
            }),
        }
    }
}

/// Where a job is.
#[derive(Clone, Debug, PartialEq)]
enum JobState {
    Queued,
    Running,
    /// Finished; what it made (fields of the status).
    Done(Value),
    Failed(String),
}

/// A job of the table.
struct Job {
    id: String,
    request: JobRequest,
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
            JobState::Done(result) => ("done", result.clone()),
            JobState::Failed(message) => ("failed", json!({"error": message})),
        };
        v["id"] = self.id.clone().into();
        v["object"] = format!("bitnetc.{}_job", self.request.command()).into();
        v["status"] = status.into();
        v["created"] = self.created.into();
        v["model"] = self.request.model().map(|m| m.display().to_string()).into();
        if let Value::Object(fields) = self.request.fields() {
            for (k, x) in fields {
                v[k] = x;
            }
        }
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
                    .name("jobs".into())
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

    /// Queues `request` (checked); its status. 409 if a compile not finished writes the same
    /// output.
    pub fn submit(&self, request: JobRequest) -> Result<Value, ApiError> {
        let mut table = self
            .table
            .lock()
            .map_err(|_| ApiError::internal("The job table is unwritable".into()))?;
        if let JobRequest::Compile(new) = &request
            && let Some(other) = table.iter().find(|j| {
                matches!(&j.request, JobRequest::Compile(r) if r.output == new.output)
                    && matches!(j.state, JobState::Queued | JobState::Running)
            })
        {
            return Err(ApiError::conflict(
                "output",
                format!(
                    "Invalid 'output': {} is the output of job {}, which has not finished",
                    new.output.display(),
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
                "The server is not taking jobs (it is stopping)".into(),
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
            .map_err(|_| ApiError::internal("The job worker has stopped".into()))?;
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
fn set(table: &Table, id: &str, state: JobState, wall_s: Option<f64>) -> Option<JobRequest> {
    let mut table = table.lock().ok()?;
    let job = table.iter_mut().find(|j| j.id == id)?;
    job.state = state;
    job.wall_s = wall_s;
    Some(job.request.clone())
}

/// Runs one job through the toolchain: what it made, or why it failed.
fn run(toolchain: &dyn Toolchain, request: &JobRequest) -> Result<Value, String> {
    match request {
        JobRequest::Compile(r) => {
            let c = toolchain.compile(r)?;
            let (sha256, bytes) = bitnet_runtime::audit::file_sha256(&c.output)
                .map_err(|e| format!("the artifact was written but cannot be read back: {e}"))?;
            Ok(
                json!({"artifact": c.output.display().to_string(), "sha256": sha256, "bytes": bytes}),
            )
        }
        JobRequest::Validate(r) => {
            let report = toolchain.validate(r)?;
            Ok(json!({"pass": report["pass"], "report": report}))
        }
        JobRequest::Profile(r) => {
            let report = toolchain.profile(r)?;
            let pass = report["regressions"]
                .as_array()
                .is_none_or(|found| found.is_empty());
            Ok(json!({"pass": pass, "report": report}))
        }
        JobRequest::Compliance(r) => {
            let report = toolchain.compliance(r)?;
            Ok(json!({"pass": report["pass"], "report": report}))
        }
    }
}

/// The worker: runs each job it is sent, until the sender is gone.
fn work(toolchain: &dyn Toolchain, audit: Option<&Audit>, table: &Table, rx: &Receiver<String>) {
    while let Ok(id) = rx.recv() {
        let Some(request) = set(table, &id, JobState::Running, None) else {
            continue;
        };
        let started = Instant::now();
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(toolchain, &request)))
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the {} failed (a bug: it panicked)",
                        request.command()
                    ))
                });
        let wall_s = started.elapsed().as_secs_f64();
        if let Some(audit) = audit {
            let mut fields = json!({
                "command": request.command(),
                "job": id,
                "model": request.model().map(|m| m.display().to_string()),
                "flags": request.fields(),
                "wall_s": wall_s,
            });
            if let Some(model) = request.model() {
                fields["inputs"] = bitnet_runtime::audit::input_digests(model)
                    .unwrap_or_else(|e| json!({"error": e.to_string()}));
            }
            let kind = match (&result, &request) {
                (Ok(done), JobRequest::Compile(r)) => {
                    fields["output"] = r.output.display().to_string().into();
                    fields["output_sha256"] = done["sha256"].clone();
                    "compile"
                }
                (Ok(done), _) => {
                    fields[request.command()] = done["report"].clone();
                    "run"
                }
                (Err(message), _) => {
                    fields["message"] = message.clone().into();
                    "error"
                }
            };
            audit.record(kind, fields);
        }
        let state = result.map_or_else(JobState::Failed, JobState::Done);
        set(table, &id, state, Some(wall_s));
    }
}
