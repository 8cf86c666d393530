//! `bitnetc serve` over real HTTP (reqwest) on a free loopback port, with the hf-tiny model: tokens
//! against transformers' greedy references, completions and chat, streamed and not, stop strings,
//! usage, every error case, the API key, `/health` while loading, `/metrics` as Prometheus text,
//! the bounded queue (429), a dropped stream freeing its slot, batch invariance under 16
//! concurrent requests, graceful shutdown, and the CLI. The helpers are in `harness.rs`; the
//! gateway under `/v1/bitnetc/` is tested in `gateway.rs` and `gateway_audit.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod gateway;
mod gateway_audit;
mod harness;

use bitnet_serve::{ModelSource, ServeConfig, Server};
use bitnetc::runtime::tokenizer::Tokenizer;
use bitnetc::{GenerateParams, SamplingParams};
use harness::*;
use serde_json::{Value, json};
use std::io::Read;
use std::sync::Arc;
use support::{Scratch, reference};

#[test]
fn completions_give_transformers_tokens_streamed_or_not() {
    let r = reference(&packed());
    let server = serve(vec![("tiny", model(&packed(), 2))], config());
    // Token ids in, transformers' greedy tokens out.
    let (status, v) = post(
        &server,
        "/v1/completions",
        &completion(r["prompt_ids"].clone(), 16),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["model"], "tiny");
    let choice = &v["choices"][0];
    assert_eq!(u32s(&choice["token_ids"]), u32s(&r["greedy_new_tokens"]));
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(choice["index"], 0);
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28})
    );
    // Text in: the prompt encodes as transformers' tokenizer does; the text is its decoding.
    let text = r["text_prompt"].clone();
    let (status, v) = post(&server, "/v1/completions", &completion(text.clone(), 16));
    assert_eq!(status, 200, "{v}");
    assert_eq!(u32s(&v["prompt_token_ids"]), u32s(&r["text_prompt_ids"]));
    assert_eq!(
        u32s(&v["choices"][0]["token_ids"]),
        u32s(&r["text_greedy_new_tokens"])
    );
    let want = r["text_greedy_decoded"].as_str().unwrap();
    assert_eq!(v["choices"][0]["text"], want);
    // Streamed: the same text in pieces, a finish chunk, the usage chunk, then [DONE].
    let mut body = completion(text.clone(), 16);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body["return_token_ids"] = json!(false);
    let chunks = stream_chunks(&server, "/v1/completions", &body);
    let (streamed, _) = joined(&chunks);
    assert_eq!(streamed, want);
    let n = chunks.len();
    for c in &chunks[..n - 1] {
        assert_eq!(c["object"], "text_completion");
        assert!(c["usage"].is_null(), "{c}");
    }
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(
        chunks[n - 1]["usage"],
        json!({"prompt_tokens": 16, "completion_tokens": 16, "total_tokens": 32})
    );
    // A stop string cuts the text before it (as transformers' text, cut there) and ends with
    // "stop"; usage counts the tokens generated up to the one that completed it, as `run` does.
    let cut = want.find("ormal").unwrap();
    let mut body = completion(text, 16);
    body["stop"] = json!(["ormal", "never seen"]);
    let (status, v) = post(&server, "/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], want[..cut]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let params = GenerateParams {
        max_tokens: 16,
        stop_strings: vec!["ormal".into()],
        ..GenerateParams::default()
    };
    let alone = session_generate(&packed(), &u32s(&r["text_prompt_ids"]), &params);
    assert_eq!(alone.text, want[..cut]);
    assert_eq!(v["usage"]["completion_tokens"], alone.tokens.len());
    assert_eq!(u32s(&v["choices"][0]["token_ids"]), alone.tokens);
    // The same, streamed: nothing past the cut is ever sent.
    body["stream"] = json!(true);
    let chunks = stream_chunks(&server, "/v1/completions", &body);
    assert_eq!(joined(&chunks).0, want[..cut]);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[test]
