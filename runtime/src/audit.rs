//! The audit log: an append-only file of JSON lines, one record per line, each chained to the one
//! before it by a sha256, so that editing, deleting or reordering a record is detected.
//!
//! A record is one line of canonical JSON (keys sorted at every depth, no whitespace) with the keys
//! `fields`, `hash`, `kind`, `prev`, `seq` and `time`:
//! - `seq` counts records from 0;
//! - `time` is the RFC 3339 UTC time of the append, to the millisecond;
//! - `kind` is one of [`KINDS`] (`compile`, `load`, `run`, `error`, the server's `request` and
//!   `unload`, `start`, and `export` (`bitnetc export`: a model written in another format));
//! - `prev` is the sha256 (hex) of the previous record's line, without its newline, or 64 zeros;
//! - `hash` is the sha256 (hex) of the canonical JSON of the record without its `hash` key.
//!
//! Each append writes its line in one `write` and then `fsync`s the data, under an exclusive file
//! lock, so records from processes sharing a log neither interleave nor fork the chain.
//!
//! Crashes: a process killed mid-write leaves a last line without its newline. Nothing already written
//! is ever modified, so the next append first writes a newline: the cut-off line stays on its own as an
//! unparsable line, and the new record's `prev` links to the last whole record, across it. [`verify`]
//! therefore skips unparsable lines that the chain links across (they hide no record: a deleted or
//! damaged whole record breaks the link of the record after it), and reports unparsable lines at the
//! end of the file as an incomplete tail. Every whole record before them verifies.
//!
//! Operations: a command or a served request writes a `start` record (with a unique `op` id, the
//! command and the process id) before it does anything, and its result record (`compile`, `run`,
//! `error`, `request`…) carries the same `op`. [`verify`] lists the `start` records no later record
//! ends: operations interrupted (a killed process) or still running.

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The record kinds.
pub const KINDS: [&str; 8] = [
    "compile", "load", "run", "error", "request", "unload", "start", "export",
];

/// The `prev` of the first record.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Everything that can go wrong writing or reading an audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file system refused.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A record kind outside [`KINDS`].
    #[error("audit record kind {0:?}: expected one of {kinds}", kinds = KINDS.join(", "))]
    UnknownKind(String),
}

type Result<T> = std::result::Result<T, AuditError>;

fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> AuditError {
    let path = path.to_path_buf();
    move |source| AuditError::Io { path, what, source }
}

/// One record, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its position in the log, from 0.
    pub seq: u64,
    /// When it was appended (RFC 3339, UTC).
    pub time: String,
    /// One of [`KINDS`].
    pub kind: String,
    /// What it records.
    pub fields: serde_json::Value,
    /// The sha256 of the previous record's line.
    pub prev: String,
    /// The sha256 of this record without its `hash`.
    pub hash: String,
    /// The line written, without its newline.
    pub line: String,
}

/// An audit log open for appending.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// The file's length after this log's last append, and the chain's tail then: while the
    /// length is unchanged (no other process appended), the next append need not read the file
    /// again, so a long-running writer (the server) appends in constant time.
    last: Option<(u64, Tail)>,
}

/// Where the chain stands: the next seq, the hash the next record links to, and whether the file
/// ends inside a line.
struct Tail {
    seq: u64,
    prev: String,
    partial: bool,
}

