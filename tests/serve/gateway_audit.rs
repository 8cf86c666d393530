//! The audit log and the gateway of the `bitnetc serve` binary. In process with `--audit-text`:
//! records keep the prompt and output text, and the chain verifies over HTTP and after shutdown.
//! The binary, with an API key and an audit log: the key on every admin route, list and inspect,
//! a compile job to `done` whose artifact (its sha256 as the job says) is loaded at run time and
//! generates, refusal to overwrite, unload then 404, and the audit log read over HTTP (hashes, not
//! text, by default), verified, and whole after SIGTERM; validation, profile and compliance jobs
//! to their reports, and their routes' field errors.

use super::gateway::{get_json, serve_gateway, toolchain};
use super::harness::*;
use super::support::{Scratch, have_cc};
use bitnet_serve::GatewayConfig;
use bitnetc::runtime::audit::{AuditLog, file_sha256, sha256_hex};
use serde_json::{Value, json};
use std::io::Read;

const KEY: &str = "gateway-key";

/// A `bitnetc serve` child process and its base URL.
struct Cli {
    child: std::process::Child,
    stderr: std::io::BufReader<std::process::ChildStderr>,
    base: String,
}

impl Cli {
    /// Starts `bitnetc serve` over hf-tiny as `tiny` with `extra` flags, once /health is 200.
    fn start(extra: &[&str]) -> Cli {
        let model = format!("tiny={}", packed().display());
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
            .args(["serve", &model, "--port", "0", "--slots", "1"])
            .args(["--threads", "1", "--context", "64", "--api-key", KEY])
            .args(extra)
            .env("BITNETC_AUDIT_LOG", "off")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let addr = listening_address(&mut stderr);
        let cli = Cli {
            child,
            stderr,
            base: format!("http://{addr}"),
        };
        for _ in 0..3000 {
            if client()
                .get(format!("{}/health", cli.base))
                .send()
                .unwrap()
                .status()
                == 200
            {
                return cli;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the model did not load");
    }

    /// Sends `method path` with the key and `body`: the status and the body as JSON.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = client()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY);
        if let Some(b) = body {
            r = r.body(b.to_string());
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.json_value())
    }

    /// SIGTERM, and the rest of stderr once it has stopped.
    fn stop(mut self) -> String {
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}: {rest}");
        rest
    }
}

