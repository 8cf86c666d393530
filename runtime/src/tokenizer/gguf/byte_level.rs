//! Byte-level BPE from a `gpt2` GGUF vocabulary: the file's tokens and merges, the normalizer and
//! pre-tokenizer of the family `tokenizer.ggml.pre` names, a ByteLevel decoder.

use super::pre_tokenizer::Family;
use super::{GgufVocab, TOKEN_TYPE_UNKNOWN, first_ids, type_of};
use crate::tokenizer::{TokenizerError, missing};
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::BPE;

/// The tokenizer without its added tokens and post-processor, and whether its family adds bos
/// when the file does not say.
pub(super) fn build(
    vocab: &GgufVocab,
    source: &str,
) -> Result<(tokenizers::Tokenizer, bool), TokenizerError> {
    let file = || source.to_string();
    let family = Family::from_pre(vocab.pre.as_deref())
        .map_err(|what| TokenizerError::Unsupported { file: file(), what })?;
    if vocab.merges.is_empty() {
        return Err(missing(source, "tokenizer.ggml.merges"));
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
        .vocab_and_merges(first_ids(&vocab.tokens), merges)
        .ignore_merges(family.ignore_merges());
    if let Some(unk) = unknown_token(vocab) {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(|e| TokenizerError::Field {
        file: file(),
        field: "tokenizer.ggml.merges".into(),
        message: e.to_string(),
    })?;
    let pre_tokenizer = family
        .pre_tokenizer()
        .map_err(|message| TokenizerError::Failed {
            file: file(),
            op: "build the pre-tokenizer",
            message,
        })?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_normalizer(family.normalizer());
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(ByteLevel::default()));
    Ok((inner, family.adds_bos_by_default()))
}

/// The unknown token: `tokenizer.ggml.unknown_token_id`'s, else the first typed unknown.
pub(super) fn unknown_token(vocab: &GgufVocab) -> Option<String> {
    let id = match vocab.unk {
        Some(id) => id as usize,
        None => (0..vocab.tokens.len()).find(|&i| type_of(vocab, i) == TOKEN_TYPE_UNKNOWN)?,
    };
    vocab.tokens.get(id).cloned()
}
