//! The audit log: records chain by sha256, and editing, deleting, reordering or truncating a record is
//! detected at its line; a write cut off by a crash leaves every whole record verifiable, before and
//! after later appends; `bitnetc --audit-log` writes records that `bitnetc audit verify` accepts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::bitnetc;

use bitnet_runtime::audit::{AuditLog, ProblemKind, VerifyReport, ZERO_HASH, verify};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A log of `n` records in a fresh scratch folder (the log itself in a subfolder `open` creates).
fn log_of(tag: &str, n: u64) -> (support::Scratch, PathBuf) {
    let dir = support::Scratch::create(&format!("audit-{tag}"));
    let path = dir.join("sub/audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    for i in 0..n {
        let kind = ["compile", "load", "run", "error"][i as usize % 4];
        log.append(kind, json!({"i": i, "note": format!("record {i}")}))
            .unwrap();
    }
    (dir, path)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn problem(report: &VerifyReport) -> (usize, ProblemKind) {
    let p = report
        .problem
        .as_ref()
        .unwrap_or_else(|| panic!("no problem found: {report:?}"));
    (p.line, p.kind)
}

#[test]
fn appended_records_chain_and_verify() {
    let (_dir, path) = log_of("ok", 5);
    let report = verify(&path).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records, 5);
    assert_eq!(report.incomplete_tail, None);
    let ls = lines(&path);
    let first: Value = serde_json::from_str(&ls[0]).unwrap();
    assert_eq!(first["prev"], ZERO_HASH);
    assert_eq!(first["seq"], 0);
    assert_eq!(first["kind"], "compile");
    let time = first["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
        "{time}"
    );
    let second: Value = serde_json::from_str(&ls[1]).unwrap();
    assert_eq!(
        second["prev"],
        bitnet_runtime::audit::sha256_hex(ls[0].as_bytes())
    );
    // Keys are written sorted, so `fields` comes first.
    assert!(ls[0].starts_with("{\"fields\":"), "{}", ls[0]);
    // Reopening continues the chain.
    AuditLog::open(&path)
        .unwrap()
        .append("run", json!({}))
        .unwrap();
    assert_eq!(verify(&path).unwrap().records, 6);
}

#[test]
fn an_unknown_kind_is_refused() {
    let (_dir, path) = log_of("kind", 1);
    let e = AuditLog::open(&path)
        .unwrap()
        .append("bogus", json!({}))
        .unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    assert_eq!(lines(&path).len(), 1);
}

#[test]
fn an_edited_field_is_detected_at_its_line() {
    let (_dir, path) = log_of("edit", 5);
    let mut ls = lines(&path);
    ls[2] = ls[2].replace("\"i\":2", "\"i\":7");
    write_lines(&path, &ls);
    let report = verify(&path).unwrap();
    assert_eq!(problem(&report), (3, ProblemKind::HashMismatch));
    assert_eq!(report.records, 2);
}

#[test]
fn an_edit_that_also_fixes_the_hash_breaks_the_next_link() {
    let (_dir, path) = log_of("rehash", 4);
    let mut ls = lines(&path);
    let mut v: Value = serde_json::from_str(&ls[1]).unwrap();
    v["fields"]["i"] = json!(9);
    let obj = v.as_object_mut().unwrap();
    obj.remove("hash");
    let hash = bitnet_runtime::audit::sha256_hex(
        bitnet_runtime::audit::canonical(&Value::Object(obj.clone())).as_bytes(),
    );
    obj.insert("hash".into(), hash.into());
    ls[1] = bitnet_runtime::audit::canonical(&v);
    write_lines(&path, &ls);
    assert_eq!(
        problem(&verify(&path).unwrap()),
        (3, ProblemKind::PrevMismatch)
    );
}

#[test]
fn a_deleted_record_is_detected() {
    let (_dir, path) = log_of("delete", 5);
    let mut ls = lines(&path);
    ls.remove(2);
    write_lines(&path, &ls);
    let report = verify(&path).unwrap();
    assert_eq!(problem(&report), (3, ProblemKind::SeqMismatch));
    assert_eq!(report.records, 2);
}

