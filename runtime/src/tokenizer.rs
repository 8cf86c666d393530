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
//! can split a multi-byte character, so a step returns only text that is final: the delta is held
//! back while the decoded text ends in U+FFFD (an incomplete, or invalid, UTF-8 sequence).
//! [`DecodeStream::finish`] returns the rest decoded lossily, so that the pieces, concatenated, equal
//! `decode(ids, skip_special)`: the decoders concerned (byte-level) decode the concatenated bytes of
//! the tokens with `String::from_utf8_lossy`, which settles every character, and every U+FFFD, from
//! the bytes up to it, never from bytes after it.

use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

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

/// The `tokenizer.ggml.*` metadata of a GGUF file that a tokenizer is built from. The caller (the
/// root crate) fills it from the GGUF reader, so this crate depends on no model format.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: only `gpt2` (byte-level BPE) is supported.
    pub model: String,
    /// `tokenizer.ggml.pre`: `gpt-2` (or absent) for the GPT-2 split regex, `llama-bpe` (also
    /// `llama3`, `llama-v3`) for Llama 3's.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: the vocabulary, by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token or empty (all normal): 2 unknown and 3 control
    /// become special tokens.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: `"a b"`, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; absent means "yes when `bos` is set".
    pub add_bos: Option<bool>,
}

/// GGUF token type of an unknown token.
const TOKEN_TYPE_UNKNOWN: i32 = 2;
/// GGUF token type of a control token (`<s>`, `<|eot_id|>`).
const TOKEN_TYPE_CONTROL: i32 = 3;

/// Llama 3's pre-tokenizer split (its `tokenizer.json`; llama.cpp's `llama-bpe`). It needs
/// look-ahead, hence `fancy-regex`.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

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

    /// Builds a byte-level BPE tokenizer from GGUF metadata; `source` (the GGUF file) names it in
    /// errors. Control and unknown tokens become special tokens; bos is prepended by the
    /// post-processor when `add_bos` says so (by default, when `bos` is set).
    pub fn from_gguf_vocab(vocab: &GgufVocab, source: &str) -> Result<Tokenizer, TokenizerError> {
        let file = || source.to_string();
        if vocab.model != "gpt2" {
            return Err(TokenizerError::Unsupported {
                file: file(),
                what: format!(
                    "tokenizer model '{}' (tokenizer.ggml.model): only 'gpt2' (byte-level BPE) is \
                     supported",
                    vocab.model
                ),
            });
        }
        let llama3 = match vocab.pre.as_deref() {
            None | Some("gpt-2") => false,
            Some("llama-bpe" | "llama3" | "llama-v3") => true,
            Some(other) => {
                return Err(TokenizerError::Unsupported {
                    file: file(),
                    what: format!(
                        "pre-tokenizer '{other}' (tokenizer.ggml.pre): supported are 'gpt-2' and \
                         'llama-bpe'"
                    ),
                });
            }
        };
        let n = vocab.tokens.len();
        if n == 0 {
            return Err(missing(source, "tokenizer.ggml.tokens"));
        }
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::Field {
                file: file(),
                field: "tokenizer.ggml.tokens".into(),
                message: format!("{n} tokens do not fit 32-bit ids"),
            });
        }
        if !vocab.token_types.is_empty() && vocab.token_types.len() != n {
            return Err(TokenizerError::Field {
                file: file(),
                field: "tokenizer.ggml.token_type".into(),
                message: format!(
                    "{} entries, but there are {n} tokens",
                    vocab.token_types.len()
                ),
            });
        }
        if vocab.merges.is_empty() {
            return Err(missing(source, "tokenizer.ggml.merges"));
        }
        let type_of = |i: usize| vocab.token_types.get(i).copied().unwrap_or(1);
        // A repeated token string keeps its first id, as a map from string to id must; the later
        // ids then decode to nothing and are reported as unknown.
        let mut map = Vocab::default();
        for (id, token) in (0u32..).zip(&vocab.tokens) {
            map.entry(token.clone()).or_insert(id);
        }
        let mut merges = Vec::with_capacity(vocab.merges.len());
        for (i, m) in vocab.merges.iter().enumerate() {
            match m.split(' ').collect::<Vec<_>>().as_slice() {
                [a, b] => merges.push((a.to_string(), b.to_string())),
                _ => {
                    return Err(TokenizerError::Field {
                        file: file(),
                        field: "tokenizer.ggml.merges".into(),
                        message: format!("merge {i} {m:?} is not two tokens separated by a space"),
                    });
                }
            }
        }
        let mut builder = BPE::builder()
            .vocab_and_merges(map, merges)
            .ignore_merges(llama3);
        if let Some(unk) = (0..n).find(|&i| type_of(i) == TOKEN_TYPE_UNKNOWN) {
            builder = builder.unk_token(vocab.tokens[unk].clone());
        }
        let bpe = builder.build().map_err(|e| TokenizerError::Field {
            file: file(),
            field: "tokenizer.ggml.merges".into(),
            message: e.to_string(),
        })?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        if llama3 {
            let split = Split::new(
                SplitPattern::Regex(LLAMA3_SPLIT.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| TokenizerError::Failed {
                file: file(),
                op: "build the pre-tokenizer",
                message: e.to_string(),
            })?;
            inner.with_pre_tokenizer(Some(Sequence::new(vec![
                PreTokenizerWrapper::Split(split),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
            ])));
        } else {
            inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        }
        inner.with_decoder(Some(ByteLevel::default()));
        let special: Vec<AddedToken> = (0..n)
            .filter(|&i| matches!(type_of(i), TOKEN_TYPE_UNKNOWN | TOKEN_TYPE_CONTROL))
            .map(|i| AddedToken::from(vocab.tokens[i].clone(), true))
            .collect();
        inner.add_special_tokens(&special);
        let check = |id: Option<u32>, field: &str| match id {
            Some(id) if id as usize >= n => Err(TokenizerError::Field {
                file: file(),
                field: field.into(),
                message: format!("token id {id} is not below the {n} tokens"),
            }),
            _ => Ok(()),
        };
        check(vocab.bos, "tokenizer.ggml.bos_token_id")?;
        check(vocab.eos, "tokenizer.ggml.eos_token_id")?;
        if vocab.add_bos.unwrap_or(vocab.bos.is_some()) {
            let bos = vocab
                .bos
                .ok_or_else(|| missing(source, "tokenizer.ggml.bos_token_id"))?;
            inner.with_post_processor(Some(bos_template(&vocab.tokens, bos, source)?));
        }
        let mut tok = Tokenizer::wrap(inner, source);
        tok.bos = vocab.bos;
        tok.eos = vocab.eos.into_iter().collect();
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
        DecodeStream {
            tok: self,
            skip_special,
            ids: Vec::new(),
            prefix: String::new(),
            prefix_ids: 0,
        }
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

/// Turns ids into text one id at a time, returning only text that is final; see the module
/// documentation. Made by [`Tokenizer::decode_stream`].
#[derive(Debug)]
pub struct DecodeStream<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    /// The ids of the last returned piece (context for the decoder), then the ids not yet returned.
    ids: Vec<u32>,
    /// The text the context ids decode to on their own.
    prefix: String,
    /// How many of `ids` are context.
    prefix_ids: usize,
}