fn chat_completions_follow_the_chat_format_streamed_or_not() {
    let tmp = Scratch::create("serve-chat");
    let dir = chat_model_dir(&tmp);
    let server = serve(vec![("chat", model(&dir, 2))], config());
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Return a new "}, {"type": "text", "text": "sorted list"}]}
    ]);
    let body = json!({"model": "chat", "messages": messages, "max_completion_tokens": 24,
                      "temperature": 0, "return_token_ids": true});
    let (status, v) = post(&server, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{v}");
    // The reference: the model's chat format (here the built-in: hf-tiny has no template) on the
    // same messages, generated in process.
    let tok = Tokenizer::from_hf_dir(&dir).unwrap();
    let format = bitnetc::runtime::chat::ChatFormat::new(None, &tok).unwrap();
    let ids = format
        .encode(
            &tok,
            &[
                bitnetc::runtime::chat::Message::system("Be brief."),
                bitnetc::runtime::chat::Message::user("Return a new sorted list"),
            ],
            true,
        )
        .unwrap();
    let p = bitnet_serve::chat_prompt::ChatPrompt {
        ids,
        stop_tokens: format.stop_tokens().to_vec(),
    };
    let params = GenerateParams {
        max_tokens: 24,
        stop_tokens: p.stop_tokens.clone(),
        ..GenerateParams::default()
    };
    let alone = session_generate(&dir, &p.ids, &params);
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(u32s(&v["prompt_token_ids"]), p.ids);
    let choice = &v["choices"][0];
    assert_eq!(u32s(&choice["token_ids"]), alone.tokens);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], alone.text.as_str());
    let finish = match alone.stop {
        bitnetc::StopReason::MaxTokens => "length",
        _ => "stop",
    };
    assert_eq!(choice["finish_reason"], finish);
    assert_eq!(v["usage"]["prompt_tokens"], p.ids.len());
    assert_eq!(v["usage"]["completion_tokens"], alone.tokens.len());
    assert_eq!(v["usage"]["total_tokens"], p.ids.len() + alone.tokens.len());
    // Streamed: a first chunk with the role, content deltas, a finish chunk, usage, [DONE].
    let mut body = body.clone();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let chunks = stream_chunks(&server, "/v1/chat/completions", &body);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(u32s(&chunks[0]["prompt_token_ids"]), p.ids);
    let (text, ids) = joined(&chunks);
    assert_eq!(text, alone.text);
    assert_eq!(ids, alone.tokens);
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], finish);
    assert_eq!(
        chunks[n - 1]["usage"]["completion_tokens"],
        alone.tokens.len()
    );
    // A model whose tokenizer has no chat format says so (400 on `messages`).
    let plain = serve(vec![("tiny", model(&packed(), 1))], config());
    let (status, v) = post(
        &plain,
        "/v1/chat/completions",
        &json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "messages");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("<|eot_id|>"),
        "{v}"
    );
}

