//! The Python package `bitnetc` (PyO3, abi3): `compile` a model to a `.bnx` artifact, `load` one
//! (or compile a model in memory), make a `Session`, stream `generate`'s text, read `logits` as
//! NumPy arrays, and `validate`'s and `profile`'s reports as dicts. Every call goes through the Rust facade
//! (`bitnetc::compile`, `Compiled::session`, `Session::{encode, forward, generate, reset}`); every
//! failure is a `bitnetc.Error` whose message names the file or argument.

use bitnetc::{Cancel, GenerateParams, SamplingParams};
use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyAny;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

pyo3::create_exception!(
    bitnetc,
    Error,
    PyException,
    "A bitnetc failure: the message names the file, field or argument."
);

/// A `bitnetc.Error` with `message`.
fn error(message: impl std::fmt::Display) -> PyErr {
    Error::new_err(message.to_string())
}

/// `message`, prefixed with `path` unless it already names it.
fn naming(path: &Path, message: impl std::fmt::Display) -> PyErr {
    let (path, message) = (path.display().to_string(), message.to_string());
    if message.contains(&path) {
        error(message)
    } else {
        error(format!("{path}: {message}"))
    }
}

/// Counts heap allocations while `bitnetc::profile` asks it to (allocations per decode token).
#[global_allocator]
static GLOBAL: bitnetc::alloc_count::CountingAllocator = bitnetc::alloc_count::CountingAllocator;

/// Locks `m`, a poisoned lock (a panic elsewhere) being taken as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A model ready to run: compiled in memory or loaded from an artifact. It makes one session (it
/// has one KV cache).
#[pyclass(module = "bitnetc", frozen)]
struct Model {
    compiled: Mutex<Option<bitnetc::Compiled>>,
    path: PathBuf,
    /// The vocabulary size (logits per token).
    #[pyo3(get)]
    vocab: u64,
    /// The context length in tokens.
    #[pyo3(get)]
    context: u64,
    /// "artifact" or "jit".
    #[pyo3(get)]
    origin: &'static str,
}

#[pymethods]
impl Model {
    /// The model's session, choosing tokens with these sampling options (greedy by default).
    #[pyo3(signature = (temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0, seed=0))]
    fn session(
        &self,
        py: Python<'_>,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        repetition_penalty: f32,
        seed: u64,
    ) -> PyResult<Session> {
        let sampling = SamplingParams {
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            seed,
        };
        sampling.validate().map_err(error)?;
        let path = &self.path;
        py.detach(|| {
            let mut slot = lock(&self.compiled);
            let compiled = slot.as_ref().ok_or_else(|| {
                error(format!(
                    "{}: this model already made its session (a model has one KV cache)",
                    path.display()
                ))
            })?;
            // Built first so that a tokenizer that cannot be read leaves the model as it was.
            compiled.tokenizer().map_err(|e| naming(path, e))?;
            let session = match slot.take() {
                Some(c) => c.session().map_err(|e| naming(path, e))?,
                None => return Err(error("the model's session was taken")),
            };
            Ok(Session {
                vocab: session.vocab(),
                context: session.context(),
                inner: Arc::new(Mutex::new(session)),
                sampling: sampling.clone(),
            })
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "bitnetc.Model({:?}, origin={}, vocab={}, context={})",
            self.path.display().to_string(),
            self.origin,
            self.vocab,
            self.context
        )
    }
}

/// A session: the KV cache, the context so far, the tokenizer and the sampling options.
#[pyclass(module = "bitnetc", frozen)]
struct Session {
    inner: Arc<Mutex<bitnetc::Session>>,
    sampling: SamplingParams,
    /// The vocabulary size.
    #[pyo3(get)]
    vocab: u64,
    /// The context length in tokens.
    #[pyo3(get)]
    context: u64,
}

/// A prompt: text (encoded with the model's tokenizer) or token ids.
#[derive(FromPyObject)]
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

#[pymethods]
impl Session {
    /// The token ids of `text` (with the tokenizer's special tokens, such as a leading BOS).
    fn encode(&self, py: Python<'_>, text: &str) -> PyResult<Vec<u32>> {
        py.detach(|| lock(&self.inner).encode(text).map_err(error))
    }

    /// The text of `ids`, special tokens left out.
    fn decode(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        py.detach(|| {
            let s = lock(&self.inner);
            let tok = s
                .tokenizer()
                .ok_or_else(|| error("the model carries no tokenizer"))?;
            tok.decode(&ids, true).map_err(error)
        })
    }