/// Polls `path` until `done` says the answer is final.
fn poll(cli: &Cli, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..6000 {
        let (status, v) = cli.call("GET", path, None);
        assert_eq!(status, 200, "{v}");
        if done(&v) {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("{path} did not finish");
}

#[test]
fn the_cli_gateway_compiles_loads_unloads_and_audits_with_its_key() {
    let tmp = Scratch::create("gateway-cli");
    let log = tmp.join("audit.jsonl");
    let cli = Cli::start(&["--audit-log", log.to_str().unwrap()]);
    // Every admin route needs the key.
    for (method, path) in [
        ("GET", "/v1/bitnetc/models"),
        ("GET", "/v1/bitnetc/models/tiny"),
        ("POST", "/v1/bitnetc/models"),
        ("DELETE", "/v1/bitnetc/models/tiny"),
        ("POST", "/v1/bitnetc/compile"),
        ("GET", "/v1/bitnetc/jobs/job-1"),
        ("POST", "/v1/bitnetc/validate"),
        ("GET", "/v1/bitnetc/audit"),
        ("GET", "/v1/bitnetc/audit/verify"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = client()
            .request(method, format!("{}{path}", cli.base))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let (status, v) = cli.call("GET", "/v1/bitnetc/models/tiny", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["kind"].as_str()),
        (Some("ready"), Some("hf"))
    );
    assert_eq!(
        (
            v["context"].as_u64(),
            v["slots"].as_u64(),
            v["vocab"].as_u64()
        ),
        (Some(64), Some(1), Some(1000))
    );
    assert!(
        v["details"]["kv_bytes_per_slot"].as_u64().unwrap() > 0,
        "{v}"
    );
    let prompt = "The gateway";
    let ask = |model: &str| {
        let body = json!({"model": model, "prompt": prompt, "max_tokens": 3, "temperature": 0});
        let (status, v) = cli.call("POST", "/v1/completions", Some(&body));
        assert_eq!(status, 200, "{v}");
        v["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let text = ask("tiny");
    if have_cc("the_cli_gateway_compiles_loads_unloads_and_audits_with_its_key") {
        let out = tmp.join("tiny.bnx");
        let body =
            json!({"path": packed().display().to_string(), "output": out.display().to_string()});
        let (status, job) = cli.call("POST", "/v1/bitnetc/compile", Some(&body));
        assert_eq!(status, 202, "{job}");
        let path = format!("/v1/bitnetc/jobs/{}", job["id"].as_str().unwrap());
        let job = poll(&cli, &path, |v| {
            v["status"] == "done" || v["status"] == "failed"
        });
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(
            job["sha256"].as_str(),
            Some(file_sha256(&out).unwrap().0.as_str())
        );
        let (status, v) = cli.call("POST", "/v1/bitnetc/compile", Some(&body));
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (409, Some("output")),
            "{v}"
        );
        let load = json!({"name": "aot", "path": out.display().to_string()});
        let (status, v) = cli.call("POST", "/v1/bitnetc/models", Some(&load));
        assert_eq!(status, 202, "{v}");
        let v = poll(&cli, "/v1/bitnetc/models/aot", |v| v["state"] != "loading");
        assert_eq!(
            (v["state"].as_str(), v["kind"].as_str()),
            (Some("ready"), Some("artifact")),
            "{v}"
        );
        assert!(!ask("aot").is_empty());
        let (status, v) = cli.call("DELETE", "/v1/bitnetc/models/aot", None);
        assert_eq!((status, v["deleted"].as_bool()), (200, Some(true)), "{v}");
        let body = json!({"model": "aot", "prompt": prompt, "max_tokens": 3});
        assert_eq!(cli.call("POST", "/v1/completions", Some(&body)).0, 404);
        assert_eq!(cli.call("DELETE", "/v1/bitnetc/models/aot", None).0, 404);
    }
    let (status, v) = cli.call("GET", "/v1/bitnetc/audit", None);
    assert_eq!(status, 200, "{v}");
    let records = v["data"].as_array().unwrap().clone();
    // Each request writes a start record when it arrives, then its result with the same op.
    let starts = records.iter().filter(|r| r["kind"] == "start").count();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .filter(|k| *k != "start")
        .collect();
    assert_eq!(
        starts,
        kinds.iter().filter(|k| **k == "request").count(),
        "{records:?}"
    );
    let request = records.iter().find(|r| r["kind"] == "request").unwrap();
    let f = &request["fields"];
    assert_eq!(
        (f["model"].as_str(), f["status"].as_u64()),
        (Some("tiny"), Some(200)),
        "{request}"
    );
    assert_eq!(
        f["prompt_sha256"].as_str(),
        Some(sha256_hex(prompt.as_bytes()).as_str())
    );
    assert_eq!(
        f["output_sha256"].as_str(),
        Some(sha256_hex(text.as_bytes()).as_str())
    );
    assert!(
        f.get("prompt").is_none() && f.get("output").is_none(),
        "{request}"
    );
    let (status, report) = cli.call("GET", "/v1/bitnetc/audit/verify", None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["records"].as_u64(), Some(records.len() as u64));
    let rest = cli.stop();
    assert!(rest.ends_with("stopped\n"), "{rest}");
    let written = bitnetc::runtime::audit::verify(&log).unwrap();
    assert!(
        written.ok() && written.records == records.len(),
        "{written:?}"
    );
    if kinds.contains(&"compile") {
        assert_eq!(
            kinds,
            [
                "load", "request", "compile", "load", "request", "unload", "request"
            ]
        );
    } else {
        assert_eq!(kinds, ["load", "request"]);
    }
}

#[test]
fn with_audit_text_records_keep_the_prompt_and_output_and_the_chain_verifies() {
    let tmp = Scratch::create("gateway-audit-text");
    let log = tmp.join("audit.jsonl");
    let server = serve_gateway(GatewayConfig {
        audit: Some(AuditLog::open(&log).unwrap()),
        audit_text: true,
        ..toolchain()
    });
    let mut body = completion(json!("Hello world"), 4);
    let (status, whole) = post(&server, "/v1/completions", &body);
    assert_eq!(status, 200, "{whole}");
    body["stream"] = true.into();
    let (streamed, _) = joined(&stream_chunks(&server, "/v1/completions", &body));
    body["model"] = "nope".into();
    assert_eq!(post(&server, "/v1/completions", &body).0, 404);
    let (status, v) = get_json(&server, "/v1/bitnetc/audit?limit=6");
    assert_eq!(status, 200, "{v}");
    let all = v["data"].as_array().unwrap();
    assert_eq!(all.len(), 6, "{v}");
    // A start record (same op) before each request's result.
    let records: Vec<&Value> = all.iter().filter(|r| r["kind"] == "request").collect();
    assert_eq!(records.len(), 3, "{v}");
    for r in &records {
        assert!(
            all.iter()
                .any(|s| s["kind"] == "start" && s["fields"]["op"] == r["fields"]["op"]),
            "{v}"
        );
    }
    let texts = [
        whole["choices"][0]["text"].as_str().unwrap(),
        streamed.as_str(),
    ];
    for (r, text) in records.iter().zip(texts) {
        let f = &r["fields"];
        assert_eq!(
            (r["kind"].as_str(), f["status"].as_u64()),
            (Some("request"), Some(200)),
            "{r}"
        );
        assert_eq!(f["route"], "/v1/completions");
        assert_eq!(
            (f["prompt"].as_str(), f["output"].as_str()),
            (Some("Hello world"), Some(text))
        );
        assert_eq!(
            f["prompt_sha256"].as_str(),
            Some(sha256_hex(b"Hello world").as_str())
        );
        assert_eq!(
            f["output_sha256"].as_str(),
            Some(sha256_hex(text.as_bytes()).as_str())
        );
        assert_eq!(
            (f["completion_tokens"].as_u64(), f["finish_reason"].as_str()),
            (Some(4), Some("length"))
        );
    }
    assert_eq!(
        (
            records[2]["fields"]["status"].as_u64(),
            records[2]["fields"]["model"].as_str()
        ),
        (Some(404), Some("nope"))
    );
    assert_error(
        get_json(&server, "/v1/bitnetc/audit?limit=0"),
        400,
        Some("limit"),
        "limit 0",
    );
    let (status, report) = get_json(&server, "/v1/bitnetc/audit/verify");
    assert_eq!(status, 200, "{report}");
    // The load of `tiny` and the three requests, each a start and a result.
    assert_eq!(
        (report["ok"].as_bool(), report["records"].as_u64()),
        (Some(true), Some(7)),
        "{report}"
    );
    assert_eq!(report["unfinished"], json!([]), "{report}");
    server.shutdown();
    server.wait().unwrap();
    let report = bitnetc::runtime::audit::verify(&log).unwrap();
    assert!(report.ok() && report.records == 7, "{report:?}");
    assert!(report.unfinished.is_empty(), "{report:?}");
}

#[test]
fn the_cli_gateway_validates_a_model_as_a_job() {
    let tmp = Scratch::create("gateway-validate");
    let log = tmp.join("audit.jsonl");
    let cli = Cli::start(&["--audit-log", log.to_str().unwrap()]);
    let packed = packed().display().to_string();
    for (body, param) in [
        (json!({"path": packed, "window": 0}), "window"),
        (json!({"path": packed, "gates": [1]}), "gates"),
        (
            json!({"path": packed, "reference": "/no/such/model"}),
            "reference",
        ),
        (json!({"path": packed, "text": "/no/such/text.txt"}), "text"),
        (json!({"reference": "full"}), "path"),
    ] {
        let (status, v) = cli.call("POST", "/v1/bitnetc/validate", Some(&body));
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(param)),
            "{v}"
        );
    }
    // A tiny model's speed-up says nothing (its step is all overhead): that gate is off.
    let body = json!({"path": packed, "windows": 1, "gates": {"min_decode_speedup": null}});
    let (status, job) = cli.call("POST", "/v1/bitnetc/validate", Some(&body));
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["object"], "bitnetc.validate_job");
    let path = format!("/v1/bitnetc/jobs/{}", job["id"].as_str().unwrap());
    let job = poll(&cli, &path, |v| {
        v["status"] == "done" || v["status"] == "failed"
    });
    assert_eq!(job["status"], "done", "{job}");
    assert_eq!(job["pass"], true, "{job}");
    let report = &job["report"];
    assert_eq!(report["text"]["windows"], 1);
    assert!(
        report["accuracy"]["kl_mean"].as_f64().unwrap() < 1e-3,
        "{report}"
    );
    // A gate file the model cannot meet: the job is done, the report says which gate failed.
    let body = json!({"path": packed, "windows": 1, "gates": {"min_decode_speedup": 1000}});
    let (_, job) = cli.call("POST", "/v1/bitnetc/validate", Some(&body));
    let path = format!("/v1/bitnetc/jobs/{}", job["id"].as_str().unwrap());
    let job = poll(&cli, &path, |v| {
        v["status"] == "done" || v["status"] == "failed"
    });
    assert_eq!(
        (job["status"].as_str(), job["pass"].as_bool()),
        (Some("done"), Some(false))
    );
    let failed: Vec<&str> = job["report"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["pass"] == false)
        .map(|g| g["gate"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["min_decode_speedup"]);
    // An unknown gate fails the job, naming it.
    let body = json!({"path": packed, "gates": {"min_speed": 2}});
    let (_, job) = cli.call("POST", "/v1/bitnetc/validate", Some(&body));
    let path = format!("/v1/bitnetc/jobs/{}", job["id"].as_str().unwrap());
    let job = poll(&cli, &path, |v| {
        v["status"] == "done" || v["status"] == "failed"
    });
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("min_speed"),
        "{job}"
    );
    cli.stop();
    let records: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let validations: Vec<&Value> = records
        .iter()
        .filter(|r| r["fields"]["command"] == "validate")
        .collect();
    let kinds: Vec<&str> = validations
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["run", "run", "error"]);
    assert_eq!(validations[0]["fields"]["validate"]["pass"], true);
}

