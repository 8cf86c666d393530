//! The server's audit log (`bitnet_runtime::audit`, hash-chained JSON lines): one record for every
//! completion and chat request (`request`, after a `start` record with the same `op` written when
//! the request arrives), every model load (`load`) and unload (`unload`), and
//! every compile job (`compile`); a load or compile that fails is an `error` record naming its
//! `command`.
//!
//! A request's record holds its route, model, status, `finish_reason`, token counts and the
//! sha256 of its prompt and of its output; the prompt and output text themselves only with
//! `--audit-text`. The prompt's hash is over the request's `prompt` (its UTF-8 bytes when it is a
//! string) or `messages` (canonical JSON, as the log writes it), the output's over the generated
//! text's UTF-8 bytes.
//!
//! Appends (each one `fsync`s) happen on a writer thread of their own, in the order they were
//! sent, so a handler never waits for the disk; `Audit::flush` waits for what was sent before it,
//! and `Audit::close` (at shutdown) writes everything still queued.

use bitnet_runtime::audit::{AuditLog, canonical, sha256_hex};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

/// What the writer thread is sent.
enum Msg {
    /// Append a record of this kind.
    Record(&'static str, Value),
    /// Answer once everything sent before is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The log and its writer thread (see the module doc).
pub struct Audit {
    path: PathBuf,
    text: bool,
    tx: Mutex<Option<Sender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Audit {
    /// Starts the writer of `log`; `text`: records keep the prompt and output text.
    pub fn start(log: AuditLog, text: bool) -> std::io::Result<Audit> {
        let path = log.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || write(log, &rx))?;
        Ok(Audit {
            path,
            text,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether records keep the prompt and output text.
    pub fn text(&self) -> bool {
        self.text
    }

    /// Queues a record (never blocks on the disk); dropped after `close`.
    pub fn record(&self, kind: &'static str, fields: Value) {
        if let Ok(tx) = self.tx.lock()
            && let Some(tx) = tx.as_ref()
        {
            let _ = tx.send(Msg::Record(kind, fields));
        }
    }

    /// Waits until every record queued before is written.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        let sent = match self.tx.lock() {
            Ok(tx) => tx
                .as_ref()
                .is_some_and(|tx| tx.send(Msg::Flush(done)).is_ok()),
            Err(_) => false,
        };
        if sent {
            let _ = wait.await;
        }
    }

    /// Writes what is queued and stops the writer (later records are dropped).
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The writer thread: appends until every sender is gone.
fn write(mut log: AuditLog, rx: &Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Record(kind, fields) => {
                if let Err(e) = log.append(kind, fields) {
                    eprintln!("warning: audit log: a {kind} record was not written: {e}");
                }
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Unix time in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The last `limit` whole records of the log at `path`, oldest first (lines that are not records,
/// such as a write cut off by a crash, are left out).
pub fn recent(path: &Path, limit: usize) -> Result<Vec<Value>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("{}: cannot read the audit log: {e}", path.display()))?;
    let mut records: Vec<Value> = bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|v| v.get("seq").is_some_and(Value::is_u64))
        .collect();
    let skip = records.len().saturating_sub(limit);
    Ok(records.split_off(skip))
}

/// The sha256 of a prompt as the module doc says: a string's UTF-8 bytes, anything else's
/// canonical JSON.
pub fn prompt_sha256(prompt: &Value) -> String {
    match prompt {
        Value::String(s) => sha256_hex(s.as_bytes()),
        other => sha256_hex(canonical(other).as_bytes()),
    }
}

/// One request's record, filled in as the request goes; written when it ends, or when it is
/// dropped before that (the client went away: status 499, as nginx counts it).
pub struct RequestAudit {
    audit: Option<Arc<Audit>>,
    fields: Map<String, Value>,
    output: String,
    done: bool,
}

impl RequestAudit {
    /// A record for a request on `route` (nothing is written without a log).
    pub fn new(audit: Option<Arc<Audit>>, route: &str) -> RequestAudit {
        let mut fields = Map::new();
        fields.insert("route".into(), route.into());
        if let Some(audit) = &audit {
            // The start record: a server killed mid-request leaves it unended for `audit verify`.
            let op = bitnet_runtime::audit::new_op_id();
            audit.record(
                "start",
                json!({ "op": op, "command": route, "pid": std::process::id() }),
            );
            fields.insert("op".into(), op.into());
        }
        RequestAudit {
            audit,
            fields,
            output: String::new(),
            done: false,
        }
    }

    /// Records the model asked for.
    pub fn model(&mut self, model: &str) {
        self.fields.insert("model".into(), model.into());
    }

    /// Records the request's prompt (`prompt` or `messages`): its hash, and with `--audit-text`
    /// the prompt itself.
    pub fn prompt(&mut self, prompt: &Value) {
        let Some(audit) = &self.audit else {
            return;
        };
        self.fields
            .insert("prompt_sha256".into(), prompt_sha256(prompt).into());
        if audit.text() {
            self.fields.insert("prompt".into(), prompt.clone());
        }
    }

    /// Adds generated text.
    pub fn push(&mut self, text: &str) {
        if self.audit.is_some() {
            self.output.push_str(text);
        }
    }

    /// The request ended with status 200.
    pub fn finish(&mut self, finish_reason: &str, prompt_tokens: usize, completion_tokens: usize) {
        self.fields
            .insert("finish_reason".into(), finish_reason.into());
        self.fields
            .insert("prompt_tokens".into(), prompt_tokens.into());
        self.fields
            .insert("completion_tokens".into(), completion_tokens.into());
        self.write(200, None);
    }

    /// The request failed with `status`.
    pub fn fail(&mut self, status: u16, message: &str) {
        self.write(status, Some(message));
    }

    fn write(&mut self, status: u16, error: Option<&str>) {
        if self.done {
            return;
        }
        self.done = true;
        let Some(audit) = &self.audit else {
            return;
        };
        let mut fields = std::mem::take(&mut self.fields);
        fields.insert("status".into(), status.into());
        if let Some(e) = error {
            fields.insert("error".into(), e.into());
        }
        if status == 200 || !self.output.is_empty() {
            fields.insert(
                "output_sha256".into(),
                sha256_hex(self.output.as_bytes()).into(),
            );
            if audit.text() {
                fields.insert("output".into(), std::mem::take(&mut self.output).into());
            }
        }
        audit.record("request", Value::Object(fields));
    }
}

impl Drop for RequestAudit {
    fn drop(&mut self) {
        self.write(
            499,
            Some("the client went away before the end: the generation was cancelled"),
        );
    }
}

/// The report of `bitnet_runtime::audit::verify` as JSON.
pub fn verify_report(path: &Path) -> Result<Value, String> {
    let report = bitnet_runtime::audit::verify(path).map_err(|e| e.to_string())?;
    Ok(json!({
        "path": path.display().to_string(),
        "ok": report.ok(),
        "records": report.records,
        "skipped_lines": report.skipped,
        "incomplete_tail_line": report.incomplete_tail,
        "problem": report.problem.as_ref().map(|p| json!({
            "line": p.line,
            "kind": format!("{:?}", p.kind),
            "detail": p.detail,
        })),
        "unfinished": report.unfinished.iter().map(|u| json!({
            "line": u.line,
            "op": u.op,
            "command": u.command,
            "time": u.time,
            "pid": u.pid,
        })).collect::<Vec<_>>(),
    }))
}
