//! Tokenizers from GGUF `tokenizer.ggml.*` metadata, built as Hugging Face builds the same model's
//! `tokenizer.json`: byte-level BPE (`gpt2`, [`byte_level`], with the family's pre-tokenizer from
//! [`pre_tokenizer`]) and SentencePiece (`llama`, [`sentencepiece`]). Shared here: the checks of
//! the token list and special ids, the added tokens (control and unknown tokens special,
//! user-defined tokens plain), and the post-processor that adds bos and eos.

mod byte_level;
mod pre_tokenizer;
mod sentencepiece;

use super::{Tokenizer, TokenizerError, missing};
use tokenizers::AddedToken;
use tokenizers::models::bpe::Vocab;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};

/// The `tokenizer.ggml.*` metadata of a GGUF file that a tokenizer is built from. The caller (the
/// root crate) fills it from the GGUF reader, so this crate depends on no model format.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the split of a `gpt2` vocabulary, by family: `gpt-2` (or absent),
    /// `llama-bpe`, `qwen2`, `smollm`, ... (the table in `pre_tokenizer.rs`). A `llama` vocabulary
    /// ignores it.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: the vocabulary, by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token or empty (all normal): 2 unknown and 3 control
    /// become special tokens, 4 user-defined plain added tokens (matched whole in the text); 6
    /// (byte, `<0xNN>`) is what SentencePiece's byte fallback looks up by spelling.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.scores`, one per token: a SentencePiece vocabulary's merges follow them.
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.merges` of a `gpt2` vocabulary: `"a b"`, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`; absent means the token typed unknown, if any.
    pub unk: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; absent means llama.cpp's default: yes for SentencePiece and
    /// the Llama 3 family, no for other byte-level families (and never without a bos id).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`; absent means no.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` of a SentencePiece vocabulary; absent means yes.
    pub add_space_prefix: Option<bool>,
}

/// GGUF token type of an unknown token.
const TOKEN_TYPE_UNKNOWN: i32 = 2;
/// GGUF token type of a control token (`<s>`, `<|eot_id|>`).
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type of a user-defined token (an added token that is not special).
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

impl Tokenizer {
    /// Builds a tokenizer from GGUF metadata; `source` (the GGUF file) names it in errors. Control
    /// and unknown tokens become special tokens, user-defined ones plain added tokens; bos and eos
    /// are added by the post-processor as `add_bos` and `add_eos` say.
    pub fn from_gguf_vocab(vocab: &GgufVocab, source: &str) -> Result<Tokenizer, TokenizerError> {
        check_tokens(vocab, source)?;
        let (mut inner, adds_bos_by_default) = match vocab.model.as_str() {
            "gpt2" => byte_level::build(vocab, source)?,
            "llama" => (sentencepiece::build(vocab, source)?, true),
            other => {
                return Err(TokenizerError::Unsupported {
                    file: source.to_string(),
                    what: format!(
                        "tokenizer model '{other}' (tokenizer.ggml.model): supported are 'gpt2' \
                         (byte-level BPE) and 'llama' (SentencePiece)"
                    ),
                });
            }
        };
        let typed = |wanted: &[i32]| -> Vec<String> {
            (0..vocab.tokens.len())
                .filter(|&i| wanted.contains(&type_of(vocab, i)))
                .map(|i| vocab.tokens[i].clone())
                .collect()
        };
        let special: Vec<AddedToken> = typed(&[TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL])
            .into_iter()
            .map(|t| AddedToken::from(t, true))
            .collect();
        inner.add_special_tokens(&special);
        // User-defined tokens are matched whole in the raw text, as llama.cpp matches them.
        let user: Vec<AddedToken> = typed(&[TOKEN_TYPE_USER_DEFINED])
            .into_iter()
            .map(|t| AddedToken::from(t, false).normalized(false))
            .collect();
        inner.add_tokens(&user);
        let add_bos = match vocab.add_bos {
            Some(add) => add,
            None => adds_bos_by_default && vocab.bos.is_some(),
        };
        let bos = if add_bos {
            Some(
                vocab
                    .bos
                    .ok_or_else(|| missing(source, "tokenizer.ggml.bos_token_id"))?,
            )
        } else {
            None
        };
        let eos = if vocab.add_eos == Some(true) {
            Some(
                vocab
                    .eos
                    .ok_or_else(|| missing(source, "tokenizer.ggml.eos_token_id"))?,
            )
        } else {
            None
        };
        if bos.is_some() || eos.is_some() {
            inner.with_post_processor(Some(special_template(&vocab.tokens, bos, eos, source)?));
        }
        let mut tok = Tokenizer::wrap(inner, source);
        tok.bos = vocab.bos;
        tok.eos = vocab.eos.into_iter().collect();
        Ok(tok)
    }
}

