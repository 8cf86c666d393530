//! Text ↔ token ids for generation and chat, on top of the `tokenizers` crate (pure Rust: the
//! `fancy-regex` feature, no onig, no hub download).
//!
//! A [`Tokenizer`] comes from a Hugging Face `tokenizer.json` ([`Tokenizer::from_json_bytes`],
//! [`Tokenizer::from_file`]), from a Hugging Face folder that may also hold `tokenizer_config.json`
//! and `generation_config.json` ([`Tokenizer::from_hf_dir`]), or from the `tokenizer.ggml.*`
//! metadata of a GGUF file, converted by the caller into a [`GgufVocab`]
//! ([`Tokenizer::from_gguf_vocab`]; this crate reads no model format). [`Tokenizer::to_json`] writes
//! the `tokenizer.json` an artifact carries, whichever way the tokenizer was made.
//!
//! [`DecodeStream`] turns ids into text one id at a time during generation. Byte-level BPE tokens
//! and SentencePiece byte-fallback tokens (`<0xNN>`) can split a multi-byte character, so a step
//! returns only text that is final: the delta is held back while the decoded text ends in U+FFFD
//! (an incomplete, or invalid, UTF-8 sequence). [`DecodeStream::finish`] returns the rest decoded
//! lossily, so that the pieces, concatenated, equal `decode(ids, skip_special)`: the byte-level
//! decoder decodes the concatenated bytes of the tokens with `String::from_utf8_lossy`, which
//! settles every character, and every U+FFFD, from the bytes up to it, never from bytes after it.
//! The byte-fallback decoder is the one exception: a run of byte tokens that is not UTF-8 as a whole
//! becomes one U+FFFD per byte, so invalid bytes after a complete character would rewrite that
//! character; the stream then returns the new tokens decoded on their own (the character stays, the
//! invalid bytes are U+FFFD), and only there do the pieces differ from `decode`.

mod gguf;
mod stream;
#[cfg(test)]
mod tests;

pub use gguf::GgufVocab;
pub use stream::DecodeStream;

use std::path::Path;

