//! What `bitnetc serve` hands the server to load and compile models: the loader of each model
//! given at start, and the gateway's `Toolchain` (`POST /v1/bitnetc/models` loads a model the same
//! way; `POST /v1/bitnetc/compile` compiles an artifact as `bitnetc compile` does for a CPU
//! target, written under a temporary name and linked into place so that no half-written or
//! overwritten file is ever left; `POST /v1/bitnetc/validate` validates one as `bitnetc validate`
//! does, with the server's threads and precision flags; `profile` and `compliance` likewise, the
//! compliance checks reading the source tree when the server runs in bitnetc's folder).
//!
//! A loaded model's `ModelInfo` says what it is (`hf`, `gguf`, `onnx` or `artifact`) and what the
//! compiled program costs: weight bytes, KV bytes and arena bytes per slot, kernels, launches.

use bitnet_runtime::chat::BUILTIN_NAME;
use bitnet_serve::{
    CompileRequest, Compiled, ComplianceRequest, LoadedModel, ModelInfo, ProfileRequest, SlotBatch,
    Toolchain, ValidateRequest,
};
use bitnetc::profile::{ProfileSettings, baseline, profile};
use serde_json::json;
use std::path::{Path, PathBuf};

/// What the file or folder at `path` is.
fn kind(path: &Path) -> &'static str {
    if path.is_dir() {
        return "hf";
    }
    if bitnet_runtime::artifact::is_artifact(path) {
        return "artifact";
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("gguf") => "gguf",
        Some("onnx") => "onnx",
        _ => "model",
    }
}

/// Loads (compiles, or loads the artifact) the model at `path` as `id` into `slots` slots.
pub fn load(
    path: &Path,
    id: &str,
    options: &bitnetc::Options,
    slots: usize,
) -> Result<LoadedModel, String> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let model = bitnetc::compile(path, options).map_err(|e| at(&e))?;
    let (how, secs) = (
        format!("{:?}", model.origin).to_lowercase(),
        (model.import_time + model.compile_time).as_secs_f64(),
    );
    let chat_template = model.chat_template().map_err(|e| at(&e))?.cloned();
    match &chat_template {
        Some(t) => eprintln!("{id}: chat template: the model's ({})", t.origin),
        None => eprintln!("{id}: chat template: built-in {BUILTIN_NAME} (the model has none)"),
    }
    let (exec, tokenizer) = model.into_parts().map_err(|e| at(&e))?;
    let tokenizer =
        tokenizer.ok_or_else(|| at(&"the model carries no tokenizer, which the server needs"))?;
    let program = exec.program();
    let mut details = json!({
        "origin": how,
        "load_s": secs,
        "kv_bytes_per_slot": program.kv_bytes,
        "arena_bytes_per_slot": program.arena_bytes,
        "kernels": program.kernels.len(),
        "launches": program.launches.len(),
    });
    // Weights the program holds itself (an artifact's); a compiled model's stay mapped from its
    // files and are not counted here.
    if !program.weights.is_empty() {
        details["weight_bytes"] = program.weights.len().into();
    }
    let context = program.context;
    let slots = SlotBatch::new(&exec, slots).map_err(|e| at(&e))?;
    eprintln!(
        "{id}: ready ({how} in {secs:.1} s; {slots_n} slots of {context} tokens)",
        slots_n = bitnet_serve::StepModel::slots(&slots)
    );
    Ok(LoadedModel {
        model: Box::new(slots),
        tokenizer,
        chat_template,
        info: ModelInfo {
            source: Some(path.to_path_buf()),
            kind: kind(path).into(),
            details,
        },
    })
}

/// How to load one model given at start.
pub fn loader(
    path: PathBuf,
    id: String,
    options: bitnetc::Options,
    slots: usize,
) -> bitnet_serve::Loader {
    Box::new(move || load(&path, &id, &options, slots))
}

/// The gateway's toolchain: models load with the server's options and slots; compiles use its
/// precision flags.
pub struct CliToolchain {
    /// How models are compiled for serving (threads, context, precision).
    pub options: bitnetc::Options,
    /// Slots per model.
    pub slots: usize,
    /// The server's audit log (whose chain a compliance job checks).
    pub audit_log: Option<PathBuf>,
}

impl Toolchain for CliToolchain {
    fn load(&self, name: &str, path: &Path) -> Result<LoadedModel, String> {
        load(path, name, &self.options, self.slots)
    }