impl AuditLog {
    /// Opens (creating it and its parent folders if needed) the log at `path` for appending. It never
    /// truncates nor rewrites what is there.
    pub fn open(path: &Path) -> Result<AuditLog> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent, "cannot create the folder"))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io(path, "cannot open the audit log"))?;
        // Reading the tail now reports an unreadable log at open rather than at the first append.
        read_tail(&mut file, path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file,
            last: None,
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a record of `kind` holding `fields`, then syncs it to disk.
    pub fn append(&mut self, kind: &str, fields: serde_json::Value) -> Result<Record> {
        if !KINDS.contains(&kind) {
            return Err(AuditError::UnknownKind(kind.to_string()));
        }
        let path = self.path.clone();
        self.file
            .lock()
            .map_err(io(&path, "cannot lock the audit log"))?;
        let written = self.append_locked(kind, fields);
        let unlocked = self
            .file
            .unlock()
            .map_err(io(&path, "cannot unlock the audit log"));
        let record = written?;
        unlocked?;
        Ok(record)
    }

    fn append_locked(&mut self, kind: &str, fields: serde_json::Value) -> Result<Record> {
        // Another process may have appended since the last append (or the open): unless the file
        // still has the length this log left it with, the chain is read again under the lock.
        let len = self
            .file
            .metadata()
            .map_err(io(&self.path, "cannot read the audit log"))?
            .len();
        let tail = match self.last.take() {
            Some((at, tail)) if at == len => tail,
            _ => read_tail(&mut self.file, &self.path)?,
        };
        let time = rfc3339(SystemTime::now());
        let mut body = serde_json::Map::new();
        body.insert("fields".into(), fields.clone());
        body.insert("kind".into(), kind.into());
        body.insert("prev".into(), tail.prev.clone().into());
        body.insert("seq".into(), tail.seq.into());
        body.insert("time".into(), time.clone().into());
        let hash = sha256_hex(canonical(&serde_json::Value::Object(body.clone())).as_bytes());
        body.insert("hash".into(), hash.clone().into());
        let line = canonical(&serde_json::Value::Object(body));
        let mut bytes = Vec::with_capacity(line.len() + 2);
        if tail.partial {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .map_err(io(&self.path, "cannot append to the audit log"))?;
        self.file
            .sync_data()
            .map_err(io(&self.path, "cannot sync the audit log"))?;
        self.last = Some((
            len.saturating_add(bytes.len() as u64),
            Tail {
                seq: tail.seq.saturating_add(1),
                prev: sha256_hex(line.as_bytes()),
                partial: false,
            },
        ));
        Ok(Record {
            seq: tail.seq,
            time,
            kind: kind.to_string(),
            fields,
            prev: tail.prev,
            hash,
            line,
        })
    }
}

/// Reads the whole log and finds the last whole record.
fn read_tail(file: &mut File, path: &Path) -> Result<Tail> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .map_err(io(path, "cannot read the audit log"))?;
    file.read_to_end(&mut bytes)
        .map_err(io(path, "cannot read the audit log"))?;
    let partial = bytes.last().is_some_and(|&b| b != b'\n');
    let mut tail = Tail {
        seq: 0,
        prev: ZERO_HASH.to_string(),
        partial,
    };
    for line in bytes.split(|&b| b == b'\n') {
        if let Some((seq, _)) = parse(line).and_then(|v| header(&v)) {
            tail.seq = seq.saturating_add(1);
            tail.prev = sha256_hex(line);
        }
    }
    Ok(tail)
}

/// What is wrong at the first broken place of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A line that is not JSON, and that the chain does not link across: damaged or inserted.
    Unparsable,
    /// JSON without the record keys, or with keys of the wrong type.
    Malformed,
    /// The record's content does not match its `hash`: edited.
    HashMismatch,
    /// The line is not the canonical JSON of its record: reformatted.
    NotCanonical,
    /// `seq` is not one more than the previous record's: a record deleted, inserted or reordered.
    SeqMismatch,
    /// `prev` is not the hash of the previous record's line: a record deleted, edited or reordered.
    PrevMismatch,
}

/// The first broken place of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub kind: ProblemKind,
    /// Why, in words.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.detail)
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Whole records that verify, before the first problem if any.
    pub records: usize,
    /// Unparsable lines the chain links across (writes cut off by a crash), by line number.
    pub skipped: Vec<usize>,
    /// The first line of an incomplete tail: unparsable lines at the end, from a write cut off.
    pub incomplete_tail: Option<usize>,
    /// The first broken link, if any.
    pub problem: Option<Problem>,
    /// Operations whose `start` record no later record ends (by its `op`), in log order.
    pub unfinished: Vec<Unfinished>,
}