#[test]
fn the_cli_gateway_profiles_and_checks_compliance_as_jobs() {
    let tmp = Scratch::create("gateway-profile");
    let log = tmp.join("audit.jsonl");
    let cli = Cli::start(&["--audit-log", log.to_str().unwrap()]);
    let packed = packed().display().to_string();
    for (route, body, param) in [
        ("profile", json!({"path": packed, "steps": 0}), "steps"),
        (
            "profile",
            json!({"path": packed, "threshold": -1}),
            "threshold",
        ),
        (
            "profile",
            json!({"path": packed, "baseline": "/no/such.json"}),
            "baseline",
        ),
        ("compliance", json!({"level": "gold"}), "level"),
        ("compliance", json!({"path": "/no/such.bnx"}), "path"),
    ] {
        let (status, v) = cli.call("POST", &format!("/v1/bitnetc/{route}"), Some(&body));
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(param)),
            "{route}: {v}"
        );
    }
    let finished = |job: Value| {
        let path = format!("/v1/bitnetc/jobs/{}", job["id"].as_str().unwrap());
        poll(&cli, &path, |v| {
            v["status"] == "done" || v["status"] == "failed"
        })
    };
    let body = json!({"path": packed, "prompt_len": 4, "steps": 2});
    let (status, job) = cli.call("POST", "/v1/bitnetc/profile", Some(&body));
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["object"], "bitnetc.profile_job");
    let job = finished(job);
    assert_eq!(
        (job["status"].as_str(), job["pass"].as_bool()),
        (Some("done"), Some(true)),
        "{job}"
    );
    let report = &job["report"];
    assert!(
        report["phases"]["decode"]["step"]["mean_ms"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{report}"
    );
    assert_eq!(report["steps"], 2);
    // The saved report is a baseline: against itself with a generous threshold, no regression.
    let saved = tmp.join("base.json");
    std::fs::write(&saved, report.to_string()).unwrap();
    let body =
        json!({"path": packed, "prompt_len": 4, "steps": 2, "baseline": saved, "threshold": 1000});
    let (_, job) = cli.call("POST", "/v1/bitnetc/profile", Some(&body));
    let job = finished(job);
    assert_eq!(job["pass"], true, "{job}");
    assert_eq!(job["report"]["regressions"], json!([]));
    // Compliance without an artifact: the artifact checks do not run, so the level is not met,
    // and the audit chain (this server's log) verifies.
    let (status, job) = cli.call("POST", "/v1/bitnetc/compliance", Some(&json!({})));
    assert_eq!(status, 202, "{job}");
    let job = finished(job);
    assert_eq!(
        (job["status"].as_str(), job["pass"].as_bool()),
        (Some("done"), Some(false)),
        "{job}"
    );
    let checks = job["report"]["checks"].as_array().unwrap();
    let status_of = |id: &str| {
        checks.iter().find(|c| c["id"] == id).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status_of("artifact_hashes"), "not run");
    assert_eq!(status_of("audit_chain"), "pass", "{}", job["report"]);
    cli.stop();
    let records: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let commands: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "run")
        .map(|r| r["fields"]["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["profile", "profile", "compliance"]);
}
