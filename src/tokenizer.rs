//! Which tokenizer a model has, built only when text is used ([`LazyTokenizer`]): a Hugging Face
//! folder's `tokenizer.json` (with its `tokenizer_config.json` and `generation_config.json`), a GGUF
//! file's vocabulary, the `tokenizer.json` next to an ONNX file, or an artifact's tokenizer
//! sections. Also the conversion from a GGUF file's `tokenizer.ggml.*` metadata (read by the
//! frontend) to the runtime's [`GgufVocab`]; it lives here because the runtime depends on no
//! compiler crate.

use crate::Error;
use bitnet_frontend::gguf::{GgufFile, GgufTokenizer};
use bitnet_runtime::tokenizer::{GgufVocab, Tokenizer, TokenizerError};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The runtime's view of a GGUF tokenizer; `source` (the GGUF file) names it in errors. Absent
/// token types become an empty list (all normal), absent merges and scores empty lists (which the
/// runtime reports when the model needs them).
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
        scores: meta.scores.clone().unwrap_or_default(),
        merges: meta.merges.clone().unwrap_or_default(),
        bos: meta.bos_token_id,
        eos: meta.eos_token_id,
        unk: meta.unknown_token_id,
        add_bos: meta.add_bos_token,
        add_eos: meta.add_eos_token,
        add_space_prefix: meta.add_space_prefix,
    })
}

/// Where a model's tokenizer comes from.
pub(crate) enum TokenizerSource {
    /// The model carries none.
    None,
    /// A Hugging Face folder with a `tokenizer.json`.
    HfFolder(PathBuf),
    /// A GGUF file with a vocabulary (`tokenizer.ggml.tokens`), opened when the model was.
    Gguf(Box<GgufFile>),
    /// A `tokenizer.json` file (next to an ONNX model).
    File(PathBuf),
    /// The `tokenizer` and `tokenizer_special` sections of the artifact at `path`.
    Artifact {
        /// The artifact, for messages.
        path: PathBuf,
        /// The `tokenizer.json` bytes.
        json: Vec<u8>,
        /// The special ids as JSON (`{"bos": id|null, "eos": [ids]}`), when recorded.
        special: Option<Vec<u8>>,
    },
}

/// A model's tokenizer, built from its source on first use. A failed build is not remembered: each
/// use tries again and returns the same error, so commands that need no text never see it.
pub struct LazyTokenizer {
    source: TokenizerSource,
    built: OnceLock<Option<Tokenizer>>,
}

impl LazyTokenizer {
    /// A tokenizer to build from `source` when it is first asked for.
    pub(crate) fn new(source: TokenizerSource) -> LazyTokenizer {
        LazyTokenizer {
            source,
            built: OnceLock::new(),
        }
    }

    /// Whether the model carries a tokenizer (which may still fail to build).
    pub fn is_present(&self) -> bool {
        !matches!(self.source, TokenizerSource::None)
    }

    /// The tokenizer, built now if this is its first use; `None` when the model carries none.
    pub fn get(&self) -> Result<Option<&Tokenizer>, Error> {
        if let Some(t) = self.built.get() {
            return Ok(t.as_ref());
        }
        let t = build(&self.source)?;
        Ok(self.built.get_or_init(|| t).as_ref())
    }

    /// The tokenizer by value (built now unless it was), for a session to own.
    pub fn into_tokenizer(self) -> Result<Option<Tokenizer>, Error> {
        match self.built.into_inner() {
            Some(t) => Ok(t),
            None => build(&self.source),
        }
    }
}

/// Builds the tokenizer `source` describes.
fn build(source: &TokenizerSource) -> Result<Option<Tokenizer>, Error> {
    Ok(match source {
        TokenizerSource::None => None,
        TokenizerSource::HfFolder(dir) => Some(Tokenizer::from_hf_dir(dir)?),
        TokenizerSource::Gguf(file) => {
            let source = file.path().display().to_string();
            let vocab = gguf_vocab(&file.tokenizer()?, &source)?;
            Some(Tokenizer::from_gguf_vocab(&vocab, &source)?)
        }
        TokenizerSource::File(path) => Some(Tokenizer::from_file(path)?),
        TokenizerSource::Artifact {
            path,
            json,
            special,
        } => Some(artifact_tokenizer(path, json, special.as_deref())?),
    })
}

/// The tokenizer an artifact carries, with its special ids.
fn artifact_tokenizer(
    path: &std::path::Path,
    json: &[u8],
    special: Option<&[u8]>,
) -> Result<Tokenizer, Error> {
    let source = format!("{} (tokenizer section)", path.display());
    let mut t = Tokenizer::from_json_bytes(json, &source)?;
    if let Some(special) = special {
        let bad = |message: String| TokenizerError::Json {
            file: format!("{} (tokenizer_special section)", path.display()),
            message,
        };
        let v: serde_json::Value =
            serde_json::from_slice(special).map_err(|e| bad(e.to_string()))?;
        let id = |x: &serde_json::Value| {
            x.as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| bad(format!("{x} is not a token id")))
        };
        let bos = match &v["bos"] {
            serde_json::Value::Null => None,
            x => Some(id(x)?),
        };
        let eos = v["eos"]
            .as_array()
            .ok_or_else(|| bad("\"eos\" is not a list".into()))?
            .iter()
            .map(id)
            .collect::<Result<Vec<_>, _>>()?;
        t = t.with_special_ids(bos, eos)?;
    }
    Ok(t)
}