/// Why a tokenizer could not be loaded, built or used. Every variant names the file it concerns
/// (for a GGUF vocabulary, the GGUF file the caller named).
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid JSON, or not a tokenizer the `tokenizers` crate can load.
    #[error("{file}: not a valid tokenizer file: {message}")]
    Json {
        /// The file.
        file: String,
        /// What the parser said.
        message: String,
    },
    /// A field the tokenizer needs is absent.
    #[error("{file}: missing field '{field}'")]
    MissingField {
        /// The file.
        file: String,
        /// The field (a JSON key or a GGUF metadata key).
        field: String,
    },
    /// A field is present but its value is wrong.
    #[error("{file}: field '{field}': {message}")]
    Field {
        /// The file.
        file: String,
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The tokenizer kind is one this crate does not build.
    #[error("{file}: unsupported {what}")]
    Unsupported {
        /// The file.
        file: String,
        /// What is unsupported, with the field that says it.
        what: String,
    },
    /// A token id that is not in the vocabulary.
    #[error("{file}: token id {id} is not in the vocabulary ({vocab_size} ids)")]
    IdOutOfRange {
        /// The tokenizer's file.
        file: String,
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// The `tokenizers` crate failed to encode, decode or serialize.
    #[error("{file}: {op} failed: {message}")]
    Failed {
        /// The tokenizer's file.
        file: String,
        /// What was being done: `encode`, `decode`, `serialize`.
        op: &'static str,
        /// What the crate said.
        message: String,
    },
}

/// A tokenizer and the begin/end-of-sequence ids it knows.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The file it came from, for error messages.
    source: String,
    bos: Option<u32>,
    eos: Vec<u32>,
    /// `add_bos_token` from `tokenizer_config.json`, which overrides the post-processor.
    add_bos: Option<bool>,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json` held in memory; `source` names it in errors. It knows no bos or
    /// eos id (a bare `tokenizer.json` does not say which they are): see [`Tokenizer::from_hf_dir`]
    /// and [`Tokenizer::with_special_ids`].
    pub fn from_json_bytes(bytes: &[u8], source: &str) -> Result<Tokenizer, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| TokenizerError::Json {
            file: source.to_string(),
            message: e.to_string(),
        })?;
        Ok(Tokenizer::wrap(inner, source))
    }

    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
            file: file.clone(),
            source,
        })?;
        Tokenizer::from_json_bytes(&bytes, &file)
    }

    /// Loads a Hugging Face folder: `tokenizer.json`, and when present `tokenizer_config.json`
    /// (`bos_token`, `eos_token`, `add_bos_token`) and `generation_config.json` (`bos_token_id`,
    /// `eos_token_id`, an id or a list). The bos id is `bos_token`'s, else `bos_token_id`; the eos
    /// ids are `eos_token_id`'s followed by `eos_token`'s if it is not among them.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let dir = dir.as_ref();
        let mut tok = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        let mut bos = None;
        let mut eos = Vec::new();
        if let Some((file, cfg)) = read_optional_json(&dir.join("generation_config.json"))? {
            if let Some(ids) = config_ids(&cfg, "bos_token_id", &file)? {
                bos = ids.first().copied();
            }
            eos = config_ids(&cfg, "eos_token_id", &file)?.unwrap_or_default();
            for id in bos.iter().chain(&eos) {
                tok.config_id_known(*id, &file)?;
            }
        }
        if let Some((file, cfg)) = read_optional_json(&dir.join("tokenizer_config.json"))? {
            if let Some(id) = tok.config_token(&cfg, "bos_token", &file)? {
                bos = Some(id);
            }
            if let Some(id) = tok.config_token(&cfg, "eos_token", &file)?
                && !eos.contains(&id)
            {
                eos.push(id);
            }
            tok.add_bos = match cfg.get("add_bos_token") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::Bool(b)) => Some(*b),
                Some(other) => {
                    return Err(field_error(&file, "add_bos_token", "a boolean", other));
                }
            };
        }
        tok.bos = bos;
        tok.eos = eos;
        Ok(tok)
    }

    /// Sets the bos and eos ids, for a tokenizer loaded from a bare `tokenizer.json` (an artifact
    /// stores them beside it). Every id must be in the vocabulary.
    pub fn with_special_ids(
        mut self,
        bos: Option<u32>,
        eos: Vec<u32>,
    ) -> Result<Tokenizer, TokenizerError> {
        for id in bos.iter().chain(&eos) {
            self.check_id(*id)?;
        }
        self.bos = bos;
        self.eos = eos;
        Ok(self)
    }

    /// The tokenizer as `tokenizer.json` text (compact, deterministic: vocabulary by id, merges in
    /// order). The bos/eos ids and `add_bos_token` are not part of it.
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner
            .to_string(false)
            .map_err(|e| self.failed("serialize", &*e))
    }

    /// The file the tokenizer came from, as errors name it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Encodes `text`; `add_special` adds what the post-processor adds (bos, usually), with
    /// `add_bos_token` from `tokenizer_config.json` deciding about bos when it was given.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let ids = self.encode_raw(text, add_special)?;
        let (Some(bos), Some(add_bos), true) = (self.bos, self.add_bos, add_special) else {
            return Ok(ids);
        };
        let starts_with_bos = ids.first() == Some(&bos);
        if add_bos && !starts_with_bos {
            Ok(std::iter::once(bos).chain(ids).collect())
        } else if !add_bos && starts_with_bos {
            // Drop the bos only where the post-processor put it, not one the text spelled out.
            let plain = self.encode_raw(text, false)?;
            let added = ids.get(1..plain.len() + 1) == Some(plain.as_slice());
            Ok(if added { ids[1..].to_vec() } else { ids })
        } else {
            Ok(ids)
        }
    }

    /// Decodes `ids`; `skip_special` leaves special tokens (bos, eos, chat markers) out. Byte
    /// sequences that are not UTF-8 become U+FFFD, as Hugging Face's decode gives them.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        for id in ids {
            self.check_id(*id)?;
        }
        self.decode_checked(ids, skip_special)
    }

    /// A streaming decoder for generation: see [`DecodeStream`].
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream<'_> {
        DecodeStream::new(self, skip_special)
    }

    /// A printable form of one token: the text it decodes to on its own (special tokens kept), or,
    /// where that is not whole UTF-8 (a byte-level token holding part of a character), its
    /// vocabulary entry. `None` for an id outside the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<String> {
        let raw = self.inner.id_to_token(id)?;
        match self.inner.decode(&[id], false) {
            Ok(text) if !text.is_empty() && !text.contains('\u{FFFD}') => Some(text),
            _ => Some(raw),
        }
    }

    /// The id of a vocabulary entry or added token, such as a chat marker (`<|eot_id|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The id of a special token (an added token marked special, such as `<|im_end|>`); `None`
    /// for ordinary vocabulary entries and tokens the tokenizer does not have.
    pub fn special_token_id(&self, token: &str) -> Option<u32> {
        self.inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special && t.content == token)
            .map(|(&id, _)| id)
            .min()
    }

    /// The vocabulary entry of `id` as written (`<|begin_of_text|>`, `Ġthe`), what a chat template's
    /// `bos_token` is; `None` for an id outside the vocabulary.
    pub fn token_content(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Whether encoding text with special tokens (`encode(text, true)`) puts the bos id first.
    pub fn adds_bos(&self) -> Result<bool, TokenizerError> {
        Ok(self.bos.is_some() && self.encode("", true)?.first() == self.bos.as_ref())
    }

    /// One more than the largest id, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The begin-of-sequence id, when known.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence ids (generation stops at any of them); empty when none is known.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    fn wrap(inner: tokenizers::Tokenizer, source: &str) -> Tokenizer {
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1);
        Tokenizer {
            inner,
            source: source.to_string(),
            bos: None,
            eos: Vec::new(),
            add_bos: None,
            vocab_size,
        }
    }

    fn encode_raw(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| self.failed("encode", &*e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids already checked to be in the vocabulary (the crate silently drops others).
    fn decode_checked(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| self.failed("decode", &*e))
    }

    fn check_id(&self, id: u32) -> Result<(), TokenizerError> {
        if self.inner.id_to_token(id).is_some() {
            Ok(())
        } else {
            Err(TokenizerError::IdOutOfRange {
                file: self.source.clone(),
                id,
                vocab_size: self.vocab_size,
            })
        }
    }

    fn failed(&self, op: &'static str, e: &dyn std::error::Error) -> TokenizerError {
        TokenizerError::Failed {
            file: self.source.clone(),
            op,
            message: e.to_string(),
        }
    }

    /// An id read from a config file must be in the vocabulary.
    fn config_id_known(&self, id: u32, file: &str) -> Result<(), TokenizerError> {
        self.check_id(id).map_err(|_| TokenizerError::Field {
            file: file.to_string(),
            field: "bos_token_id/eos_token_id".into(),
            message: format!(
                "token id {id} is not in the vocabulary of {} ({} ids)",
                self.source, self.vocab_size
            ),
        })
    }

    /// The id of the token `tokenizer_config.json` names under `key`: a string, or an object with
    /// `content` (the serialized `AddedToken` form); `null` or absent gives `None`.
    fn config_token(
        &self,
        cfg: &serde_json::Value,
        key: &str,
        file: &str,
    ) -> Result<Option<u32>, TokenizerError> {
        let text = match cfg.get(key) {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s,
            Some(v) => match v.get("content") {
                Some(serde_json::Value::String(s)) => s,
                _ => {
                    return Err(field_error(
                        file,
                        key,
                        "a string or an object with 'content'",
                        v,
                    ));
                }
            },
        };
        self.token_id(text)
            .map(Some)
            .ok_or_else(|| TokenizerError::Field {
                file: file.to_string(),
                field: key.to_string(),
                message: format!("token {text:?} is not in the vocabulary of {}", self.source),
            })
    }
}

