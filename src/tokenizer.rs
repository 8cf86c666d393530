//! From a GGUF file's `tokenizer.ggml.*` metadata (read by the frontend) to the runtime's
//! [`GgufVocab`], from which [`Tokenizer::from_gguf_vocab`](bitnet_runtime::tokenizer::Tokenizer::from_gguf_vocab)
//! builds a tokenizer. The conversion lives here because the runtime depends on no compiler crate.

use bitnet_frontend::gguf::GgufTokenizer;
use bitnet_runtime::tokenizer::{GgufVocab, Tokenizer, TokenizerError};

/// The runtime's view of a GGUF tokenizer; `source` (the GGUF file) names it in errors. Absent
/// token types become an empty list (all normal), absent merges an empty list (which the runtime
/// reports when it needs them).
pub fn gguf_vocab(meta: &GgufTokenizer, source: &str) -> Result<GgufVocab, TokenizerError> {
    let model = meta
        .model
        .clone()
        .ok_or_else(|| TokenizerError::MissingField {
            file: source.to_string(),
            field: "tokenizer.ggml.model".into(),
        })?;
    Ok(GgufVocab {
        model,
        pre: meta.pre.clone(),
        tokens: meta.tokens.clone(),
        token_types: meta.token_types.clone().unwrap_or_default(),
        merges: meta.merges.clone().unwrap_or_default(),
        bos: meta.bos_token_id,
        eos: meta.eos_token_id,
        add_bos: meta.add_bos_token,
    })
}

/// The tokenizer of the model at `path`: a Hugging Face folder's `tokenizer.json` (with its
/// `tokenizer_config.json` and `generation_config.json`), a GGUF file's vocabulary, or the
/// `tokenizer.json` next to an ONNX file. `None` when the model carries none.
pub fn model_tokenizer(path: &std::path::Path) -> Result<Option<Tokenizer>, crate::Error> {
    use bitnet_frontend::detect::{ModelFormat, detect};
    Ok(match detect(path)? {
        ModelFormat::Hf => {
            if path.join("tokenizer.json").is_file() {
                Some(Tokenizer::from_hf_dir(path)?)
            } else {
                None
            }
        }
        ModelFormat::Gguf => {
            let file = bitnet_frontend::gguf::GgufFile::open(path)?;
            if file.metadata().contains_key("tokenizer.ggml.tokens") {
                let source = path.display().to_string();
                let vocab = gguf_vocab(&file.tokenizer()?, &source)?;
                Some(Tokenizer::from_gguf_vocab(&vocab, &source)?)
            } else {
                None
            }
        }
        ModelFormat::Onnx | ModelFormat::Bir => {
            let sibling = path.with_file_name("tokenizer.json");
            if sibling.is_file() {
                Some(Tokenizer::from_file(&sibling)?)
            } else {
                None
            }
        }
    })
}