    fn targets(&self) -> Vec<String> {
        bitnet_backends::cpu::aot::TARGETS
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    fn compile(&self, request: &CompileRequest) -> Result<Compiled, String> {
        let model = &request.model;
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", model.display());
        let mut m = bitnetc::OpenOptions {
            context: request.context,
            quantize: self.options.quantize,
        }
        .open(model)
        .map_err(|e| at(&e))?;
        let options = bitnetc::ArtifactOptions {
            target: request.target.clone(),
            cpu: bitnetc::CpuOptions {
                head: self.options.cpu.head,
                dense: self.options.cpu.dense,
                ..bitnetc::CpuOptions::default()
            },
            ..bitnetc::ArtifactOptions::default()
        };
        let compiled = bitnetc::compile_cpu_object(&mut m, &options).map_err(|e| at(&e))?;
        let library = compiled.shared_library(None).map_err(|e| at(&e))?;
        let bytes = crate::cli::output::write_new_artifact(&request.output, &compiled, &library)?;
        eprintln!(
            "compiled {} into {} ({bytes} bytes)",
            model.display(),
            request.output.display(),
        );
        Ok(Compiled {
            output: request.output.clone(),
            bytes,
        })
    }

    fn validate(&self, request: &ValidateRequest) -> Result<serde_json::Value, String> {
        use bitnetc::validate::{Gates, Reference, ValidateOptions, validate};
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", request.model.display());
        let mut compile = self.options.clone();
        compile.context = None;
        compile.on_stage = None;
        let mut options = ValidateOptions {
            compile,
            reference: request
                .reference
                .clone()
                .map_or(Reference::FullPrecision, Reference::Model),
            tokenizer: request.tokenizer.clone(),
            ..ValidateOptions::default()
        };
        if let Some(w) = request.window {
            options.window = usize::try_from(w).map_err(|e| format!("window {w}: {e}"))?;
        }
        if let Some(w) = request.windows {
            options.windows = usize::try_from(w).map_err(|e| format!("windows {w}: {e}"))?;
        }
        if let Some(gates) = &request.gates {
            options.gates = Gates::parse(&gates.to_string(), "the request's 'gates'")
                .map_err(|e| e.to_string())?;
        }
        if let Some(path) = &request.text {
            options.text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            options.text_source = path.display().to_string();
        }
        let report = validate(&request.model, &options).map_err(|e| at(&e))?;
        eprintln!(
            "validated {}: {}",
            request.model.display(),
            if report.pass() {
                "all gates pass"
            } else {
                "a gate failed"
            }
        );
        Ok(report.json())
    }

    fn profile(&self, request: &ProfileRequest) -> Result<serde_json::Value, String> {
        let at = |e: &dyn std::fmt::Display| format!("{}: {e:#}", request.model.display());
        let size = |v: Option<u64>, default: usize| {
            v.map_or(Ok(default), |n| {
                usize::try_from(n).map_err(|e| format!("{n}: {e}"))
            })
        };
        let threshold = request.threshold.unwrap_or(0.10);
        let base = request
            .baseline
            .as_deref()
            .map(baseline::read)
            .transpose()
            .map_err(|e| e.to_string())?;
        let mut compile = self.options.clone();
        compile.on_stage = None;
        let settings = ProfileSettings {
            compile,
            prompt_len: size(request.prompt_len, 64)?,
            steps: size(request.steps, 32)?,
            ..ProfileSettings::default()
        };
        let mut report = profile(&request.model, &settings)
            .map_err(|e| at(&e))?
            .report;
        if let (Some(base), Some(path)) = (&base, &request.baseline) {
            baseline::annotate(&mut report, base, &path.display().to_string(), threshold)
                .map_err(|e| e.to_string())?;
        }
        Ok(report)
    }

    fn compliance(&self, request: &ComplianceRequest) -> Result<serde_json::Value, String> {
        use bitnetc::compliance::{ComplianceOptions, Level, run};
        let level = Level::parse(&request.level)
            .ok_or_else(|| format!("{:?}: not a compliance level", request.level))?;
        let options = ComplianceOptions {
            target: request.target.clone(),
            model: request.model.clone(),
            level,
            audit_log: self.audit_log.clone(),
            source: crate::cli::compliance::source_tree(None),
            coverage: None,
            fuzz: None,
            licences: None,
            cpu: bitnetc::CpuOptions {
                head: self.options.cpu.head,
                dense: self.options.cpu.dense,
                ..bitnetc::CpuOptions::default()
            },
        };
        run(&options).map(|r| r.json()).map_err(|e| e.to_string())
    }
}
