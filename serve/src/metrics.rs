//! The server's metrics and their Prometheus text form (`GET /metrics`, exposition format 0.0.4).
//!
//! Server-wide: `bitnetc_requests_total{route,status}`. Per model (label `model`): prompt and
//! generated tokens, requests cancelled by their client, queue depth, busy and total slots, KV-cache
//! tokens in use and its capacity, whether the model is ready, and two histograms: time to first
//! token (from arrival, queueing included) and inter-token latency.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds of the time-to-first-token histogram, in seconds.
const TTFT_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Bucket bounds of the inter-token latency histogram, in seconds.
const ITL_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A histogram with fixed bucket bounds.
struct Histogram {
    bounds: &'static [f64],
    /// Per bound, observations at or below it and above the previous one; then those above all.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut total = 0u64;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            total += count;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {total}");
        }
        total += self.counts.last().copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
    }
}

/// One model's metrics, updated by its engine and by the request handlers.
pub struct ModelMetrics {
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    cancelled: AtomicU64,
    queue_depth: AtomicI64,
    busy_slots: AtomicU64,
    slots: AtomicU64,
    kv_tokens: AtomicU64,
    kv_capacity: AtomicU64,
    failed: AtomicBool,
    ttft: Mutex<Histogram>,
    itl: Mutex<Histogram>,
}

impl Default for ModelMetrics {
    fn default() -> ModelMetrics {
        ModelMetrics {
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            queue_depth: AtomicI64::new(0),
            busy_slots: AtomicU64::new(0),
            slots: AtomicU64::new(0),
            kv_tokens: AtomicU64::new(0),
            kv_capacity: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            ttft: Mutex::new(Histogram::new(&TTFT_BUCKETS)),
            itl: Mutex::new(Histogram::new(&ITL_BUCKETS)),
        }
    }
}

impl ModelMetrics {
    /// Records the slot count and each slot's context.
    pub fn set_slots(&self, slots: usize, context: u64) {
        self.slots.store(slots as u64, Ordering::Relaxed);
        self.kv_capacity
            .store((slots as u64).saturating_mul(context), Ordering::Relaxed);
    }

    /// Adds `delta` requests to the queue depth.
    pub fn queued(&self, delta: i64) {
        self.queue_depth.fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts `n` prompt tokens taken into a slot.
    pub fn add_prompt(&self, n: usize) {
        self.prompt_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` generated tokens.
    pub fn add_generated(&self, n: usize) {
        self.generated_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` requests whose client went away before the end.
    pub fn add_cancelled(&self, n: usize) {
        self.cancelled.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records the busy slots and the tokens their caches hold.
    pub fn set_busy(&self, slots: usize, kv_tokens: usize) {
        self.busy_slots.store(slots as u64, Ordering::Relaxed);
        self.kv_tokens.store(kv_tokens as u64, Ordering::Relaxed);
    }

    /// Marks the model's engine as failed.
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.busy_slots.store(0, Ordering::Relaxed);
    }

    /// Whether the engine failed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Requests queued or in a slot.
    pub fn in_flight(&self) -> u64 {
        let queued = u64::try_from(self.queue_depth.load(Ordering::Relaxed)).unwrap_or(0);
        self.busy_slots
            .load(Ordering::Relaxed)
            .saturating_add(queued)
    }

    /// Records a time to first token.
    pub fn observe_first_token(&self, d: Duration) {
        if let Ok(mut h) = self.ttft.lock() {
            h.observe(d.as_secs_f64());
        }
    }

    /// Records the time between two tokens of one request.
    pub fn observe_inter_token(&self, d: Duration) {
        if let Ok(mut h) = self.itl.lock() {
            h.observe(d.as_secs_f64());
        }
    }
}

/// Every metric of the server.
#[derive(Default)]
pub struct Metrics {
    /// (route, status) → requests answered.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// The models' metrics, by id, in the order they were given.
    models: Mutex<Vec<(String, std::sync::Arc<ModelMetrics>)>>,
}

/// A metric's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `s` as a label value (backslash, quote and newline escaped).
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts a request answered on `route` with `status`.
    pub fn count_request(&self, route: &str, status: u16) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((route.to_string(), status)).or_insert(0) += 1;
        }
    }

    /// Adds a model's metrics (it reports from then on).
    pub fn add_model(&self, id: &str, m: std::sync::Arc<ModelMetrics>) {
        if let Ok(mut models) = self.models.lock() {
            models.push((id.to_string(), m));
        }
    }

    /// Removes a model's metrics (it was unloaded).
    pub fn remove_model(&self, id: &str) {
        if let Ok(mut models) = self.models.lock() {
            models.retain(|(m, _)| m != id);
        }
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "bitnetc_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
        );
        if let Ok(r) = self.requests.lock() {
            for ((route, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "bitnetc_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    label(route)
                );
            }
        }
        let models = self.models.lock().map(|m| m.clone()).unwrap_or_default();
        type Get = fn(&ModelMetrics) -> String;
        let scalars: [(&str, &str, &str, Get); 9] = [
            (
                "bitnetc_prompt_tokens_total",
                "counter",
                "Prompt tokens taken into a slot.",
                |m| m.prompt_tokens.load(Ordering::Relaxed).to_string(),
            ),
            (
                "bitnetc_generated_tokens_total",
                "counter",
                "Tokens generated.",
                |m| m.generated_tokens.load(Ordering::Relaxed).to_string(),
            ),
            (
                "bitnetc_requests_cancelled_total",
                "counter",
                "Requests whose client went away before the end (their generation stopped).",
                |m| m.cancelled.load(Ordering::Relaxed).to_string(),
            ),
            (
                "bitnetc_queue_depth",
                "gauge",
                "Requests waiting for a slot.",
                |m| m.queue_depth.load(Ordering::Relaxed).max(0).to_string(),
            ),
            (
                "bitnetc_active_slots",
                "gauge",
                "Slots generating for a request.",
                |m| m.busy_slots.load(Ordering::Relaxed).to_string(),
            ),
            ("bitnetc_slots", "gauge", "Slots of the model.", |m| {
                m.slots.load(Ordering::Relaxed).to_string()
            }),
            (
                "bitnetc_kv_cache_tokens",
                "gauge",
                "Tokens held in the slots' KV caches.",
                |m| m.kv_tokens.load(Ordering::Relaxed).to_string(),
            ),
            (
                "bitnetc_kv_cache_capacity_tokens",
                "gauge",
                "Tokens the slots' KV caches can hold.",
                |m| m.kv_capacity.load(Ordering::Relaxed).to_string(),
            ),
            (
                "bitnetc_model_up",
                "gauge",
                "1 while the model's engine runs, 0 after it failed.",
                |m| u8::from(!m.failed()).to_string(),
            ),
        ];
        for (name, kind, help, get) in scalars {
            header(&mut out, name, kind, help);
            for (id, m) in &models {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", label(id), get(m));
            }
        }
        type Hist = fn(&ModelMetrics) -> &Mutex<Histogram>;
        let histograms: [(&str, &str, Hist); 2] = [
            (
                "bitnetc_time_to_first_token_seconds",
                "Time from a request's arrival to its first token.",
                |m| &m.ttft,
            ),
            (
                "bitnetc_inter_token_latency_seconds",
                "Time between two tokens of one request.",
                |m| &m.itl,
            ),
        ];
        for (name, help, get) in histograms {
            header(&mut out, name, "histogram", help);
            for (id, m) in &models {
                if let Ok(h) = get(m).lock() {
                    h.render(&mut out, name, &format!("model=\"{}\"", label(id)));
                }
            }
        }
        out
    }
}