    /// Runs `ids` after the context (a prefill, or a decode step for one id) and returns their
    /// logits as a float32 NumPy array of shape (len(ids), vocab): copied once out of the executor's
    /// buffer (which the next step overwrites), then handed to NumPy without another copy.
    fn logits<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
    ) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
        let n = ids.len();
        let logits = py
            .detach(|| lock(&self.inner).forward(&ids).map(<[f32]>::to_vec))
            .map_err(error)?;
        PyArray1::from_vec(py, logits).reshape([n, self.vocab as usize])
    }

    /// Forgets the context (a new conversation).
    fn reset(&self, py: Python<'_>) {
        py.detach(|| lock(&self.inner).reset());
    }

    /// Runs `prompt` (text or ids) after the context and generates up to `max_tokens` tokens;
    /// returns an iterator over the text as it is generated (its `tokens` and `stop` fill in as it
    /// goes). Generation runs on a thread of its own, at most a few tokens ahead of the reader;
    /// the session waits for it before its next call. `Stream.cancel()`, or dropping the
    /// iterator, stops it before its next step (`stop` is then `"cancelled"`); the tokens made so
    /// far stay in the context.
    #[pyo3(signature = (prompt, max_tokens=64, ignore_eos=false, stop=Vec::new()))]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        max_tokens: usize,
        ignore_eos: bool,
        stop: Vec<String>,
    ) -> PyResult<Stream> {
        let ids = match prompt {
            Prompt::Ids(ids) => ids,
            Prompt::Text(text) => self.encode(py, &text)?,
        };
        let cancel = Cancel::new();
        let params = GenerateParams {
            max_tokens,
            sampling: self.sampling.clone(),
            stop_strings: stop,
            ignore_eos,
            cancel: Some(cancel.clone()),
            ..GenerateParams::default()
        };
        // Bounded: the thread runs at most `AHEAD` tokens ahead of the reader, so a reader that
        // stops reading (or cancels) costs at most that much more work.
        let (tx, rx) = sync_channel(AHEAD);
        let inner = Arc::clone(&self.inner);
        let flag = cancel.clone();
        std::thread::Builder::new()
            .name("bitnetc-generate".into())
            .spawn(move || {
                let mut s = lock(&inner);
                // A closed channel (the iterator was dropped) cancels the generation.
                let done = s.generate(&ids, &params, &mut |id, text| {
                    if tx.send(Event::Token(id, text.to_string())).is_err() {
                        flag.cancel();
                    }
                });
                let _ = tx.send(Event::Done(
                    done.map(|g| g.stop.name()).map_err(|e| e.to_string()),
                ));
            })
            .map_err(|e| error(format!("could not start the generation thread: {e}")))?;
        Ok(Stream {
            cancel,
            rx: Mutex::new(rx),
            tokens: Mutex::new(Vec::new()),
            stop: Mutex::new(None),
        })
    }
}

/// How many events the generation thread may send before the reader takes them.
const AHEAD: usize = 4;

/// What the generation thread sends.
enum Event {
    Token(Option<u32>, String),
    Done(Result<&'static str, String>),
}

/// The text of a generation as it comes; `tokens` and `stop` are filled in as it goes.
#[pyclass(module = "bitnetc", frozen)]
struct Stream {
    cancel: Cancel,
    rx: Mutex<Receiver<Event>>,
    tokens: Mutex<Vec<u32>>,
    stop: Mutex<Option<&'static str>>,
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            let event = py.detach(|| lock(&self.rx).recv());
            match event {
                Ok(Event::Token(id, text)) => {
                    if let Some(id) = id {
                        lock(&self.tokens).push(id);
                    }
                    if !text.is_empty() {
                        return Ok(Some(text));
                    }
                }
                Ok(Event::Done(Ok(stop))) => {
                    *lock(&self.stop) = Some(stop);
                    return Ok(None);
                }
                Ok(Event::Done(Err(e))) => return Err(error(e)),
                Err(_) => return Ok(None),
            }
        }
    }

    /// Stops the generation before its next step; the text already made can still be read, and
    /// `stop` becomes `"cancelled"` unless it had stopped already.
    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The new token ids so far.
    #[getter]
    fn tokens(&self) -> Vec<u32> {
        lock(&self.tokens).clone()
    }

    /// Why generation stopped (`max_tokens`, `stop_token`, `stop_string`, `context_full`,
    /// `cancelled`), once it has; `None` before.
    #[getter]
    fn stop(&self) -> Option<&'static str> {
        *lock(&self.stop)
    }
}