/// An operation that started and never ended in the log: killed, or still running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    /// The line of its `start` record, from 1.
    pub line: usize,
    /// Its `op` id.
    pub op: String,
    /// What it was (`fields.command`: compile, run, bench, a served route…).
    pub command: String,
    /// When it started.
    pub time: String,
    /// The process that ran it, if recorded.
    pub pid: Option<u64>,
}

/// A fresh operation id: unique among the operations of every process writing a log (the process
/// id, the time in nanoseconds and a counter within the process).
pub fn new_op_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl VerifyReport {
    /// Whether the chain holds (an incomplete tail from a crash does not break it).
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Walks the log at `path` and reports the first broken link. Only I/O failures are errors.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    let bytes = std::fs::read(path).map_err(io(path, "cannot read the audit log"))?;
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // A final newline ends the last line; it does not start an empty one.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut report = VerifyReport::default();
    let mut expect_seq = 0u64;
    let mut expect_prev = ZERO_HASH.to_string();
    // Unparsable lines since the last whole record: skipped if the next record links across them.
    let mut pending: Vec<usize> = Vec::new();
    let mut open_ops: Vec<Unfinished> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let Some(value) = parse(line) else {
            pending.push(n);
            continue;
        };
        let problem = |kind, detail: String| Problem {
            line: n,
            kind,
            detail,
        };
        let found = check(&value, line, expect_seq, &expect_prev, &problem);
        if let Err(mut p) = found {
            if let (Some(&first), ProblemKind::SeqMismatch | ProblemKind::PrevMismatch) =
                (pending.first(), p.kind)
            {
                p = Problem {
                    line: first,
                    kind: ProblemKind::Unparsable,
                    detail: format!(
                        "not a record, and the record at line {n} does not link across it ({})",
                        p.detail
                    ),
                };
            }
            report.problem = Some(p);
            report.unfinished = open_ops;
            return Ok(report);
        }
        report.skipped.append(&mut pending);
        report.records += 1;
        track_op(&value, n, &mut open_ops);
        expect_seq = expect_seq.saturating_add(1);
        expect_prev = sha256_hex(line);
    }
    report.incomplete_tail = pending.first().copied();
    report.unfinished = open_ops;
    Ok(report)
}

/// Opens an operation at a `start` record; closes it at any other record with its `op`.
fn track_op(record: &serde_json::Value, line: usize, open: &mut Vec<Unfinished>) {
    let fields = &record["fields"];
    let Some(op) = fields["op"].as_str() else {
        return;
    };
    if record["kind"] == "start" {
        open.push(Unfinished {
            line,
            op: op.to_string(),
            command: fields["command"].as_str().unwrap_or("?").to_string(),
            time: record["time"].as_str().unwrap_or_default().to_string(),
            pid: fields["pid"].as_u64(),
        });
    } else if let Some(i) = open.iter().position(|u| u.op == op) {
        open.remove(i);
    }
}

