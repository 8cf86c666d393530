//! Tokenizers from GGUF `tokenizer.ggml.*` metadata: byte-level BPE (`gpt2`) with the GPT-2 or
//! Llama 3 split, control and unknown tokens special, bos prepended by a template post-processor.

use super::{Tokenizer, TokenizerError, missing};
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

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

impl Tokenizer {
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
