//! The gateway under `/v1/bitnetc/` on an in-process server: a model loaded at run time through a
//! toolchain and then served (the same tokens as the model given at start), a load that fails
//! listed as `failed`, the 400/404/409 of bad requests naming their field, unloading while a
//! request is in flight (it finishes, new ones get 404), a server without a toolchain (501 for
//! loads and every job). The audit log and the binary's gateway (compile jobs,
//! artifacts, the key) are in `gateway_audit.rs`.

use super::harness::*;
use super::support::Scratch;
use bitnet_serve::{
    CompileRequest, Compiled, GatewayConfig, LoadedModel, ModelSource, Server, Toolchain,
};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// Loads hf-tiny for any path whose name does not start with `broken`; compiles nothing.
struct TinyToolchain;

impl Toolchain for TinyToolchain {
    fn load(&self, _name: &str, path: &Path) -> Result<LoadedModel, String> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with("broken")) {
            return Err(format!("{}: not a model", path.display()));
        }
        Ok(model(&packed(), 2))
    }

    fn targets(&self) -> Vec<String> {
        vec!["native".into()]
    }

    fn compile(&self, request: &CompileRequest) -> Result<Compiled, String> {
        Err(format!(
            "{}: this toolchain compiles nothing",
            request.model.display()
        ))
    }
}

/// A server over hf-tiny as `tiny`, with `gateway`.
pub fn serve_gateway(gateway: GatewayConfig) -> Server {
    let source = ModelSource {
        id: "tiny".into(),
        load: Box::new(|| Ok(model(&packed(), 2))),
    };
    let server = Server::start_with(config(), vec![source], gateway).unwrap();
    wait_ready(&server);
    server
}

pub fn toolchain() -> GatewayConfig {
    GatewayConfig {
        toolchain: Some(Arc::new(TinyToolchain)),
        ..GatewayConfig::default()
    }
}

pub fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let r = client().get(url(server, path)).send().unwrap();
    (r.status().as_u16(), r.json_value())
}

fn delete(server: &Server, path: &str) -> (u16, Value) {
    let r = client().delete(url(server, path)).send().unwrap();
    (r.status().as_u16(), r.json_value())
}

/// Polls `GET /v1/bitnetc/models/{name}` until it is no longer loading.
fn settled(server: &Server, name: &str) -> Value {
    for _ in 0..3000 {
        let (status, v) = get_json(server, &format!("/v1/bitnetc/models/{name}"));
        assert_eq!(status, 200, "{v}");
        if v["state"] != "loading" {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{name} is still loading");
}

#[test]
fn a_model_loaded_at_run_time_is_served_and_a_failed_load_is_listed() {
    let tmp = Scratch::create("gateway-load");
    let server = serve_gateway(toolchain());
    let packed = packed().display().to_string();
    let (status, v) = post(
        &server,
        "/v1/bitnetc/models",
        &json!({"name": "second", "path": packed}),
    );
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["state"], "loading");
    let v = settled(&server, "second");
    assert_eq!(v["state"], "ready", "{v}");
    assert_eq!(
        (v["context"].as_u64(), v["slots"].as_u64()),
        (Some(CONTEXT), Some(2))
    );
    assert_eq!(v["vocab"], 1000);
    assert_eq!(v["source"].as_str(), Some(packed.as_str()));
    let ask = |model: &str| {
        let mut body = completion(json!([1, 17, 256]), 5);
        body["model"] = model.into();
        let (status, v) = post(&server, "/v1/completions", &body);
        assert_eq!(status, 200, "{v}");
        u32s(&v["choices"][0]["token_ids"])
    };
    assert_eq!(ask("second"), ask("tiny"));
    assert_error(
        post(
            &server,
            "/v1/bitnetc/models",
            &json!({"name": "second", "path": packed}),
        ),
        409,
        Some("name"),
        "a name taken",
    );
    let broken = tmp.join("broken.gguf");
    std::fs::write(&broken, b"nothing").unwrap();
    let (status, _) = post(
        &server,
        "/v1/bitnetc/models",
        &json!({"name": "bad", "path": broken.display().to_string()}),
    );
    assert_eq!(status, 202);
    let v = settled(&server, "bad");
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap().contains("not a model"), "{v}");
    let mut body = completion(json!([1, 17, 256]), 5);
    body["model"] = "bad".into();
    assert_eq!(post(&server, "/v1/completions", &body).0, 500);
    // A failed load stays listed (with the others) until it is deleted; the server stays up.
    let (_, list) = get_json(&server, "/v1/bitnetc/models");
    let states: Vec<(&str, &str)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [("tiny", "ready"), ("second", "ready"), ("bad", "failed")]
    );
    assert_eq!(get(&server, "/health").0, 200);
    assert_eq!(delete(&server, "/v1/bitnetc/models/bad").0, 200);
    assert_eq!(get_json(&server, "/v1/bitnetc/models/bad").0, 404);
}