fn missing(file: &str, field: &str) -> TokenizerError {
    TokenizerError::MissingField {
        file: file.to_string(),
        field: field.to_string(),
    }
}

fn field_error(file: &str, field: &str, expected: &str, got: &serde_json::Value) -> TokenizerError {
    TokenizerError::Field {
        file: file.to_string(),
        field: field.to_string(),
        message: format!("expected {expected}, found {got}"),
    }
}

/// Reads and parses a JSON file that may be absent.
fn read_optional_json(path: &Path) -> Result<Option<(String, serde_json::Value)>, TokenizerError> {
    let file = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(TokenizerError::Io { file, source }),
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(Some((file, v))),
        Err(e) => Err(TokenizerError::Json {
            file,
            message: e.to_string(),
        }),
    }
}

/// The ids under `key` of `generation_config.json`: an id or a list of ids; `null` or absent gives
/// `None`.
fn config_ids(
    cfg: &serde_json::Value,
    key: &str,
    file: &str,
) -> Result<Option<Vec<u32>>, TokenizerError> {
    let one = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| field_error(file, key, "a token id or a list of token ids", v))
    };
    match cfg.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(list)) => {
            list.iter().map(one).collect::<Result<_, _>>().map(Some)
        }
        Some(v) => Ok(Some(vec![one(v)?])),
    }
}