/// The token type of id `i` (normal when the file gives none).
fn type_of(vocab: &GgufVocab, i: usize) -> i32 {
    vocab.token_types.get(i).copied().unwrap_or(1)
}

/// Checks what every model needs: a token list whose ids fit 32 bits, one type per token (or
/// none), special ids inside the list.
fn check_tokens(vocab: &GgufVocab, source: &str) -> Result<(), TokenizerError> {
    let field_error = |field: &str, message: String| TokenizerError::Field {
        file: source.to_string(),
        field: field.into(),
        message,
    };
    let n = vocab.tokens.len();
    if n == 0 {
        return Err(missing(source, "tokenizer.ggml.tokens"));
    }
    if u32::try_from(n).is_err() {
        return Err(field_error(
            "tokenizer.ggml.tokens",
            format!("{n} tokens do not fit 32-bit ids"),
        ));
    }
    if !vocab.token_types.is_empty() && vocab.token_types.len() != n {
        return Err(field_error(
            "tokenizer.ggml.token_type",
            format!(
                "{} entries, but there are {n} tokens",
                vocab.token_types.len()
            ),
        ));
    }
    for (id, field) in [
        (vocab.bos, "tokenizer.ggml.bos_token_id"),
        (vocab.eos, "tokenizer.ggml.eos_token_id"),
        (vocab.unk, "tokenizer.ggml.unknown_token_id"),
    ] {
        if let Some(id) = id
            && id as usize >= n
        {
            return Err(field_error(
                field,
                format!("token id {id} is not below the {n} tokens"),
            ));
        }
    }
    Ok(())
}

/// Token → id. A repeated token string keeps its first id, as a map from string to id must; the
/// later ids then decode to the same text and are never produced by encoding.
fn first_ids(tokens: &[String]) -> Vocab {
    let mut map = Vocab::default();
    for (id, token) in (0u32..).zip(tokens) {
        map.entry(token.clone()).or_insert(id);
    }
    map
}

/// A post-processor that puts `bos` before and `eos` after a single sequence (and each of a
/// pair).
fn special_template(
    tokens: &[String],
    bos: Option<u32>,
    eos: Option<u32>,
    source: &str,
) -> Result<TemplateProcessing, TokenizerError> {
    let failed = |message: String| TokenizerError::Failed {
        file: source.to_string(),
        op: "build the bos/eos post-processor",
        message,
    };
    // The template names each token by a key of its own, so that a token text with spaces or
    // colons (which the template syntax splits on) needs no escaping.
    let mut specials = Vec::new();
    for (key, id) in [("bos", bos), ("eos", eos)] {
        if let Some(id) = id {
            let content = tokens.get(id as usize).cloned().ok_or_else(|| {
                failed(format!(
                    "{key} id {id} is not below the {} tokens",
                    tokens.len()
                ))
            })?;
            specials.push(
                SpecialToken::new(key.into(), vec![id], vec![content])
                    .map_err(|e| failed(e.to_string()))?,
            );
        }
    }
    let (before, after) = (
        if bos.is_some() { "bos " } else { "" },
        if eos.is_some() { " eos" } else { "" },
    );
    let single = format!("{before}$A{after}");
    let pair = format!("{single} {before}$B{after}");
    TemplateProcessing::builder()
        .try_single(single.as_str())
        .and_then(|b| b.try_pair(pair.as_str()))
        .map_err(failed)?
        .special_tokens(specials)
        .build()
        .map_err(|e| failed(e.to_string()))
}
