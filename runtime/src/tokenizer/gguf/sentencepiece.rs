//! SentencePiece vocabularies from GGUF (`tokenizer.ggml.model = llama`), built as Hugging Face's
//! legacy Llama 2 `tokenizer.json` is (transformers' `LlamaConverter` with `legacy=True`, which is
//! also what llama.cpp's tokenizer agrees with): a BPE model over the vocabulary with byte fallback
//! (`<0xNN>` tokens for characters the vocabulary lacks) and fused unknowns, its merges recovered
//! from the vocabulary and the scores; normalizer `Prepend("▁")` (when
//! `tokenizer.ggml.add_space_prefix` is not false) then `Replace(" ", "▁")`, no pre-tokenizer;
//! decoder `Replace("▁", " ")`, `ByteFallback`, `Fuse`, `Strip` of the one leading space the
//! normalizer added.
//!
//! The merges are those of transformers' `generate_merges` as its GGUF loader calls it (with the
//! scores): every way to cut a token into two tokens is a merge, ranked by the score of the token
//! it makes (best first), then by the length of the left part and of the right part (longest
//! first), ties kept in vocabulary order, and for one token its cuts ordered by the ids of the
//! left and right parts.

use super::byte_level::unknown_token;
use super::{GgufVocab, first_ids};
use crate::tokenizer::{TokenizerError, missing};
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::{DecoderWrapper, NormalizerWrapper};

/// SentencePiece's word-boundary mark, which stands for a space.
const SPACE_MARK: &str = "\u{2581}";

/// The tokenizer without its added tokens and post-processor.
pub(super) fn build(
    vocab: &GgufVocab,
    source: &str,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let file = || source.to_string();
    if vocab.scores.is_empty() {
        return Err(missing(source, "tokenizer.ggml.scores"));
    }
    if vocab.scores.len() != vocab.tokens.len() {
        return Err(TokenizerError::Field {
            file: file(),
            field: "tokenizer.ggml.scores".into(),
            message: format!(
                "{} entries, but there are {} tokens",
                vocab.scores.len(),
                vocab.tokens.len()
            ),
        });
    }
    let mut builder = BPE::builder()
        .vocab_and_merges(
            first_ids(&vocab.tokens),
            merges_from_scores(&vocab.tokens, &vocab.scores),
        )
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unknown_token(vocab) {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(|e| TokenizerError::Field {
        file: file(),
        field: "tokenizer.ggml.tokens".into(),
        message: format!("the merges made from the vocabulary: {e}"),
    })?;
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| TokenizerError::Failed {
        file: file(),
        op: "build the SentencePiece normalizer and decoder",
        message: e.to_string(),
    };
    let add_space_prefix = vocab.add_space_prefix.unwrap_or(true);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new(SPACE_MARK.into()).into());
    }
    normalizers.push(Replace::new(" ", SPACE_MARK).map_err(failed)?.into());
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPACE_MARK, " ").map_err(failed)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_normalizer(Some(NormalizerSequence::new(normalizers)));
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

/// The merges a SentencePiece vocabulary implies, in transformers' order (see the module
/// documentation).
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    // transformers looks tokens up in a dictionary built in id order, so a repeated token has its
    // last id and its last score; its first place decides where it is visited.
    let mut last_id: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut score: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    for (id, (token, &s)) in tokens.iter().zip(scores).enumerate() {
        last_id.insert(token.as_str(), id);
        score.insert(token.as_str(), s);
    }
    let mut seen = std::collections::HashSet::with_capacity(tokens.len());
    // (left, right, score of the merged token, left length, right length), lengths in characters.
    let mut merges: Vec<(&str, &str, f32, usize, usize)> = Vec::new();
    for token in tokens {
        if !seen.insert(token.as_str()) {
            continue;
        }
        let merged_score = score.get(token.as_str()).copied().unwrap_or(0.0);
        let start = merges.len();
        for (left_chars, (cut, _)) in token.char_indices().enumerate().skip(1) {
            let (left, right) = token.split_at(cut);
            if last_id.contains_key(left) && last_id.contains_key(right) {
                let right_chars = token.chars().count() - left_chars;
                merges.push((left, right, merged_score, left_chars, right_chars));
            }
        }
        merges[start..].sort_by_key(|m| (last_id.get(m.0), last_id.get(m.1)));
    }
    // A stable sort, best first; -0.0 ranks as 0.0, as Python compares them.
    let key = |s: f32| if s == 0.0 { 0.0 } else { s };
    merges.sort_by(|a, b| {
        key(b.2)
            .total_cmp(&key(a.2))
            .then(b.3.cmp(&a.3))
            .then(b.4.cmp(&a.4))
    });
    merges
        .into_iter()
        .map(|(l, r, ..)| (l.to_string(), r.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn merges_rank_by_score_then_longer_left_part() {
        let tokens = strings(&["a", "b", "c", "ab", "bc", "abc", "\u{2581}", "\u{2581}a"]);
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -1.5, 0.0, -0.5];
        let merges = merges_from_scores(&tokens, &scores);
        let got: Vec<(&str, &str)> = merges
            .iter()
            .map(|(l, r)| (l.as_str(), r.as_str()))
            .collect();
        // "abc" has two cuts, "ab|c" (left 2 chars) before "a|bc".
        assert_eq!(
            got,
            [
                ("\u{2581}", "a"),
                ("a", "b"),
                ("ab", "c"),
                ("a", "bc"),
                ("b", "c")
            ]
        );
        assert_eq!(merges.len(), 5);
    }
}
