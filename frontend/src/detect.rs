//! Model format detection by content (magic bytes, folder layout), with the extension only as a hint
//! for formats that have no magic (ONNX protobuf, `.bir` text).

use crate::error::FrontendError;
use std::io::Read;
use std::path::Path;

/// The formats `bitnetc` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// A Hugging Face checkpoint folder (`config.json` + safetensors).
    Hf,
    /// A GGUF file (magic `GGUF`).
    Gguf,
    /// An ONNX model (protobuf `ModelProto`).
    Onnx,
    /// bitnetc IR text.
    Bir,
}

/// Detects the format of `path`.
pub fn detect(path: &Path) -> Result<ModelFormat, FrontendError> {
    let io = |source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(ModelFormat::Hf);
        }
        return Err(FrontendError::format(
            path,
            "a model folder needs a config.json (Hugging Face layout)",
        ));
    }
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io)?;
    let head = &head[..n];
    if head.starts_with(b"GGUF") {
        return Ok(ModelFormat::Gguf);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if head.starts_with(b"BNX1") {
        return Err(FrontendError::format(
            path,
            "a compiled bitnetc artifact (.bnx), not a model: this command reads models (a Hugging \
             Face folder, a .gguf, an .onnx or a .bir file); `bitnetc run` and `bench` run artifacts",
        ));
    }
    if ext == "bnx" {
        // Artifacts are recognized by their magic before formats are detected: one that reaches
        // here has a damaged or missing magic.
        let first: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(FrontendError::format(
            path,
            format!(
                "not a bitnetc artifact: a .bnx file starts with the magic BNX1 (42 4e 58 31), \
                 this one with [{}]: it is damaged or not an artifact",
                first.join(" ")
            ),
        ));
    }
    let text = std::str::from_utf8(head).ok().map(str::trim_start);
    if ext == "bir" || text.is_some_and(|t| t.starts_with("func ") || t.starts_with(';')) {
        return Ok(ModelFormat::Bir);
    }
    // An ONNX ModelProto starts with field 1 (ir_version, varint: 0x08) in practice; accept the
    // extension too, and let the protobuf parser give the real error.
    if ext == "onnx" || head.first() == Some(&0x08) {
        return Ok(ModelFormat::Onnx);
    }
    Err(FrontendError::format(
        path,
        "unknown model format: expected a Hugging Face folder, a .gguf, an .onnx or a .bir file",
    ))
}