#[test]
fn sixteen_concurrent_greedy_requests_give_the_tokens_each_gives_alone() {
    let r = Arc::new(reference(&packed()));
    // Prompts of 12, 40 and 16 tokens, fed in chunks of 5 between the other slots' steps.
    let cases: [(Value, &str); 3] = [
        (r["prompt_ids"].clone(), "greedy_new_tokens"),
        (r["long_prompt_ids"].clone(), "long_greedy_new_tokens"),
        (r["text_prompt"].clone(), "text_greedy_new_tokens"),
    ];
    let run_all = |slots: usize, concurrent: bool| -> Vec<Vec<u32>> {
        let server = Arc::new(serve(
            vec![("tiny", model(&packed(), slots))],
            ServeConfig {
                prefill_chunk: 5,
                ..config()
            },
        ));
        let bodies: Vec<Value> = (0..16)
            .map(|i| {
                let (prompt, _) = &cases[i % 3];
                let mut b = completion(prompt.clone(), 16);
                if i % 4 == 3 {
                    // Seeded sampling, also independent of the load.
                    b["temperature"] = json!(0.9);
                    b["seed"] = json!(1000 + i);
                }
                b
            })
            .collect();
        let one = |server: &Server, b: &Value| {
            let (status, v) = post(server, "/v1/completions", b);
            assert_eq!(status, 200, "{v}");
            u32s(&v["choices"][0]["token_ids"])
        };
        if concurrent {
            let handles: Vec<_> = bodies
                .into_iter()
                .map(|b| {
                    let server = Arc::clone(&server);
                    std::thread::spawn(move || one(&server, &b))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        } else {
            bodies.iter().map(|b| one(&server, b)).collect()
        }
    };
    let alone = run_all(1, false);
    for (i, tokens) in alone.iter().enumerate() {
        if i % 4 != 3 {
            let (_, key) = &cases[i % 3];
            assert_eq!(tokens, &u32s(&r[*key]), "request {i}: transformers' tokens");
        }
    }
    // The seeded requests replay `bitnetc run --temperature 0.9 --seed …`.
    let sampled = session_generate(
        &packed(),
        &u32s(&r["prompt_ids"]),
        &GenerateParams {
            max_tokens: 16,
            sampling: SamplingParams {
                temperature: 0.9,
                seed: 1003,
                ..SamplingParams::default()
            },
            ..GenerateParams::default()
        },
    );
    assert_eq!(alone[3], sampled.tokens);
    assert_eq!(run_all(4, true), alone, "16 concurrent requests on 4 slots");
    assert_eq!(
        run_all(16, true),
        alone,
        "16 concurrent requests on 16 slots"
    );
}

#[test]
fn every_error_is_an_openai_error_object_naming_the_field() {
    let server = serve(
        vec![("tiny", model(&packed(), 1))],
        ServeConfig {
            max_body_bytes: 4096,
            ..config()
        },
    );
    let c = "/v1/completions";
    let chat = "/v1/chat/completions";
    let ok = || completion(json!([1, 17, 256]), 4);
    let with = |field: &str, value: Value| {
        let mut b = ok();
        b[field] = value;
        b
    };
    let msgs = |m: Value| json!({"model": "tiny", "messages": m});
    let big = format!(r#"{{"model": "tiny", "prompt": "{}"}}"#, "a".repeat(5000));
    assert_error(
        post_raw(&server, c, big.into_bytes()),
        413,
        None,
        "body over the limit",
    );
    assert_error(
        post_raw(&server, c, b"{\"model\": ".to_vec()),
        400,
        None,
        "bad JSON",
    );
    assert_error(
        post_raw(&server, c, b"[1, 2]".to_vec()),
        400,
        None,
        "not an object",
    );
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        (
            c,
            with("temperature", json!("hot")),
            400,
            Some("temperature"),
        ),
        (c, with("temperature", json!(3)), 400, Some("temperature")),
        (c, with("top_p", json!(0)), 400, Some("top_p")),
        (c, with("max_tokens", json!("16")), 400, Some("max_tokens")),
        (c, with("max_tokens", json!(0)), 400, Some("max_tokens")),
        (
            c,
            with("max_tokens", json!(CONTEXT)),
            400,
            Some("max_tokens"),
        ),
        (c, with("seed", json!(1.5)), 400, Some("seed")),
        (c, with("stream", json!("yes")), 400, Some("stream")),
        (
            c,
            with("stream_options", json!({"include_usage": true})),
            400,
            Some("stream_options"),
        ),
        (c, with("n", json!(2)), 400, Some("n")),
        (
            c,
            with("stop", json!(["a", "b", "c", "d", "e"])),
            400,
            Some("stop"),
        ),
        (c, with("stop", json!(["a", 1])), 400, Some("stop[1]")),
        (c, with("stop", json!(7)), 400, Some("stop")),
        (c, with("prompt", json!([1, 5000])), 400, Some("prompt[1]")),
        (c, with("prompt", json!([1, -3])), 400, Some("prompt[1]")),
        (c, with("prompt", json!(["a", "b"])), 400, Some("prompt")),
        (c, with("prompt", json!([])), 400, Some("prompt")),
        (
            c,
            with("prompt", json!(vec![5; CONTEXT as usize])),
            400,
            Some("prompt"),
        ),
        (c, json!({"model": "tiny"}), 400, Some("prompt")),
        (c, json!({"prompt": "hi"}), 400, Some("model")),
        (c, with("model", json!(7)), 400, Some("model")),
        (c, with("model", json!("gpt-4")), 404, Some("model")),
        (chat, msgs(json!([])), 400, Some("messages")),
        (chat, json!({"model": "tiny"}), 400, Some("messages")),
        (chat, msgs(json!("hi")), 400, Some("messages")),
        (
            chat,
            msgs(json!([{"role": "robot", "content": "hi"}])),
            400,
            Some("messages[0].role"),
        ),
        (
            chat,
            msgs(json!([{"content": "hi"}])),
            400,
            Some("messages[0].role"),
        ),
        (
            chat,
            msgs(json!([{"role": "user", "content": 5}])),
            400,
            Some("messages[0].content"),
        ),
        (
            chat,
            msgs(json!([{"role": "user", "content": [{"type": "image_url"}]}])),
            400,
            Some("messages[0].content[0].type"),
        ),
    ];
    for (path, body, status, param) in cases {
        assert_error(post(&server, path, &body), status, param, &body.to_string());
    }
    // Unknown routes and methods answer error objects too.
    let r = client().get(url(&server, "/v2/nothing")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_error((404, r.json_value()), 404, None, "unknown route");
    let r = client().get(url(&server, c)).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    // The server still answers after all of that.
    assert_eq!(post(&server, c, &ok()).0, 200);
}

#[test]
fn the_api_key_guards_every_route_but_health() {
    let server = serve(
        vec![("tiny", model(&packed(), 1))],
        ServeConfig {
            api_key: Some("s3cret-key".into()),
            ..config()
        },
    );
    let get = |path: &str, key: Option<&str>| {
        let mut r = client().get(url(&server, path));
        if let Some(k) = key {
            r = r.header("authorization", format!("Bearer {k}"));
        }
        r.send().unwrap()
    };
    assert_eq!(get("/health", None).status().as_u16(), 200);
    for path in ["/v1/models", "/metrics"] {
        for key in [None, Some("wrong"), Some("s3cret-key2"), Some("")] {
            let r = get(path, key);
            assert_eq!(r.status().as_u16(), 401, "{path} with {key:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            assert_error((401, r.json_value()), 401, None, path);
        }
        assert_eq!(
            get(path, Some("s3cret-key")).status().as_u16(),
            200,
            "{path}"
        );
    }
    let body = completion(json!([1, 17]), 2).to_string();
    let r = client()
        .post(url(&server, "/v1/completions"))
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .post(url(&server, "/v1/completions"))
        .header("authorization", "Bearer s3cret-key")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let models = get("/v1/models", Some("s3cret-key")).json_value();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"][0]["owned_by"], "bitnetc");
}

#[test]
fn health_is_503_while_loading_and_metrics_parse_as_prometheus_text() {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let m = model(&packed(), 1);
    let server = Server::start(
        config(),
        vec![ModelSource {
            id: "tiny".into(),
            load: Box::new(move || {
                wait.recv().map_err(|e| e.to_string())?;
                Ok(m)
            }),
        }],
    )
    .unwrap();
    let (status, body) = get(&server, "/health");
    assert_eq!((status, body.as_str()), (503, r#"{"status":"loading"}"#));
    assert_error(
        post(&server, "/v1/completions", &completion(json!([1, 2]), 2)),
        503,
        None,
        "loading",
    );
    let (status, body) = get(&server, "/v1/models");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"],
        json!([])
    );
    go.send(()).unwrap();
    wait_ready(&server);
    assert_eq!(
        get(&server, "/health"),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    // Three requests: 12 + 12 + 3 prompt tokens, 16 + 16 + up to 8 new tokens.
    let r = reference(&packed());
    for _ in 0..2 {
        assert_eq!(
            post(
                &server,
                "/v1/completions",
                &completion(r["prompt_ids"].clone(), 16)
            )
            .0,
            200
        );
    }
    let mut b = completion(json!([1, 17, 256]), 8);
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    let (status, data) = post_stream(&server, "/v1/completions", &b);
    assert_eq!(status, 200);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    let generated = 32 + usage["usage"]["completion_tokens"].as_u64().unwrap();
    let mut m = prometheus(&get(&server, "/metrics").1);
    for _ in 0..1000 {
        if m["bitnetc_active_slots{model=\"tiny\"}"] == 0.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        m = prometheus(&get(&server, "/metrics").1);
    }
    let at = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"));
    assert_eq!(
        at(r#"bitnetc_requests_total{route="/v1/completions",status="200"}"#),
        3.0
    );
    assert_eq!(
        at(r#"bitnetc_requests_total{route="/v1/completions",status="503"}"#),
        1.0
    );
    assert_eq!(
        at(r#"bitnetc_requests_total{route="/health",status="503"}"#),
        1.0
    );
    assert_eq!(
        at(r#"bitnetc_requests_total{route="/health",status="200"}"#),
        1.0
    );
    assert_eq!(at(r#"bitnetc_prompt_tokens_total{model="tiny"}"#), 27.0);
    assert_eq!(
        at(r#"bitnetc_generated_tokens_total{model="tiny"}"#),
        generated as f64
    );
    assert_eq!(at(r#"bitnetc_requests_cancelled_total{model="tiny"}"#), 0.0);
    assert_eq!(at(r#"bitnetc_queue_depth{model="tiny"}"#), 0.0);
    assert_eq!(at(r#"bitnetc_slots{model="tiny"}"#), 1.0);
    assert_eq!(
        at(r#"bitnetc_kv_cache_capacity_tokens{model="tiny"}"#),
        CONTEXT as f64
    );
    assert_eq!(at(r#"bitnetc_model_up{model="tiny"}"#), 1.0);
    assert_eq!(
        at(r#"bitnetc_time_to_first_token_seconds_count{model="tiny"}"#),
        3.0
    );
    // Every token but each request's first is an inter-token interval.
    let intervals = (generated - 3) as f64;
    assert_eq!(
        at(r#"bitnetc_inter_token_latency_seconds_count{model="tiny"}"#),
        intervals
    );
    assert_eq!(
        at(r#"bitnetc_inter_token_latency_seconds_bucket{model="tiny",le="+Inf"}"#),
        intervals
    );
    // Buckets are cumulative.
    let buckets: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("bitnetc_time_to_first_token_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(
        buckets.len() > 5 && buckets.iter().all(|&b| b <= 3.0),
        "{buckets:?}"
    );
}

#[test]
fn a_full_queue_is_429_and_a_dropped_stream_frees_its_slot() {
    let gate = Gate::new(0);
    let server = serve(
        vec![("tiny", gated(1, &gate))],
        ServeConfig {
            queue: 1,
            ..config()
        },
    );
    let stream = |max_tokens: u64| {
        let mut b = completion(json!([1, 17, 256]), max_tokens);
        b["stream"] = json!(true);
        let r = client()
            .post(url(&server, "/v1/completions"))
            .body(b.to_string())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r
    };
    // A holds the only slot (its first step waits at the gate); B waits in the queue.
    let a = stream(120);
    assert!(gate.wait_entered(1));
    let b = stream(4);
    let r = client()
        .post(url(&server, "/v1/completions"))
        .body(completion(json!([1, 2]), 2).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_error((429, r.json_value()), 429, None, "queue full");
    let m = prometheus(&get(&server, "/metrics").1);
    assert_eq!(m["bitnetc_queue_depth{model=\"tiny\"}"], 1.0);
    assert_eq!(m["bitnetc_active_slots{model=\"tiny\"}"], 1.0);
    // A's client goes away: within a few of its 120 tokens, its generation stops and B runs.
    drop(a);
    let mut cancelled = false;
    for step in 0..100 {
        let m = prometheus(&get(&server, "/metrics").1);
        if m["bitnetc_requests_cancelled_total{model=\"tiny\"}"] == 1.0 {
            cancelled = true;
            break;
        }
        gate.allow(1);
        assert!(gate.wait_entered(step + 2), "step {step}");
    }
    assert!(
        cancelled,
        "the dropped stream's generation was not cancelled"
    );
    gate.allow(1_000_000);
    let data = events(&b.text().unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(joined(&chunks).1.len(), 4);
}

#[test]
fn shutdown_stops_listening_and_finishes_the_requests_in_flight() {
    let gate = Gate::new(0);
    let server = serve(vec![("tiny", gated(1, &gate))], config());
    let addr = server.addr();
    let mut b = completion(json!([1, 17, 256]), 8);
    b["stream"] = json!(true);
    let a = client()
        .post(url(&server, "/v1/completions"))
        .body(b.to_string())
        .send()
        .unwrap();
    assert!(gate.wait_entered(1));
    let stopper = std::thread::spawn(move || {
        server.shutdown();
        server.wait()
    });
    // New connections are refused (or told 503) once the shutdown has begun.
    let mut refused = false;
    for _ in 0..1000 {
        match client().get(format!("http://{addr}/health")).send() {
            Err(_) => refused = true,
            Ok(r) => refused = r.status().as_u16() == 503,
        }
        if refused {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(refused);
    gate.allow(1_000_000);
    let data = events(&a.text().unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    stopper.join().unwrap().unwrap();
}

#[test]
fn the_cli_prints_its_address_requires_its_key_and_stops_on_sigterm() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
        .args([
            "serve",
            packed().to_str().unwrap(),
            "--port",
            "0",
            "--slots",
            "2",
        ])
        .args(["--threads", "1", "--context", "64"])
        .env("BITNETC_AUDIT_LOG", "off")
        .env("BITNETC_API_KEY", "cli-key")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let addr = listening_address(&mut stderr);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let base = format!("http://{addr}");
    let mut up = false;
    for _ in 0..3000 {
        if client()
            .get(format!("{base}/health"))
            .send()
            .unwrap()
            .status()
            == 200
        {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(up, "the model did not load");
    let body = json!({"model": "packed", "prompt": [1, 17, 256], "max_tokens": 3}).to_string();
    let r = client()
        .post(format!("{base}/v1/completions"))
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .post(format!("{base}/v1/completions"))
        .bearer_auth("cli-key")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json_value()["usage"]["completion_tokens"], 3);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest}");
    assert!(
        rest.contains("packed: ready") && rest.ends_with("stopped\n"),
        "{rest}"
    );
}

#[test]
fn a_client_that_hangs_up_on_a_whole_response_cancels_it_too() {
    use std::io::Write;
    let gate = Gate::new(0);
    let server = serve(vec![("tiny", gated(1, &gate))], config());
    let body = completion(json!([1, 17, 256]), 120).to_string();
    let mut socket = std::net::TcpStream::connect(server.addr()).unwrap();
    write!(
        socket,
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    assert!(gate.wait_entered(1));
    drop(socket);
    // Let the model run: the request ends either cancelled or after all its 120 tokens.
    gate.allow(1_000_000);
    let outcome = loop {
        let m = prometheus(&get(&server, "/metrics").1);
        let cancelled = m["bitnetc_requests_cancelled_total{model=\"tiny\"}"];
        let generated = m["bitnetc_generated_tokens_total{model=\"tiny\"}"];
        if cancelled > 0.0 || generated >= 120.0 {
            break (cancelled, generated);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(outcome.0, 1.0, "not cancelled: {outcome:?}");
    assert!(outcome.1 < 120.0, "{outcome:?}");
}
