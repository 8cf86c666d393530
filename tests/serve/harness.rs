//! The harness of the server tests: the hf-tiny model compiled once and handed out as sibling
//! executors, a server on a free loopback port, HTTP helpers (JSON, server-sent events, raw
//! bodies), a Prometheus text parser, a chat-capable copy of the model, and a model wrapper whose
//! steps wait for the test's permits (`Gate`), so that queueing and cancellation do not depend on
//! timing.

use super::support::root;
use bitnet_serve::{
    Feed, LoadedModel, ModelSource, ServeConfig, Server, SlotBatch, StepModel, StepOut,
};
use bitnetc::GenerateParams;
use bitnetc::runtime::Executor;
use bitnetc::runtime::tokenizer::Tokenizer;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Each slot's context in these tests.
pub const CONTEXT: u64 = 128;

pub fn packed() -> PathBuf {
    root().join("tests/fixtures/hf-tiny/packed")
}

pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The model at `dir` compiled once per test binary: a new sibling of it, and its tokenizer.
pub fn base(dir: &Path) -> (Executor, Tokenizer) {
    type Cache = Mutex<Vec<(PathBuf, Executor, Tokenizer)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Cache::default).lock().unwrap();
    if !cache.iter().any(|(p, _, _)| p == dir) {
        let mut options = bitnetc::Options {
            context: Some(CONTEXT),
            ..Default::default()
        };
        options.cpu.threads = 2;
        let (exec, tok) = bitnetc::compile(dir, &options)
            .unwrap()
            .into_parts()
            .unwrap();
        cache.push((dir.to_path_buf(), exec, tok.unwrap()));
    }
    let (_, exec, tok) = cache.iter().find(|(p, _, _)| p == dir).unwrap();
    (exec.sibling().unwrap(), tok.clone())
}

/// The model at `dir` with `slots` slots (siblings of the one compiled).
pub fn model(dir: &Path, slots: usize) -> LoadedModel {
    let (exec, tokenizer) = base(dir);
    LoadedModel {
        model: Box::new(SlotBatch::new(&exec, slots).unwrap()),
        tokenizer,
        chat_template: None,
        info: Default::default(),
    }
}

pub fn config() -> ServeConfig {
    ServeConfig {
        port: 0,
        ..ServeConfig::default()
    }
}

/// A server over `models` (id, loaded model), once it is ready.
pub fn serve(models: Vec<(&str, LoadedModel)>, config: ServeConfig) -> Server {
    let sources = models
        .into_iter()
        .map(|(id, m)| ModelSource {
            id: id.to_string(),
            load: Box::new(move || Ok(m)),
        })
        .collect();
    let server = Server::start(config, sources).unwrap();
    wait_ready(&server);
    server
}

pub fn wait_ready(server: &Server) {
    for _ in 0..2000 {
        if server.phase() == bitnet_serve::Phase::Ready {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the server did not get ready: {:?}", server.phase());
}

pub fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr())
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
}

/// POSTs `body` to `path`; the status and the body as JSON.
pub fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(url(server, path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, v)
}

/// POSTs a streaming request; the status and the `data:` payloads of its events.
pub fn post_stream(server: &Server, path: &str, body: &Value) -> (u16, Vec<String>) {
    let r = client()
        .post(url(server, path))
        .body(body.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        assert_eq!(r.headers()["content-type"], "text/event-stream");
    }
    (status, events(&r.text().unwrap()))
}

/// A streamed request that must succeed: its chunks (the JSON events before the final `[DONE]`).
pub fn stream_chunks(server: &Server, path: &str, body: &Value) -> Vec<Value> {
    let (status, data) = post_stream(server, path, body);
    assert_eq!(status, 200, "{data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// The `data:` payloads of a server-sent event stream (every event must be one `data:` line).
pub fn events(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"), "{text:?}");
    text.split_terminator("\n\n")
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("{e:?}"))
                .to_string()
        })
        .collect()
}

