//! The pre-tokenizers of byte-level BPE vocabularies, by their GGUF name (`tokenizer.ggml.pre`).
//!
//! Each family is built as its published `tokenizer.json` builds it (normalizer, pre-tokenizer,
//! `ignore_merges`), and [`PRE_TOKENIZERS`] maps the names llama.cpp writes to the family; llama.cpp
//! (`src/llama-vocab.cpp`) and transformers' GGUF loader split these names the same way. Whether
//! bos is added when the file does not say (`tokenizer.ggml.add_bos_token` absent) follows
//! llama.cpp: yes for the Llama 3 family, no for the others.
//!
//! | family | names | normalizer | pre-tokenizer |
//! |---|---|---|---|
//! | GPT-2 | `gpt-2` (or absent), `mpt` | | ByteLevel with its regex |
//! | Llama 3 | `llama-bpe`, `llama3`, `llama-v3`, `falcon3` | | Split(Llama 3 regex), ByteLevel; `ignore_merges` |
//! | Qwen2 | `qwen2` | NFC | Split(Llama 3 regex with single digits), ByteLevel |
//! | SmolLM | `smollm`, `starcoder`, `refact` | | Digits(individual), ByteLevel with GPT-2's regex |
//! | Falcon | `falcon` | | Punctuation(contiguous), ByteLevel with GPT-2's regex, Digits, Split(`[0-9]{3}`) |

use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::punctuation::Punctuation;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

/// A family of byte-level BPE tokenizers that split text the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    /// GPT-2's ByteLevel split.
    Gpt2,
    /// Llama 3's split (digits in threes), merges skipped for words in the vocabulary.
    Llama3,
    /// Qwen2's split (single digits) after NFC.
    Qwen2,
    /// Single digits, then GPT-2's split (SmolLM, StarCoder, Refact).
    SmolLm,
    /// Falcon's punctuation runs and digit triples around GPT-2's split.
    Falcon,
}

/// `tokenizer.ggml.pre` names and their family. An absent name means GPT-2, as transformers
/// reads such a file.
pub(super) const PRE_TOKENIZERS: &[(&str, Family)] = &[
    ("gpt-2", Family::Gpt2),
    ("mpt", Family::Gpt2),
    ("llama-bpe", Family::Llama3),
    ("llama3", Family::Llama3),
    ("llama-v3", Family::Llama3),
    ("falcon3", Family::Llama3),
    ("qwen2", Family::Qwen2),
    ("smollm", Family::SmolLm),
    ("starcoder", Family::SmolLm),
    ("refact", Family::SmolLm),
    ("falcon", Family::Falcon),
];

/// Llama 3's split (its `tokenizer.json`). Look-ahead needs `fancy-regex`.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split: Llama 3's with one digit per piece.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Falcon's last split: runs of digits cut into threes.
const FALCON_DIGIT_TRIPLES: &str = "[0-9][0-9][0-9]";

impl Family {
    /// The family a `tokenizer.ggml.pre` value names; the error lists the names known.
    pub(super) fn from_pre(pre: Option<&str>) -> Result<Family, String> {
        let Some(name) = pre else {
            return Ok(Family::Gpt2);
        };
        PRE_TOKENIZERS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, family)| *family)
            .ok_or_else(|| {
                let known: Vec<String> = PRE_TOKENIZERS
                    .iter()
                    .map(|(known, _)| format!("'{known}'"))
                    .collect();
                format!(
                    "pre-tokenizer '{name}' (tokenizer.ggml.pre): known are {}",
                    known.join(", ")
                )
            })
    }

    /// The normalizer applied before splitting, if any.
    pub(super) fn normalizer(self) -> Option<NormalizerWrapper> {
        match self {
            Family::Qwen2 => Some(NFC.into()),
            Family::Gpt2 | Family::Llama3 | Family::SmolLm | Family::Falcon => None,
        }
    }

    /// The pre-tokenizer; an error is the regex crate's message.
    pub(super) fn pre_tokenizer(self) -> Result<PreTokenizerWrapper, String> {
        // `ByteLevel::new(add_prefix_space, trim_offsets, use_regex)`: never a prefix space; GPT-2's
        // regex only where no split of the family's own comes first.
        let gpt2_byte_level = || PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
        let bytes_only = || PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false));
        Ok(match self {
            Family::Gpt2 => gpt2_byte_level(),
            Family::Llama3 => sequence(vec![isolate(LLAMA3_SPLIT)?, bytes_only()]),
            Family::Qwen2 => sequence(vec![isolate(QWEN2_SPLIT)?, bytes_only()]),
            Family::SmolLm => sequence(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                gpt2_byte_level(),
            ]),
            Family::Falcon => sequence(vec![
                PreTokenizerWrapper::Punctuation(Punctuation::new(
                    SplitDelimiterBehavior::Contiguous,
                )),
                gpt2_byte_level(),
                PreTokenizerWrapper::Digits(Digits::new(false)),
                isolate(FALCON_DIGIT_TRIPLES)?,
            ]),
        })
    }

    /// Whether a word that is itself in the vocabulary becomes that token without merging.
    pub(super) fn ignore_merges(self) -> bool {
        self == Family::Llama3
    }

    /// Whether bos is added when the file does not say (llama.cpp's default).
    pub(super) fn adds_bos_by_default(self) -> bool {
        self == Family::Llama3
    }
}

fn sequence(steps: Vec<PreTokenizerWrapper>) -> PreTokenizerWrapper {
    PreTokenizerWrapper::Sequence(Sequence::new(steps))
}

/// A split that keeps each match of `regex` as a piece of its own.
fn isolate(regex: &str) -> Result<PreTokenizerWrapper, String> {
    Split::new(
        SplitPattern::Regex(regex.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map(PreTokenizerWrapper::Split)
    .map_err(|e| e.to_string())
}
