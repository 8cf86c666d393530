//! The training text as tokens: the tokenizer (the init model's, a given `tokenizer.json`, or a
//! byte-level BPE trained on the text to the model's vocabulary size), the split into training and
//! held-out tokens, random training windows and the fixed held-out windows, and the unigram baseline.

use crate::TrainError;
use crate::params::Rng;
use std::path::Path;
pub use tokenizers::Tokenizer;

/// The bundled training text: the book of Genesis, King James Version (public domain; made by
/// `scripts/fixtures/make_training_text.py`).
pub const BUNDLED_TEXT: &str = include_str!("../../data/kjv-genesis.txt");

/// The share of the text's tokens, at its end, kept out of training to measure the held-out loss.
pub const HELDOUT_SHARE: f64 = 0.05;

/// A byte-level BPE tokenizer trained on `text` with `vocab` entries (the special token
/// `<|endoftext|>` first, then the 256 bytes, then merges), as GPT-2's family builds them.
pub fn train_bpe(text: &str, source: &Path, vocab: usize) -> Result<Tokenizer, TrainError> {
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, TokenizerImpl};
    if vocab < 257 + 1 {
        return Err(TrainError::Options(format!(
            "a byte-level BPE needs a vocabulary of at least 258 entries; the model has {vocab}"
        )));
    }
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from("<|endoftext|>", true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tk: TokenizerImpl<BPE, tokenizers::NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel> =
        TokenizerImpl::new(BPE::default());
    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tk.with_decoder(Some(ByteLevel::default()));
    tk.with_post_processor(Some(ByteLevel::new(true, false, true)));
    tk.train(&mut trainer, text.lines())
        .map_err(|e| TrainError::format(source, format!("training a BPE vocabulary: {e}")))?;
    let json = tk
        .to_string(false)
        .map_err(|e| TrainError::format(source, format!("saving the BPE vocabulary: {e}")))?;
    json.parse::<Tokenizer>()
        .map_err(|e| TrainError::format(source, format!("reloading the BPE vocabulary: {e}")))
}

/// Loads a `tokenizer.json`.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, TrainError> {
    Tokenizer::from_file(path).map_err(|e| TrainError::format(path, format!("{e}")))
}

/// The text's tokens, split into training and held-out parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Corpus {
    /// Tokens to train on.
    pub train: Vec<u32>,
    /// The last `HELDOUT_SHARE` of the tokens.
    pub heldout: Vec<u32>,
}

impl Corpus {
    /// Tokenizes `text` (from `path`, named in errors) and splits it; every id must be below
    /// `vocab`, and each part must hold at least one window of `seq + 1` tokens.
    pub fn new(
        text: &str,
        path: &Path,
        tokenizer: &Tokenizer,
        vocab: usize,
        seq: usize,
    ) -> Result<Corpus, TrainError> {
        let enc = tokenizer
            .encode(text, false)
            .map_err(|e| TrainError::format(path, format!("tokenizing: {e}")))?;
        let ids = enc.get_ids().to_vec();
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(TrainError::format(
                path,
                format!(
                    "the tokenizer gives id {bad}, outside the model's vocabulary of {vocab}: give a tokenizer that fits the model"
                ),
            ));
        }
        let cut = ids.len() - ((ids.len() as f64 * HELDOUT_SHARE).ceil() as usize).min(ids.len());
        let (train, heldout) = ids.split_at(cut);
        if train.len() < seq + 1 || heldout.len() < seq + 1 {
            return Err(TrainError::format(
                path,
                format!(
                    "{} tokens are too few for windows of {} tokens (training and held-out parts: {} and {})",
                    ids.len(),
                    seq + 1,
                    train.len(),
                    heldout.len()
                ),
            ));
        }
        Ok(Corpus {
            train: train.to_vec(),
            heldout: heldout.to_vec(),
        })
    }

    /// A random training window of `seq + 1` tokens: (inputs, next tokens).
    pub fn sample(&self, seq: usize, rng: &mut Rng) -> (Vec<u32>, Vec<u32>) {
        let starts = (self.train.len() - seq) as u64;
        let s = rng.below(starts) as usize;
        (
            self.train[s..s + seq].to_vec(),
            self.train[s + 1..s + seq + 1].to_vec(),
        )
    }

    /// Up to `n` consecutive held-out windows, from its start.
    pub fn heldout_windows(&self, seq: usize, n: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
        (0..n)
            .map(|i| i * seq)
            .take_while(|&s| s + seq < self.heldout.len())
            .map(|s| {
                (
                    self.heldout[s..s + seq].to_vec(),
                    self.heldout[s + 1..s + seq + 1].to_vec(),
                )
            })
            .collect()
    }

    /// The held-out cross-entropy (nats per token) of the training tokens' unigram distribution,
    /// add-one smoothed over `vocab`: the loss a model that ignores context would reach.
    pub fn unigram_loss(&self, vocab: usize) -> f64 {
        let mut counts = vec![1f64; vocab.max(1)];
        for &t in &self.train {
            if let Some(c) = counts.get_mut(t as usize) {
                *c += 1.0;
            }
        }
        let total: f64 = counts.iter().sum();
        let n = self.heldout.len().max(1) as f64;
        self.heldout
            .iter()
            .map(|&t| -(counts.get(t as usize).copied().unwrap_or(1.0) / total).ln())
            .sum::<f64>()
            / n
    }
}