/// A completion request on the tiny model.
pub fn completion(prompt: Value, max_tokens: u64) -> Value {
    json!({"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "return_token_ids": true})
}

/// The joined text of streamed chunks (chat deltas or completion texts) and their token ids.
pub fn joined(chunks: &[Value]) -> (String, Vec<u32>) {
    let mut text = String::new();
    let mut ids = Vec::new();
    for c in chunks {
        for choice in c["choices"].as_array().unwrap() {
            let piece = choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str())
                .unwrap_or_default();
            text.push_str(piece);
            if let Some(t) = choice.get("token_ids") {
                ids.extend(u32s(t));
            }
        }
    }
    (text, ids)
}

/// What an in-process session generates for `prompt` (the reference for the server).
pub fn session_generate(
    dir: &Path,
    prompt: &[u32],
    params: &GenerateParams,
) -> bitnetc::Generation {
    let mut options = bitnetc::Options {
        context: Some(CONTEXT),
        ..Default::default()
    };
    options.cpu.threads = 1;
    let mut s = bitnetc::compile(dir, &options).unwrap().session().unwrap();
    s.generate(prompt, params, &mut |_, _| {}).unwrap()
}

/// A copy of hf-tiny/packed whose tokenizer has `<|eot_id|>` (taking id 999, the last merge's
/// token, with the merges that make or use it removed), so that it takes the 2B-4T chat format.
pub fn chat_model_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("chat-tiny");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(packed().join(f), dir.join(f)).unwrap();
    }
    let mut tok: Value =
        serde_json::from_str(&std::fs::read_to_string(packed().join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let old = vocab
        .iter()
        .find(|(_, id)| id.as_u64() == Some(999))
        .map(|(t, _)| t.clone())
        .unwrap();
    vocab.remove(&old);
    vocab.insert("<|eot_id|>".into(), json!(999));
    let merges = tok["model"]["merges"].as_array_mut().unwrap();
    merges.retain(|m| {
        let parts: Vec<String> = match m {
            Value::String(s) => s.split(' ').map(String::from).collect(),
            Value::Array(a) => a.iter().map(|p| p.as_str().unwrap().to_string()).collect(),
            _ => panic!("{m}"),
        };
        !parts.contains(&old) && parts.concat() != old
    });
    tok["added_tokens"].as_array_mut().unwrap().push(json!({
        "id": 999, "content": "<|eot_id|>", "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": true
    }));
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let t = Tokenizer::from_hf_dir(&dir).unwrap();
    assert_eq!(t.token_id("<|eot_id|>"), Some(999));
    dir
}

/// Asserts an OpenAI error object with `status` whose `param` is `param`.
pub fn assert_error(got: (u16, Value), status: u16, param: Option<&str>, what: &str) {
    let (s, v) = got;
    assert_eq!(s, status, "{what}: {v}");
    let e = &v["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    assert!(e["type"].is_string(), "{what}: {v}");
    assert!(
        e.get("code").is_some() && e.get("param").is_some(),
        "{what}: {v}"
    );
    assert_eq!(e["param"].as_str(), param, "{what}: {v}");
}

/// POSTs raw bytes.
pub fn post_raw(server: &Server, path: &str, body: Vec<u8>) -> (u16, Value) {
    let r = client().post(url(server, path)).body(body).send().unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_str(&r.text().unwrap()).unwrap())
}

/// Reading a blocking response as JSON.
pub trait JsonValue {
    fn json_value(self) -> Value;
}

impl JsonValue for reqwest::blocking::Response {
    fn json_value(self) -> Value {
        let text = self.text().unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }
}

/// Parses Prometheus text: every line a comment or `name{labels} value`; the samples by their
/// `name{labels}`.
pub fn prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name_end = key.find('{').unwrap_or(key.len());
        let name = &key[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if name_end < key.len() {
            let labels = &key[name_end..];
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(
                    !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        let v: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            samples.insert(key.to_string(), v).is_none(),
            "twice: {line}"
        );
    }
    samples
}

/// Steps of the wrapped model wait for permits; each step announces itself first.
pub struct Gate {
    permits: Mutex<u64>,
    changed: Condvar,
    entered: Mutex<u64>,
}

impl Gate {
    pub fn new(permits: u64) -> Arc<Gate> {
        Arc::new(Gate {
            permits: Mutex::new(permits),
            changed: Condvar::new(),
            entered: Mutex::new(0),
        })
    }

    pub fn allow(&self, n: u64) {
        *self.permits.lock().unwrap() += n;
        self.changed.notify_all();
    }

    /// Waits until `n` steps have begun (or a minute has passed: false).
    pub fn wait_entered(&self, n: u64) -> bool {
        let mut e = self.entered.lock().unwrap();
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while *e < n {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            e = self.changed.wait_timeout(e, left).unwrap().0;
        }
        true
    }
}

pub struct Gated {
    inner: SlotBatch,
    gate: Arc<Gate>,
}

impl StepModel for Gated {
    fn slots(&self) -> usize {
        self.inner.slots()
    }
    fn context(&self) -> u64 {
        self.inner.context()
    }
    fn vocab(&self) -> u64 {
        self.inner.vocab()
    }
    fn step(&mut self, feeds: &[Feed<'_>], out: &mut StepOut<'_>) {
        *self.gate.entered.lock().unwrap() += 1;
        self.gate.changed.notify_all();
        // `entered` and `permits` share the condition variable; each wait rechecks its own.
        let mut p = self.gate.permits.lock().unwrap();
        while *p == 0 {
            p = self.gate.changed.wait(p).unwrap();
        }
        *p -= 1;
        drop(p);
        self.inner.step(feeds, out);
    }
}

/// A loaded model whose steps wait at `gate`.
pub fn gated(slots: usize, gate: &Arc<Gate>) -> LoadedModel {
    let (exec, tokenizer) = base(&packed());
    LoadedModel {
        model: Box::new(Gated {
            inner: SlotBatch::new(&exec, slots).unwrap(),
            gate: Arc::clone(gate),
        }),
        tokenizer,
        chat_template: None,
        info: Default::default(),
    }
}

/// GETs `path` (no key): the status and the body.
pub fn get(server: &Server, path: &str) -> (u16, String) {
    let r = client().get(url(server, path)).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// Reads a `bitnetc serve` child's stderr up to its `listening on http://ADDR` line and returns
/// ADDR (`ip:port`).
pub fn listening_address(stderr: &mut impl std::io::BufRead) -> String {
    let mut line = String::new();
    while !line.starts_with("listening on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no address on stderr"
        );
    }
    line.strip_prefix("listening on http://")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string()
}