impl DecodeStream<'_> {
    /// Takes the next id and returns the text that became final with it, possibly empty.
    pub fn step(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.tok.check_id(id)?;
        self.ids.push(id);
        let text = self.tok.decode_checked(&self.ids, self.skip_special)?;
        if text.len() <= self.prefix.len() || text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let piece = self.new_text(&text)?;
        self.ids.drain(..self.prefix_ids);
        self.prefix = self.tok.decode_checked(&self.ids, self.skip_special)?;
        self.prefix_ids = self.ids.len();
        Ok(piece)
    }

    /// Ends the stream: the text held back, decoded lossily (U+FFFD for incomplete bytes).
    pub fn finish(self) -> Result<String, TokenizerError> {
        if self.ids.len() == self.prefix_ids {
            return Ok(String::new());
        }
        let text = self.tok.decode_checked(&self.ids, self.skip_special)?;
        self.new_text(&text)
    }

    /// `text` less the context's text, which it must start with.
    fn new_text(&self, text: &str) -> Result<String, TokenizerError> {
        text.strip_prefix(self.prefix.as_str())
            .map(str::to_string)
            .ok_or_else(|| TokenizerError::Failed {
                file: self.tok.source.clone(),
                op: "streaming decode",
                message: format!(
                    "the decoder rewrote text already returned: {:?} does not start with {:?}",
                    text, self.prefix
                ),
            })
    }
}

