//! What an artifact records about the model it was compiled from: the input files with their
//! sha256 (the file itself, or the files of a Hugging Face folder the importer and the tokenizer
//! read), the model's tokenizer as the `tokenizer` and `tokenizer_special` sections, and its chat
//! template as the `chat_template` section.

use crate::{Error, Model};
use bitnet_runtime::artifact::InputFile;
use std::path::{Path, PathBuf};

/// The model files an artifact records, with their hashes: the file itself, or the files of a
/// Hugging Face folder the importer reads (config, weights, index) and the tokenizer files.
pub(crate) fn input_files(path: &Path) -> Result<Vec<InputFile>, Error> {
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if path.is_dir() {
        const NAMED: [&str; 6] = [
            "chat_template.jinja",
            "config.json",
            "generation_config.json",
            "model.safetensors.index.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ];
        for entry in std::fs::read_dir(path).map_err(io(path))? {
            let entry = entry.map_err(io(path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if NAMED.contains(&name.as_str()) || name.ends_with(".safetensors") {
                files.push((name, entry.path()));
            }
        }
    } else {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        files.push((name, path.to_path_buf()));
    }
    files.sort();
    let mut inputs = Vec::with_capacity(files.len());
    for (name, p) in files {
        let (bytes, sha256) = bitnet_runtime::artifact::sha256_file(&p).map_err(io(&p))?;
        inputs.push(InputFile {
            bytes,
            name,
            sha256,
        });
    }
    Ok(inputs)
}

/// The `tokenizer` and `tokenizer_special` sections of an artifact, when the model has a tokenizer.
pub(crate) type ArtifactTokenizer = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The tokenizer an artifact carries: a Hugging Face folder's `tokenizer.json` as it is, or the one
/// built from a GGUF vocabulary (`Tokenizer::to_json`); and its special ids as JSON
/// (`{"bos": id|null, "eos": [ids]}`), which `tokenizer.json` does not record. An artifact needs
/// the tokenizer, so one that cannot be built fails the compilation.
pub(crate) fn artifact_tokenizer(model: &Model) -> Result<ArtifactTokenizer, Error> {
    let tokenizer = model
        .tokenizer()
        .map_err(|e| Error::ArtifactTokenizer(e.to_string()))?;
    let Some(t) = tokenizer else {
        return Ok((None, None));
    };
    let path = model.path();
    let hf = path.join("tokenizer.json");
    let json = if path.is_dir() && hf.is_file() {
        std::fs::read(&hf).map_err(|source| Error::Io { path: hf, source })?
    } else {
        t.to_json()
            .map_err(|e| Error::ArtifactTokenizer(e.to_string()))?
            .into_bytes()
    };
    let special = serde_json::json!({"bos": t.bos(), "eos": t.eos()});
    Ok((Some(json), Some(special.to_string().into_bytes())))
}

/// The `chat_template` section of an artifact, when the model has a template. A template that
/// cannot be read fails the compilation, as the tokenizer does.
pub(crate) fn artifact_chat_template(model: &Model) -> Result<Option<Vec<u8>>, Error> {
    Ok(model.chat_template()?.map(|t| t.to_section()))
}