/// Checks one parsed record against its line and the chain so far.
fn check(
    value: &serde_json::Value,
    line: &[u8],
    expect_seq: u64,
    expect_prev: &str,
    problem: &dyn Fn(ProblemKind, String) -> Problem,
) -> std::result::Result<(), Problem> {
    let Some((seq, prev)) = header(value) else {
        return Err(problem(
            ProblemKind::Malformed,
            "not an audit record (it needs fields, hash, kind, prev, seq and time)".into(),
        ));
    };
    let obj = value.as_object().ok_or_else(|| {
        problem(
            ProblemKind::Malformed,
            "not an audit record (not an object)".into(),
        )
    })?;
    let stated = obj.get("hash").and_then(|h| h.as_str()).unwrap_or_default();
    let mut body = obj.clone();
    body.remove("hash");
    let actual = sha256_hex(canonical(&serde_json::Value::Object(body)).as_bytes());
    if stated != actual {
        return Err(problem(
            ProblemKind::HashMismatch,
            format!(
                "record {seq} does not match its hash (edited): it hashes to {actual}, it says {stated}"
            ),
        ));
    }
    if canonical(value).as_bytes() != line {
        return Err(problem(
            ProblemKind::NotCanonical,
            format!("record {seq} is not written in canonical form (reformatted)"),
        ));
    }
    if seq != expect_seq {
        return Err(problem(
            ProblemKind::SeqMismatch,
            format!(
                "record {seq} where record {expect_seq} was expected (a record was deleted, inserted or reordered)"
            ),
        ));
    }
    if prev != expect_prev {
        return Err(problem(
            ProblemKind::PrevMismatch,
            format!(
                "record {seq} does not link to the record before it: prev is {prev}, expected {expect_prev}"
            ),
        ));
    }
    Ok(())
}

fn parse(line: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .filter(|v| v.is_object())
}

/// A record's `seq` and `prev`, if it has every key with the right type.
fn header(v: &serde_json::Value) -> Option<(u64, String)> {
    let o = v.as_object()?;
    if o.len() != 6 || !o.contains_key("fields") {
        return None;
    }
    o.get("hash")?.as_str()?;
    o.get("kind")?.as_str()?;
    o.get("time")?.as_str()?;
    Some((
        o.get("seq")?.as_u64()?,
        o.get("prev")?.as_str()?.to_string(),
    ))
}

/// Canonical JSON: object keys sorted at every depth, no whitespace. It does not rely on
/// `serde_json::Map`'s order, which a `preserve_order` feature elsewhere in a build would change.
pub fn canonical(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The sha256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The sha256 (hex) and size of a file, read in a stream.
pub fn file_sha256(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(io(path, "cannot open"))?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut f, &mut hasher).map_err(io(path, "cannot read"))?;
    Ok((hex(&hasher.finalize()), bytes))
}

/// `[{path, sha256, bytes}]` for a file, or for each file directly in a folder (by name), for records
/// of what a command read.
pub fn input_digests(path: &Path) -> Result<serde_json::Value> {
    let mut files = Vec::new();
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(io(path, "cannot list"))?;
        for e in entries {
            let p = e.map_err(io(path, "cannot list"))?.path();
            if p.is_file() {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let (sha256, bytes) = file_sha256(&f)?;
        out.push(serde_json::json!({
            "path": f.display().to_string(), "sha256": sha256, "bytes": bytes,
        }));
    }
    Ok(serde_json::Value::Array(out))
}

/// Formats a time as RFC 3339 in UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`.
/// Times before 1970 are written as 1970-01-01T00:00:00.000Z.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian date of a day count from 1970-01-01,
/// using 400-year eras of 146 097 days that start on March 1st.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_times() {
        let at = |s| rfc3339(UNIX_EPOCH + Duration::from_millis(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(4_102_444_799_000), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn appends_between_two_handles_keep_one_chain() {
        let dir = std::env::temp_dir().join(format!("bitnet-audit-two-{}", std::process::id()));
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        let mut logs = match (AuditLog::open(&path), AuditLog::open(&path)) {
            (Ok(a), Ok(b)) => [a, b],
            _ => panic!("cannot open {}", path.display()),
        };
        let seqs: Vec<u64> = [0, 1, 0, 0, 1]
            .into_iter()
            .filter_map(|i: usize| logs[i].append("run", serde_json::json!({})).ok())
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4]);
        let report = verify(&path).ok();
        assert_eq!(report.map(|r| (r.ok(), r.records)), Some((true, 5)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn canonical_sorts_keys_at_every_depth() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1, {"z": 0, "y": "x"}], "c": null}});
        assert_eq!(
            canonical(&v),
            r#"{"a":{"c":null,"d":[1,{"y":"x","z":0}]},"b":1}"#
        );
    }
}
