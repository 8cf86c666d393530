//! The checks on what bitnetc makes and keeps: an artifact's hashes (the loader's own checks), a
//! rebuild byte for byte, the audit log's hash chain, and the malformed-input corpus (every bad
//! file rejected with an error, none accepted, none panicking).

use super::{Check, ComplianceOptions};
use crate::Error;
use std::path::{Path, PathBuf};

const HASHES: &str = "the artifact's manifest and every section match their sha256";
const REBUILD: &str = "compiling the same inputs again gives the same bytes";
const AUDIT: &str = "the audit log's hash chain verifies";
const MALFORMED: &str = "every file of the malformed-input corpus is rejected with an error";

/// The artifact checks: `artifact_hashes` and `rebuild_identical`. A model is compiled into an
/// artifact twice (in a temporary folder); an artifact is rebuilt from `options.model`.
pub fn artifact_checks(options: &ComplianceOptions) -> Result<Vec<Check>, Error> {
    let Some(target) = &options.target else {
        let why = "no artifact or model given".to_string();
        return Ok(vec![
            Check::not_run("artifact_hashes", HASHES, why.clone()),
            Check::not_run("rebuild_identical", REBUILD, why),
        ]);
    };
    if bitnet_runtime::artifact::is_artifact(target) {
        let bytes = std::fs::read(target).map_err(|source| Error::Io {
            path: target.clone(),
            source,
        })?;
        let hashes = hashes(target);
        let rebuild = match (&options.model, &hashes.1) {
            (None, _) => Check::not_run(
                "rebuild_identical",
                REBUILD,
                "an artifact without --model: nothing to rebuild it from".into(),
            ),
            (Some(_), None) => Check::not_run(
                "rebuild_identical",
                REBUILD,
                "the artifact does not load".into(),
            ),
            (Some(model), Some(manifest)) => rebuild_artifact(model, manifest, &bytes, options),
        };
        return Ok(vec![hashes.0, rebuild]);
    }
    // A model: compile it twice.
    let context = None;
    let first = build(target, "native", context, options);
    let second = build(target, "native", context, options);
    let (first, second) = match (first, second) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            let why = format!("{}: the model does not compile: {e}", target.display());
            return Ok(vec![
                Check::ran("artifact_hashes", HASHES, false, why.clone()),
                Check::ran("rebuild_identical", REBUILD, false, why),
            ]);
        }
    };
    let dir = std::env::temp_dir().join(format!("bitnetc-compliance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let path = dir.join("model.bnx");
    let written = std::fs::write(&path, &first).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    });
    let hashes = written.map(|()| hashes(&path).0);
    let _ = std::fs::remove_dir_all(&dir);
    let same = first == second;
    Ok(vec![
        hashes?,
        Check::ran(
            "rebuild_identical",
            REBUILD,
            same,
            format!(
                "{} compiled twice: {} and {} bytes, sha256 {} and {}{}",
                target.display(),
                first.len(),
                second.len(),
                short(&first),
                short(&second),
                if same { "" } else { ": they differ" }
            ),
        ),
    ])
}

/// The first 16 hex digits of the bytes' sha256.
fn short(bytes: &[u8]) -> String {
    bitnet_runtime::artifact::sha256_hex(bytes)
        .chars()
        .take(16)
        .collect()
}

/// `artifact_hashes` on the artifact at `path`, and its manifest when it loads.
fn hashes(path: &Path) -> (Check, Option<bitnet_runtime::artifact::Manifest>) {
    match bitnet_runtime::artifact::load_program(path) {
        Ok(loaded) => {
            let m = loaded.manifest;
            let evidence = format!(
                "{}: the manifest and {} sections ({}) verified; compiled by {} for {} from {} input files",
                path.display(),
                m.sections.len(),
                m.sections
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                m.compiler,
                m.target.triple,
                m.inputs.len()
            );
            (
                Check::ran("artifact_hashes", HASHES, true, evidence),
                Some(m),
            )
        }
        Err(e) => (
            Check::ran("artifact_hashes", HASHES, false, e.to_string()),
            None,
        ),
    }
}

/// Compiles `model` into an artifact's bytes.
fn build(
    model: &Path,
    target: &str,
    context: Option<u64>,
    options: &ComplianceOptions,
) -> Result<Vec<u8>, Error> {
    let mut m = crate::OpenOptions {
        context,
        quantize: None,
    }
    .open(model)?;
    let artifact = crate::ArtifactOptions {
        target: target.to_string(),
        cpu: options.cpu.clone(),
        ..crate::ArtifactOptions::default()
    };
    crate::compile_cpu_object(&mut m, &artifact)?.link(None)
}