impl Drop for Stream {
    /// A stream dropped before its end (the reader broke out of the loop) stops the generation.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Opens `path`: a `.bnx` artifact is loaded, a model (Hugging Face folder, `.gguf`, `.onnx`) is
/// compiled for this CPU in memory. `threads` (default: every core) and `context` (default: the
/// model's; fixed for an artifact) configure the executor.
#[pyfunction]
#[pyo3(signature = (path, threads=None, context=None))]
fn load(
    py: Python<'_>,
    path: PathBuf,
    threads: Option<usize>,
    context: Option<u64>,
) -> PyResult<Model> {
    let mut options = bitnetc::Options {
        context,
        ..bitnetc::Options::default()
    };
    if let Some(t) = threads {
        if t == 0 {
            return Err(error("threads=0: give at least 1"));
        }
        options.cpu.threads = t;
    }
    let compiled = py
        .detach(|| bitnetc::compile(&path, &options))
        .map_err(|e| naming(&path, e))?;
    Ok(Model {
        vocab: compiled.vocab(),
        context: compiled.context(),
        origin: match compiled.origin {
            bitnetc::Origin::Artifact => "artifact",
            bitnetc::Origin::Jit => "jit",
        },
        compiled: Mutex::new(Some(compiled)),
        path,
    })
}

/// Compiles the model at `model` for this CPU into the artifact `output` (as `bitnetc compile
/// MODEL -o OUTPUT`; an existing file is not overwritten) and returns its path. Linking needs the
/// system C compiler driver (`cc`).
#[pyfunction]
#[pyo3(signature = (model, output, context=None))]
fn compile(
    py: Python<'_>,
    model: PathBuf,
    output: PathBuf,
    context: Option<u64>,
) -> PyResult<PathBuf> {
    py.detach(|| {
        if output.exists() {
            return Err(error(format!(
                "{}: already exists (not overwritten)",
                output.display()
            )));
        }
        let mut m = bitnetc::OpenOptions {
            context,
            ..bitnetc::OpenOptions::default()
        }
        .open(&model)
        .map_err(|e| naming(&model, e))?;
        let bytes = bitnetc::compile_cpu_object(&mut m, &bitnetc::ArtifactOptions::default())
            .and_then(|object| object.link(None))
            .map_err(|e| naming(&model, e))?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&output)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
            .map_err(|e| naming(&output, e))?;
        Ok(output)
    })
}

/// Validates the model at `path` against its full-precision baseline (as `bitnetc validate`):
/// perplexity, KL divergence and top-1 agreement on `windows` windows of `window` tokens of the
/// built-in text, speed and sizes, and the gates' verdicts; returns the report as a dict (what
/// `bitnetc validate --json` prints).
#[pyfunction]
#[pyo3(signature = (path, window=256, windows=4, threads=None))]
fn validate<'py>(
    py: Python<'py>,
    path: PathBuf,
    window: usize,
    windows: usize,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut options = bitnetc::validate::ValidateOptions {
        window,
        windows,
        ..bitnetc::validate::ValidateOptions::default()
    };
    if let Some(t) = threads {
        options.compile.cpu.threads = t.max(1);
    }
    let report = py
        .detach(|| bitnetc::validate::validate(&path, &options))
        .map_err(|e| naming(&path, e))?;
    json_to_python(py, &report.json())
}

/// Profiles the model at `path` (as `bitnetc profile`): one prefill of `prompt_len` tokens and
/// `steps` greedy decode steps, per launch, kernel group and layer, with the memory it holds and
/// the heap allocations per decode token; returns the report as a dict (what
/// `bitnetc profile --json` prints). `trace=True` adds the Chrome trace under `"trace"`.
/// `baseline` (a saved profile's path, or an earlier report as a dict) adds `"regressions"`: what
/// got slower than `threshold` (a fraction; 0.10 is 10%).
#[pyfunction]
#[pyo3(signature = (path, prompt_len=64, steps=32, threads=None, trace=false, baseline=None, threshold=0.10))]
#[allow(clippy::too_many_arguments)]
fn profile<'py>(
    py: Python<'py>,
    path: PathBuf,
    prompt_len: usize,
    steps: usize,
    threads: Option<usize>,
    trace: bool,
    baseline: Option<Bound<'py, PyAny>>,
    threshold: f64,
) -> PyResult<Bound<'py, PyAny>> {
    use bitnetc::profile::{ProfileSettings, baseline as saved};
    let base = match baseline {
        None => None,
        Some(b) if b.is_instance_of::<pyo3::types::PyDict>() => {
            let text: String = py.import("json")?.call_method1("dumps", (b,))?.extract()?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| error(format!("baseline: not a profile report: {e}")))?;
            saved::check_format(&value, "baseline").map_err(error)?;
            Some((value, "baseline".to_string()))
        }
        Some(b) => {
            let p: PathBuf = b.extract().map_err(|_| {
                error("baseline: give a saved profile's path or an earlier report (a dict)")
            })?;
            let value = saved::read(&p).map_err(error)?;
            Some((value, p.display().to_string()))
        }
    };
    let mut settings = ProfileSettings {
        prompt_len,
        steps,
        trace,
        ..ProfileSettings::default()
    };
    if let Some(t) = threads {
        if t == 0 {
            return Err(error("threads=0: give at least 1"));
        }
        settings.compile.cpu.threads = t;
    }
    let mut measured = py
        .detach(|| bitnetc::profile::profile(&path, &settings))
        .map_err(|e| naming(&path, e))?;
    if let Some((value, source)) = &base {
        saved::annotate(&mut measured.report, value, source, threshold).map_err(error)?;
    }
    if let Some(t) = measured.trace {
        measured.report["trace"] = t;
    }
    json_to_python(py, &measured.report)
}

/// A JSON value as the Python object `json.loads` makes of it.
fn json_to_python<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?
        .call_method1("loads", (value.to_string(),))
}

/// The `bitnetc` module.
#[pymodule]
#[pyo3(name = "bitnetc")]
fn bitnetc_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Model>()?;
    m.add_class::<Session>()?;
    m.add_class::<Stream>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(profile, m)?)?;
    Ok(())
}