#[test]
fn gateway_requests_are_checked_field_by_field() {
    let tmp = Scratch::create("gateway-fields");
    let server = serve_gateway(toolchain());
    let packed = packed().display().to_string();
    let cases = [
        (json!({"path": packed}), 400, "name", "no name"),
        (json!({"name": 3, "path": packed}), 400, "name", "a number"),
        (
            json!({"name": "a/b", "path": packed}),
            400,
            "name",
            "a slash",
        ),
        (json!({"name": "x"}), 400, "path", "no path"),
        (
            json!({"name": "x", "path": "/no/such/model"}),
            400,
            "path",
            "no such path",
        ),
    ];
    for (body, status, param, what) in cases {
        assert_error(
            post(&server, "/v1/bitnetc/models", &body),
            status,
            Some(param),
            what,
        );
    }
    let out = tmp.join("out.bnx").display().to_string();
    let cases = [
        (json!({"output": out}), 400, "path", "no model"),
        (json!({"path": packed}), 400, "output", "no output"),
        (
            json!({"path": packed, "output": "/no/such/dir/a.bnx"}),
            400,
            "output",
            "no folder",
        ),
        (
            json!({"path": packed, "output": packed}),
            409,
            "output",
            "an existing output",
        ),
        (
            json!({"path": packed, "output": out, "target": "z80"}),
            400,
            "target",
            "a bad target",
        ),
        (
            json!({"path": packed, "output": out, "context": 0}),
            400,
            "context",
            "context 0",
        ),
    ];
    for (body, status, param, what) in cases {
        assert_error(
            post(&server, "/v1/bitnetc/compile", &body),
            status,
            Some(param),
            what,
        );
    }
    assert_error(
        post_raw(&server, "/v1/bitnetc/models", b"[1]".to_vec()),
        400,
        None,
        "not an object",
    );
    assert_error(
        get_json(&server, "/v1/bitnetc/models/nope"),
        404,
        Some("model"),
        "inspect unknown",
    );
    assert_error(
        delete(&server, "/v1/bitnetc/models/nope"),
        404,
        Some("model"),
        "delete unknown",
    );
    assert_error(
        get_json(&server, "/v1/bitnetc/jobs/job-9"),
        404,
        Some("id"),
        "unknown job",
    );
    assert_error(
        get_json(&server, "/v1/bitnetc/audit"),
        404,
        None,
        "no audit log",
    );
    // A compile the toolchain fails is a failed job with its error.
    let (status, job) = post(
        &server,
        "/v1/bitnetc/compile",
        &json!({"path": packed, "output": out}),
    );
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = loop {
        let (_, v) = get_json(&server, &format!("/v1/bitnetc/jobs/{id}"));
        if v["status"] != "queued" && v["status"] != "running" {
            break v;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("compiles nothing"),
        "{job}"
    );
    assert!(!tmp.join("out.bnx").exists());
}

#[test]
fn without_a_toolchain_the_loads_compiles_and_other_jobs_are_501() {
    let server = serve_gateway(GatewayConfig::default());
    let packed = packed().display().to_string();
    let (status, v) = post(
        &server,
        "/v1/bitnetc/models",
        &json!({"name": "x", "path": packed}),
    );
    assert_eq!(status, 501, "{v}");
    let (status, v) = post(
        &server,
        "/v1/bitnetc/compile",
        &json!({"path": packed, "output": "/tmp/never-written.bnx"}),
    );
    assert_eq!(status, 501, "{v}");
    for command in ["validate", "profile", "compliance"] {
        let (status, v) = post(
            &server,
            &format!("/v1/bitnetc/{command}"),
            &json!({"path": packed}),
        );
        assert_eq!(status, 501, "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("without a compiler") && message.contains(command),
            "{v}"
        );
        assert_eq!(v["error"]["type"], "server_error");
    }
}

#[test]
fn unloading_finishes_the_requests_in_flight_and_refuses_new_ones() {
    let gate = Gate::new(0);
    let source = {
        let gate = Arc::clone(&gate);
        ModelSource {
            id: "tiny".into(),
            load: Box::new(move || Ok(gated(1, &gate))),
        }
    };
    let server = Server::start_with(config(), vec![source], GatewayConfig::default()).unwrap();
    wait_ready(&server);
    let addr = url(&server, "/v1/completions");
    let in_flight = std::thread::spawn(move || {
        let r = client()
            .post(addr)
            .body(completion(json!([1, 17, 256]), 4).to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.json_value())
    });
    assert!(gate.wait_entered(1));
    let (status, v) = delete(&server, "/v1/bitnetc/models/tiny");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["deleted"].as_bool(), v["in_flight"].as_u64()),
        (Some(true), Some(1))
    );
    assert_error(
        post(
            &server,
            "/v1/completions",
            &completion(json!([1, 17, 256]), 4),
        ),
        404,
        Some("model"),
        "an unloaded model",
    );
    gate.allow(1_000_000);
    let (status, v) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let (_, list) = get_json(&server, "/v1/bitnetc/models");
    assert_eq!(list["data"], json!([]));
}