/// `rebuild_identical` for an artifact: its recorded inputs are `model`'s files, and compiling
/// them for its target (`native`, else its triple) at its context gives its bytes.
fn rebuild_artifact(
    model: &Path,
    manifest: &bitnet_runtime::artifact::Manifest,
    bytes: &[u8],
    options: &ComplianceOptions,
) -> Check {
    let fail = |e: String| Check::ran("rebuild_identical", REBUILD, false, e);
    for input in &manifest.inputs {
        let file = if model.is_dir() {
            model.join(&input.name)
        } else {
            model.to_path_buf()
        };
        match bitnet_runtime::artifact::sha256_file(&file) {
            Ok((_, sha)) if sha == input.sha256 => {}
            Ok((_, sha)) => {
                return fail(format!(
                    "{}: sha256 {sha}, the artifact was compiled from {}",
                    file.display(),
                    input.sha256
                ));
            }
            Err(e) => return fail(format!("{}: {e}", file.display())),
        }
    }
    let context = Some(manifest.program.context);
    let mut tried = Vec::new();
    for target in ["native", manifest.target.triple.as_str()] {
        if !bitnet_backends::cpu::aot::TARGETS.contains(&target) || tried.contains(&target) {
            continue;
        }
        tried.push(target);
        match build(model, target, context, options) {
            Ok(rebuilt) if rebuilt == bytes => {
                return Check::ran(
                    "rebuild_identical",
                    REBUILD,
                    true,
                    format!(
                        "{} rebuilt from {} ({} input files, sha256 checked) for {target}: {} bytes, identical",
                        manifest.compiler,
                        model.display(),
                        manifest.inputs.len(),
                        bytes.len()
                    ),
                );
            }
            Ok(_) => {}
            Err(e) => return fail(format!("{}: {e}", model.display())),
        }
    }
    fail(format!(
        "rebuilt from {} for {}: the bytes differ (were other --head-dtype/--dense-dtype flags used?)",
        model.display(),
        tried.join(" and ")
    ))
}

/// `audit_chain`: the log at `path` verifies.
pub fn audit_chain(path: Option<&Path>) -> Check {
    let Some(path) = path else {
        return Check::not_run("audit_chain", AUDIT, "no audit log (it is off)".into());
    };
    if !path.exists() {
        return Check::not_run(
            "audit_chain",
            AUDIT,
            format!("{}: no such log yet", path.display()),
        );
    }
    match bitnet_runtime::audit::verify(path) {
        Ok(r) if r.ok() => Check::ran(
            "audit_chain",
            AUDIT,
            true,
            format!(
                "{}: {} records verify{}",
                path.display(),
                r.records,
                r.incomplete_tail.map_or(String::new(), |l| format!(
                    " (an incomplete tail from line {l}, a write cut off)"
                ))
            ),
        ),
        Ok(r) => Check::ran(
            "audit_chain",
            AUDIT,
            false,
            format!(
                "{}: broken after {} records: {:?}",
                path.display(),
                r.records,
                r.problem
            ),
        ),
        Err(e) => Check::ran("audit_chain", AUDIT, false, e.to_string()),
    }
}

/// `malformed_inputs`: every file under `tests/malformed/{gguf,onnx}` and every folder under
/// `tests/malformed/hf` (but its `valid*` controls) of the source tree fails to import or compile with an error (a panic,
/// caught, fails the check).
pub fn malformed_inputs(source: Option<&Path>) -> Check {
    let Some(root) = source
        .map(|s| s.join("tests/malformed"))
        .filter(|p| p.is_dir())
    else {
        return Check::not_run(
            "malformed_inputs",
            MALFORMED,
            "no source tree with tests/malformed (give --source)".into(),
        );
    };
    let mut cases: Vec<PathBuf> = Vec::new();
    for (kind, dirs) in [("gguf", false), ("onnx", false), ("hf", true)] {
        let Ok(entries) = std::fs::read_dir(root.join(kind)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                if dirs {
                    // `valid*/` are the corpus's controls, which must import.
                    p.is_dir()
                        && p.file_name()
                            .is_some_and(|n| !n.to_string_lossy().starts_with("valid"))
                } else {
                    p.extension().is_some_and(|e| e == kind)
                }
            })
            .collect();
        found.sort();
        cases.extend(found);
    }
    let mut accepted = Vec::new();
    let mut panicked = Vec::new();
    for case in &cases {
        let options = crate::Options {
            context: Some(16),
            ..crate::Options::default()
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::compile(case, &options)
        })) {
            Ok(Ok(_)) => accepted.push(case.display().to_string()),
            Ok(Err(_)) => {}
            Err(_) => panicked.push(case.display().to_string()),
        }
    }
    let ok = !cases.is_empty() && accepted.is_empty() && panicked.is_empty();
    let mut evidence = format!(
        "{}: {} malformed inputs, {} rejected with an error",
        root.display(),
        cases.len(),
        cases.len() - accepted.len() - panicked.len()
    );
    if !accepted.is_empty() {
        evidence.push_str(&format!("; accepted: {}", accepted.join(", ")));
    }
    if !panicked.is_empty() {
        evidence.push_str(&format!("; panicked: {}", panicked.join(", ")));
    }
    Check::ran("malformed_inputs", MALFORMED, ok, evidence)
}