/// A post-processor that prepends token `bos` to a single sequence (and to each of a pair).
fn bos_template(
    tokens: &[String],
    bos: u32,
    source: &str,
) -> Result<TemplateProcessing, TokenizerError> {
    let failed = |message: String| TokenizerError::Failed {
        file: source.to_string(),
        op: "build the bos post-processor",
        message,
    };
    let content = tokens
        .get(bos as usize)
        .cloned()
        .ok_or_else(|| missing(source, "tokenizer.ggml.bos_token_id"))?;
    // The template names the token by a key of its own, so that a token text with spaces or
    // colons (which the template syntax splits on) needs no escaping.
    let token = SpecialToken::new("bos".into(), vec![bos], vec![content])
        .map_err(|e| failed(e.to_string()))?;
    TemplateProcessing::builder()
        .try_single("bos $A")
        .and_then(|b| b.try_pair("bos $A bos $B"))
        .map_err(failed)?
        .special_tokens(vec![token])
        .build()
        .map_err(|e| failed(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's byte → character table (`bytes_to_unicode`): printable Latin-1 bytes map to
    /// themselves, the others to U+0100 onwards, in byte order.
    fn byte_chars() -> Vec<char> {
        let mut out = vec!['\0'; 256];
        let mut next = 256u32;
        for b in 0..256u32 {
            let keep =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if keep {
                b
            } else {
                next += 1;
                next - 1
            };
            out[b as usize] = char::from_u32(c).unwrap();
        }
        out
    }

    /// A byte-level tokenizer whose ids 0..256 are the bytes, then `<s>` (256) and `</s>` (257),
    /// then the merged tokens of `merges`.
    fn byte_vocab(merges: &[&str], pre: Option<&str>) -> GgufVocab {
        let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
        tokens.push("<s>".into());
        tokens.push("</s>".into());
        for m in merges {
            tokens.push(m.replace(' ', ""));
        }
        let mut token_types = vec![1; tokens.len()];
        token_types[256] = 3;
        token_types[257] = 3;
        GgufVocab {
            model: "gpt2".into(),
            pre: pre.map(str::to_string),
            tokens,
            token_types,
            merges: merges.iter().map(|m| m.to_string()).collect(),
            bos: Some(256),
            eos: Some(257),
            add_bos: None,
        }
    }

    fn byte_tokenizer() -> Tokenizer {
        // One merge: a BPE model needs at least one, and this one never fires on the tests' bytes.
        Tokenizer::from_gguf_vocab(&byte_vocab(&["1 2"], None), "bytes.gguf").unwrap()
    }

    fn byte_ids(bytes: &[u8]) -> Vec<u32> {
        bytes.iter().map(|&b| u32::from(b)).collect()
    }

    /// Streams `ids` and returns the pieces, the last one from `finish`.
    fn stream(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
        let mut s = tok.decode_stream(true);
        let mut pieces: Vec<String> = ids.iter().map(|&id| s.step(id).unwrap()).collect();
        pieces.push(s.finish().unwrap());
        pieces
    }

    #[test]
    fn byte_tokens_round_trip() {
        let tok = byte_tokenizer();
        let text = "héllo, wörld € 😀";
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids[0], 256, "bos is prepended");
        assert_eq!(&ids[1..], byte_ids(text.as_bytes()).as_slice());
        assert_eq!(tok.decode(&ids, true).unwrap(), text);
        assert_eq!(tok.decode(&ids, false).unwrap(), format!("<s>{text}"));
        assert_eq!(tok.bos(), Some(256));
        assert_eq!(tok.eos(), &[257]);
        assert_eq!(tok.token_id("</s>"), Some(257));
        assert_eq!(tok.vocab_size(), 259);
        assert_eq!(tok.token_text(u32::from(b' ')).as_deref(), Some(" "));
        assert_eq!(
            tok.token_text(0xC3).as_deref(),
            Some("Ã"),
            "a lone lead byte shows its entry"
        );
        assert_eq!(tok.token_text(999), None);
    }

    #[test]
    fn stream_holds_back_split_characters() {
        let tok = byte_tokenizer();
        // é is C3 A9, € is E2 82 AC, 😀 is F0 9F 98 80: each arrives byte by byte.
        let text = "aé€😀b";
        let pieces = stream(&tok, &byte_ids(text.as_bytes()));
        let expected: Vec<&str> = vec!["a", "", "é", "", "", "€", "", "", "", "😀", "b", ""];
        assert_eq!(pieces, expected);
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn stream_ends_lossily_like_decode() {
        let tok = byte_tokenizer();
        // A truncated character at the end, a stray continuation byte, and an interrupted
        // sequence in the middle, around special tokens the stream skips.
        let cases: Vec<Vec<u32>> = vec![
            vec![256, u32::from(b'x'), 0xE2, 0x82],
            vec![0x80, 0x80, u32::from(b'#'), 257],
            vec![0xE2, 0x82, u32::from(b'a'), 0xC3, 257, 0xA9],
            vec![0xF0, 0x9F, 0x98],
        ];
        for ids in cases {
            let pieces = stream(&tok, &ids);
            let whole = tok.decode(&ids, true).unwrap();
            assert!(whole.contains('\u{FFFD}'), "{ids:?}");
            assert_eq!(pieces.concat(), whole, "{ids:?}: {pieces:?}");
        }
    }

    #[test]
    fn stream_concatenation_equals_decode_on_random_bytes() {
        let tok = byte_tokenizer();
        // A fixed linear congruential generator; bytes drawn mostly from UTF-8 lead and
        // continuation ranges so that valid, truncated and invalid sequences all occur.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as u32
        };
        for _ in 0..300 {
            let len = next() % 24;
            let ids: Vec<u32> = (0..len)
                .map(|_| match next() % 6 {
                    0 => next() % 128,
                    1 => 0xC2 + next() % 30,
                    2 => 0xE0 + next() % 16,
                    3 => 0xF0 + next() % 5,
                    4 => 256 + next() % 2,
                    _ => 0x80 + next() % 64,
                })
                .collect();
            let pieces = stream(&tok, &ids);
            let bytes: Vec<u8> = ids
                .iter()
                .filter(|&&id| id < 256)
                .map(|&id| id as u8)
                .collect();
            let lossy = String::from_utf8_lossy(&bytes);
            assert_eq!(tok.decode(&ids, true).unwrap(), lossy);
            assert_eq!(pieces.concat(), lossy, "{ids:?}: {pieces:?}");
            for p in &pieces[..pieces.len() - 1] {
                assert!(!p.ends_with('\u{FFFD}'), "{ids:?}: a step returned {p:?}");
            }
        }
    }

    #[test]
    fn unknown_ids_are_errors_naming_the_source() {
        let tok = byte_tokenizer();
        let e = tok.decode(&[1, 5000], true).unwrap_err();
        assert!(
            matches!(e, TokenizerError::IdOutOfRange { id: 5000, .. }),
            "{e}"
        );
        assert!(e.to_string().starts_with("bytes.gguf: "), "{e}");
        assert!(tok.decode_stream(true).step(5000).is_err());
        assert!(tok.clone().with_special_ids(Some(7), vec![9999]).is_err());
    }

    #[test]
    fn llama3_split_groups_digits_by_three() {
        // "12345": the GPT-2 split keeps one pre-token and merges "3 4" first (12|34|5); Llama 3's
        // splits "123" | "45" before merging.
        let merges = ["3 4", "1 2", "12 3", "4 5"];
        let gpt2 = Tokenizer::from_gguf_vocab(&byte_vocab(&merges, Some("gpt-2")), "a").unwrap();
        let llama =
            Tokenizer::from_gguf_vocab(&byte_vocab(&merges, Some("llama-bpe")), "b").unwrap();
        let text = |tok: &Tokenizer| -> Vec<String> {
            let ids = tok.encode("12345", false).unwrap();
            ids.iter().map(|&id| tok.token_text(id).unwrap()).collect()
        };
        assert_eq!(text(&gpt2), ["12", "34", "5"]);
        assert_eq!(text(&llama), ["123", "45"]);
    }

    #[test]
    fn gguf_errors_name_the_file_and_field() {
        let mut v = byte_vocab(&["1 2"], None);
        v.model = "llama".into();
        let e = Tokenizer::from_gguf_vocab(&v, "m.gguf").unwrap_err();
        assert!(matches!(e, TokenizerError::Unsupported { .. }), "{e}");
        assert!(
            e.to_string().contains("m.gguf") && e.to_string().contains("'llama'"),
            "{e}"
        );

        let mut v = byte_vocab(&["1 2"], Some("qwen2"));
        assert!(Tokenizer::from_gguf_vocab(&v, "m.gguf").is_err());
        v.pre = None;
        v.merges = vec!["12".into()];
        let e = Tokenizer::from_gguf_vocab(&v, "m.gguf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.ggml.merges"), "{e}");
        v.merges = vec!["1 2".into()];
        v.bos = Some(100_000);
        let e = Tokenizer::from_gguf_vocab(&v, "m.gguf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.ggml.bos_token_id"), "{e}");
        v.bos = None;
        v.add_bos = Some(true);
        let e = Tokenizer::from_gguf_vocab(&v, "m.gguf").unwrap_err();
        assert!(matches!(e, TokenizerError::MissingField { .. }), "{e}");
        v.token_types.pop();
        let e = Tokenizer::from_gguf_vocab(&v, "m.gguf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.ggml.token_type"), "{e}");
    }

    #[test]
    fn no_bos_when_add_bos_is_false_and_json_round_trips() {
        let mut v = byte_vocab(&["1 2"], None);
        v.add_bos = Some(false);
        let tok = Tokenizer::from_gguf_vocab(&v, "m.gguf").unwrap();
        assert_eq!(tok.encode("12", true).unwrap(), [258]);
        let json = byte_tokenizer().to_json().unwrap();
        let back = Tokenizer::from_json_bytes(json.as_bytes(), "t.json").unwrap();
        assert_eq!(back.encode("a12", true).unwrap(), [256, 97, 258]);
        assert_eq!(back.to_json().unwrap(), json);
        let e =
            Tokenizer::from_json_bytes(&json.as_bytes()[..json.len() / 2], "t.json").unwrap_err();
        assert!(matches!(e, TokenizerError::Json { .. }) && e.to_string().starts_with("t.json: "));
    }
}