#[test]
fn swapped_records_are_detected() {
    let (_dir, path) = log_of("swap", 5);
    let mut ls = lines(&path);
    ls.swap(1, 2);
    write_lines(&path, &ls);
    assert_eq!(
        problem(&verify(&path).unwrap()),
        (2, ProblemKind::SeqMismatch)
    );
}

#[test]
fn a_record_damaged_in_the_middle_is_detected() {
    let (_dir, path) = log_of("damage", 5);
    let mut ls = lines(&path);
    let half = ls[1].len() / 2;
    ls[1].truncate(half);
    write_lines(&path, &ls);
    let report = verify(&path).unwrap();
    assert_eq!(problem(&report), (2, ProblemKind::Unparsable));
    assert_eq!(report.records, 1);
}

#[test]
fn a_truncated_last_record_leaves_the_whole_records_verifiable() {
    let (_dir, path) = log_of("truncate", 4);
    let bytes = std::fs::read(&path).unwrap();
    let last = lines(&path)[3].len();
    std::fs::write(&path, &bytes[..bytes.len() - 1 - last / 2]).unwrap();
    let report = verify(&path).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records, 3);
    assert_eq!(report.incomplete_tail, Some(4));
}

#[test]
fn appending_after_a_crash_tail_keeps_everything_verifiable() {
    let (_dir, path) = log_of("crash", 3);
    // A process killed mid-write: half a record and no newline.
    let half = {
        let l = &lines(&path)[2];
        l[..l.len() / 2].to_string()
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, half.as_bytes()).unwrap();
    drop(f);
    let before = std::fs::read(&path).unwrap();
    assert_eq!(verify(&path).unwrap().incomplete_tail, Some(4));

    let mut log = AuditLog::open(&path).unwrap();
    let r = log.append("run", json!({"after": "crash"})).unwrap();
    assert_eq!(r.seq, 3);
    log.append("error", json!({"message": "x"})).unwrap();
    // Nothing written before was modified.
    assert!(std::fs::read(&path).unwrap().starts_with(&before));
    let report = verify(&path).unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records, 5);
    assert_eq!(report.skipped, vec![4]);
    assert_eq!(report.incomplete_tail, None);

    // Deleting the record after the crash line is still detected: the next record no longer links
    // across the crash line, which is then reported as the first broken place.
    let mut ls = lines(&path);
    ls.remove(4);
    write_lines(&path, &ls);
    let report = verify(&path).unwrap();
    assert_eq!(problem(&report), (4, ProblemKind::Unparsable));
    assert!(report.problem.unwrap().detail.contains("line 5"));
    assert_eq!(report.records, 3);
}

#[test]
fn an_empty_or_missing_log() {
    let dir = support::Scratch::create("audit-empty");
    let path = dir.join("a.jsonl");
    assert!(verify(&path).is_err());
    AuditLog::open(&path).unwrap();
    assert_eq!(verify(&path).unwrap(), VerifyReport::default());
}

