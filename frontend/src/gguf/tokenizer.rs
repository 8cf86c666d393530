//! The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata (formats.md §4.1), read into
//! one struct for the tokenizer and chat code to use. Only `tokens` is required; every other field is
//! `None` when its key is absent, and an error when the key is present with the wrong type or a value
//! that does not fit the token list.

use super::GgufFile;
use crate::error::FrontendError;

/// `tokenizer.ggml.*` metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTokenizer {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE), `llama` (SentencePiece), ...
    pub model: Option<String>,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name (`gpt-2`, `llama-bpe`, ...).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: the vocabulary, by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.scores`: SentencePiece scores, by id.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.merges`: BPE merges, `"a b"`, highest priority first.
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub padding_token_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unknown_token_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos_token: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos_token: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`: whether a SentencePiece vocabulary puts `▁` before the
    /// text.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template` (Jinja).
    pub chat_template: Option<String>,
}

impl GgufFile {
    /// The tokenizer metadata. Token types and scores must have one entry per token, and special
    /// token ids must be valid ids.
    pub fn tokenizer(&self) -> Result<GgufTokenizer, FrontendError> {
        let tokens = self.get_str_array("tokenizer.ggml.tokens")?.to_vec();
        let n = tokens.len();
        let per_token = |key: &str, len: usize| {
            if len == n {
                Ok(())
            } else {
                Err(self.err(format!(
                    "metadata key '{key}' has {len} entries, but there are {n} tokens"
                )))
            }
        };
        let token_types =
            match self.optional("tokenizer.ggml.token_type", |f, k| f.get_i64_array(k))? {
                Some(v) => {
                    per_token("tokenizer.ggml.token_type", v.len())?;
                    let mut out = Vec::with_capacity(v.len());
                    for (i, x) in v.into_iter().enumerate() {
                        out.push(i32::try_from(x).map_err(|_| {
                            self.err(format!(
                            "metadata key 'tokenizer.ggml.token_type': element {i} = {x} is not \
                             a token type"
                        ))
                        })?);
                    }
                    Some(out)
                }
                None => None,
            };
        let scores = self.optional("tokenizer.ggml.scores", |f, k| f.get_f32_array(k))?;
        if let Some(s) = &scores {
            per_token("tokenizer.ggml.scores", s.len())?;
        }
        let id = |key: &str| -> Result<Option<u32>, FrontendError> {
            let Some(id) = self.optional(key, |f, k| f.get_u32(k))? else {
                return Ok(None);
            };
            if id as usize >= n {
                return Err(self.err(format!(
                    "metadata key '{key}': token id {id} is not below the {n} tokens"
                )));
            }
            Ok(Some(id))
        };
        Ok(GgufTokenizer {
            model: self
                .optional("tokenizer.ggml.model", |f, k| f.get_str(k))?
                .map(str::to_string),
            pre: self
                .optional("tokenizer.ggml.pre", |f, k| f.get_str(k))?
                .map(str::to_string),
            token_types,
            scores,
            merges: self
                .optional("tokenizer.ggml.merges", |f, k| f.get_str_array(k))?
                .map(<[String]>::to_vec),
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: id("tokenizer.ggml.eos_token_id")?,
            padding_token_id: id("tokenizer.ggml.padding_token_id")?,
            unknown_token_id: id("tokenizer.ggml.unknown_token_id")?,
            add_bos_token: self.optional("tokenizer.ggml.add_bos_token", |f, k| f.get_bool(k))?,
            add_eos_token: self.optional("tokenizer.ggml.add_eos_token", |f, k| f.get_bool(k))?,
            add_space_prefix: self
                .optional("tokenizer.ggml.add_space_prefix", |f, k| f.get_bool(k))?,
            chat_template: self
                .optional("tokenizer.chat_template", |f, k| f.get_str(k))?
                .map(str::to_string),
            tokens,
        })
    }
}