#[test]
fn cli_logits_records_verify() {
    let dir = support::Scratch::create("audit-cli");
    let log = dir.join("logs/audit.jsonl");
    let log_s = log.to_str().unwrap();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/packed");
    let model_s = model.to_str().unwrap();
    let o = bitnetc(&[
        "--audit-log",
        log_s,
        "logits",
        model_s,
        "--tokens",
        "1,17,256",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bitnetc(&[
        "logits",
        model_s,
        "--tokens",
        "1,2",
        "--backend",
        "gpu",
        "--audit-log",
        log_s,
    ]);
    assert_eq!(o.status.code(), Some(1));

    let ls = lines(&log);
    assert_eq!(ls.len(), 4, "a start and a result record per command");
    let start: Value = serde_json::from_str(&ls[0]).unwrap();
    let run: Value = serde_json::from_str(&ls[1]).unwrap();
    assert_eq!(start["kind"], "start");
    assert_eq!(start["fields"]["command"], "logits");
    assert_eq!(start["fields"]["op"], run["fields"]["op"]);
    assert_eq!(run["kind"], "run");
    assert_eq!(run["fields"]["tokens"], 3);
    assert_eq!(run["fields"]["backend"], "interp");
    assert!(run["fields"]["wall_s"].is_f64());
    let inputs = run["fields"]["inputs"].as_array().unwrap();
    assert!(
        inputs
            .iter()
            .all(|i| i["sha256"].as_str().unwrap().len() == 64)
    );
    let err: Value = serde_json::from_str(&ls[3]).unwrap();
    assert_eq!(err["kind"], "error");
    assert_ne!(err["fields"]["op"], run["fields"]["op"]);
    assert!(err["fields"]["message"].as_str().unwrap().contains("gpu"));

    let o = bitnetc(&["audit", "verify", log_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok: 4 records");

    let mut ls = ls;
    ls[1] = ls[1].replace("\"tokens\":3", "\"tokens\":4");
    write_lines(&log, &ls);
    let o = bitnetc(&["audit", "verify", log_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("line 2:"));
}

#[test]
fn logging_can_be_turned_off() {
    let tmp = support::Scratch::create("audit-off");
    let model = support::root().join("tests/fixtures/hf-tiny/packed");
    let o = Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args(["logits", model.to_str().unwrap(), "--tokens", "1,2"])
        .env("BITNETC_AUDIT_LOG", "off")
        .env("XDG_DATA_HOME", tmp.join("data"))
        .env("HOME", tmp.join("home"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!tmp.join("data").exists() && !tmp.join("home").exists());
    // `--audit-log off` too, run from the scratch folder: no file named `off` appears.
    let o = Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args([
            "--audit-log",
            "off",
            "logits",
            model.to_str().unwrap(),
            "--tokens",
            "1,2",
        ])
        .env_remove("BITNETC_AUDIT_LOG")
        .env("XDG_DATA_HOME", tmp.join("data"))
        .env("HOME", tmp.join("home"))
        .current_dir(&*tmp)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!tmp.join("off").exists() && !tmp.join("data").exists() && !tmp.join("home").exists());
    let o = bitnetc(&["--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("BITNETC_AUDIT_LOG"));
}

#[test]
fn records_with_arbitrary_floats_verify() {
    // Timings are floats; a JSON float must read back to the same bits or the hash breaks.
    let tmp = support::Scratch::create("audit-floats");
    let path = tmp.join("floats.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = f64::from_bits(x);
        let v = if v.is_finite() {
            v
        } else {
            (x >> 11) as f64 * 1e-9
        };
        log.append("run", json!({"wall_s": v, "ms": v.abs().sqrt()}))
            .unwrap();
    }
    let report = verify(&path).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, 300);
}

#[test]
fn a_killed_command_is_reported_as_interrupted() {
    let tmp = support::Scratch::create("audit-killed");
    let log = tmp.join("audit.jsonl");
    let model = support::root().join("tests/fixtures/hf-tiny/packed");
    // Kill `compile` as soon as its start record is on disk; a compile that already ended by then
    // (its result record written) is tried again.
    let lines = |p: &Path| if p.exists() { lines(p) } else { Vec::new() };
    let mut killed = false;
    for attempt in 0..20 {
        let before = lines(&log).len();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bitnetc"))
            .arg("--audit-log")
            .arg(&log)
            .arg("compile")
            .arg(&model)
            .arg("-o")
            .arg(tmp.join(format!("m{attempt}.bnx")))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while lines(&log).len() == before && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        let new: Vec<Value> = lines(&log)[before..]
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if new.len() == 1 && new[0]["kind"] == "start" {
            killed = true;
            break;
        }
    }
    assert!(
        killed,
        "no compile was killed between its start and its end"
    );
    let o = bitnetc(&["audit", "verify", log.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    let interrupted: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("interrupted:"))
        .collect();
    assert_eq!(interrupted.len(), 1, "{out}");
    assert!(
        interrupted[0].contains("compile started at") && interrupted[0].contains("never ended"),
        "{out}"
    );
}

#[test]
fn several_processes_appending_at_once_keep_one_chain() {
    let tmp = support::Scratch::create("audit-processes");
    let log = tmp.join("audit.jsonl");
    let model = support::root().join("tests/fixtures/hf-tiny/packed");
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_bitnetc"))
                .arg("--audit-log")
                .arg(&log)
                .args(["logits", model.to_str().unwrap(), "--tokens"])
                .arg(format!("1,{}", 2 + i))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let report = verify(&log).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(
        report.records, 8,
        "a start and a result record from each of 4 processes"
    );
    assert!(report.unfinished.is_empty(), "{:?}", report.unfinished);
}
