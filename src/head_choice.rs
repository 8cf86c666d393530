//! `--head-dtype auto --head-kl-bound B`: the lm_head that reads the fewest bytes per token among
//! those whose measured accuracy cost stays within a bound.
//!
//! Plain `auto` is exact (bf16 or f16 when every weight is exactly one, else f32) and costs
//! nothing. With a bound, the model is compiled with the exact head and with each lossy head
//! (`q4`, `i8`); each build scores the same windows of the bundled text (Genesis 1–3, the text
//! `validate` scores by default) and the exact build is compared with it position by position:
//! `KL(P_exact ‖ P_head)` in nats, and whether both put the same token first. The chosen head is
//! the one that reads the fewest bytes per decoded token (decode streams the weights, so fewer
//! bytes is faster at the memory wall) with a mean KL at most the bound; the exact head when none
//! qualifies. A lossy head that cannot be built for the model (q4 past its row length) is reported
//! with why and skipped.
//!
//! The measurement costs one compile and one pass over `WINDOWS` windows of `WINDOW` tokens per
//! head, one build alive at a time (the exact head's logits are kept, 4 bytes × vocabulary per
//! scored position): seconds on a 2B model. The choice is deterministic for a model and a bound.

use crate::validate::score::{self, Windows};
use crate::{Error, Options};
use bitnet_backends::cpu::HeadDtype;
use std::path::Path;

/// Tokens per scored window.
pub const WINDOW: usize = 64;
/// Windows scored.
pub const WINDOWS: usize = 2;
/// The lossy heads tried, besides the exact one.
pub const CANDIDATES: [HeadDtype; 2] = [HeadDtype::Q4, HeadDtype::I8];

/// One head's measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadCandidate {
    /// The head (`Auto` is the exact one).
    pub dtype: HeadDtype,
    /// Weight bytes one decode step reads with this head (0 when it could not be built).
    pub read_bytes_per_token: u64,
    /// Its accuracy cost against the exact head, or why it could not be built.
    pub cost: Result<HeadCost, String>,
}

/// A head's accuracy cost against the exact head on the scored positions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadCost {
    /// Mean `KL(P_exact ‖ P_head)` in nats.
    pub mean_kl: f64,
    /// The largest KL of one position.
    pub max_kl: f64,
    /// The share of positions where both put the same token first.
    pub same_top1: f64,
}

/// What `choose_head` measured and chose.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadChoice {
    /// The head chosen (`Auto`: the exact head).
    pub chosen: HeadDtype,
    /// The bound on the mean KL.
    pub bound: f64,
    /// Positions scored.
    pub positions: usize,
    /// The exact head first, then every lossy head tried.
    pub candidates: Vec<HeadCandidate>,
}

impl HeadChoice {
    /// One line for a person: the head chosen and why.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for c in &self.candidates {
            let name = c.dtype.name();
            parts.push(match &c.cost {
                Ok(_) if c.dtype == HeadDtype::Auto => {
                    format!("exact {} MB/token", mb(c.read_bytes_per_token))
                }
                Ok(cost) => format!(
                    "{name} {} MB/token, mean KL {:.2e}, max {:.2e}, same top-1 {:.1}%",
                    mb(c.read_bytes_per_token),
                    cost.mean_kl,
                    cost.max_kl,
                    100.0 * cost.same_top1
                ),
                Err(why) => format!("{name} not built: {why}"),
            });
        }
        let chosen = match self.chosen {
            HeadDtype::Auto => "the exact head (auto)".to_string(),
            d => d.name().to_string(),
        };
        format!(
            "lm_head: {chosen} (mean KL bound {:.2e} over {} positions of the bundled text; {})",
            self.bound,
            self.positions,
            parts.join("; ")
        )
    }

    /// The measurement as the audit record states it.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "chosen": self.chosen.name(),
            "bound_mean_kl": self.bound,
            "positions": self.positions,
            "candidates": self.candidates.iter().map(|c| match &c.cost {
                Ok(cost) => serde_json::json!({
                    "head_dtype": c.dtype.name(),
                    "read_bytes_per_token": c.read_bytes_per_token,
                    "mean_kl": cost.mean_kl,
                    "max_kl": cost.max_kl,
                    "same_top1": cost.same_top1,
                }),
                Err(why) => serde_json::json!({ "head_dtype": c.dtype.name(), "error": why }),
            }).collect::<Vec<_>>(),
        })
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// Measures the exact head and every lossy one on the model at `path` (compiled as `options`
/// say, whatever their head) and chooses as the module says.
pub fn choose_head(path: &Path, options: &Options, bound: f64) -> Result<HeadChoice, Error> {
    if !bound.is_finite() || bound < 0.0 {
        return Err(Error::HeadChoice(format!(
            "--head-kl-bound {bound}: give a mean KL divergence of 0 or more (nats per token)"
        )));
    }
    if bitnet_runtime::artifact::is_artifact(path) {
        return Err(Error::HeadChoice(format!(
            "{}: an artifact's lm_head was chosen when it was compiled; --head-kl-bound applies to a model being compiled",
            path.display()
        )));
    }
    let build = |dtype: HeadDtype| {
        let mut o = options.clone();
        o.cpu.head = dtype;
        o.context = Some(WINDOW as u64);
        crate::compile(path, &o)
    };
    // One build alive at a time: the exact head's logits are kept, its build dropped.
    let exact = match build(HeadDtype::Auto) {
        Ok(c) => c,
        // Such as a model whose context is shorter than a window: said with the flag that asked.
        Err(e @ Error::Import(_)) => {
            return Err(Error::HeadChoice(format!(
                "--head-kl-bound (the model built for windows of {WINDOW} tokens): {e}"
            )));
        }
        Err(e) => return Err(e),
    };
    let windows = text_windows(&exact, path)?;
    let exact_bytes = exact.read_bytes_per_token();
    let exact_scores = score::score(&mut exact.token_session(), &windows, true, None)?;
    let mut candidates = vec![HeadCandidate {
        dtype: HeadDtype::Auto,
        read_bytes_per_token: exact_bytes,
        cost: Ok(HeadCost {
            mean_kl: 0.0,
            max_kl: 0.0,
            same_top1: 1.0,
        }),
    }];
    for dtype in CANDIDATES {
        let compiled = match build(dtype) {
            Ok(c) => c,
            // A head the backend refuses for this model (q4 past its row length) is not a
            // candidate; anything else is the model's problem and ends the choice.
            Err(Error::Backend(e)) => {
                candidates.push(HeadCandidate {
                    dtype,
                    read_bytes_per_token: 0,
                    cost: Err(e.to_string()),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let bytes = compiled.read_bytes_per_token();
        let mut session = compiled.token_session();
        let theirs = score::score(&mut session, &windows, true, None)?;
        drop(session);
        let (kl, same) = score::compare(&exact_scores, &theirs).ok_or_else(|| {
            Error::HeadChoice(format!(
                "{}: internal: the {} head's scores do not match the exact head's",
                path.display(),
                dtype.name()
            ))
        })?;
        let n = kl.len().max(1) as f64;
        candidates.push(HeadCandidate {
            dtype,
            read_bytes_per_token: bytes,
            cost: Ok(HeadCost {
                mean_kl: kl.iter().sum::<f64>() / n,
                max_kl: kl.iter().copied().fold(0.0, f64::max),
                same_top1: same.iter().filter(|&&s| s).count() as f64 / n,
            }),
        });
    }
    let chosen = pick(&candidates, bound);
    Ok(HeadChoice {
        chosen,
        bound,
        positions: windows.scored(),
        candidates,
    })
}

/// The head among `candidates` that reads the fewest bytes per token with a mean KL at most
/// `bound` (the exact head on a tie, and when none qualifies).
pub fn pick(candidates: &[HeadCandidate], bound: f64) -> HeadDtype {
    candidates
        .iter()
        .filter(|c| c.cost.as_ref().is_ok_and(|cost| cost.mean_kl <= bound))
        .min_by_key(|c| (c.read_bytes_per_token, c.dtype != HeadDtype::Auto))
        .map_or(HeadDtype::Auto, |c| c.dtype)
}

/// The bundled text's ids in windows, with the model's tokenizer.
fn text_windows(compiled: &crate::Compiled, path: &Path) -> Result<Windows, Error> {
    let Some(tokenizer) = compiled.tokenizer()? else {
        return Err(Error::HeadChoice(format!(
            "{}: the model carries no tokenizer, so --head-kl-bound has no text to measure the heads on; choose --head-dtype yourself",
            path.display()
        )));
    };
    let ids = tokenizer.encode(crate::validate::DEFAULT_TEXT, false)?;
    let bos = if tokenizer.adds_bos()? {
        tokenizer.bos()
    } else {
        None
    };
    let vocab = compiled.vocab();
    if let Some(max) = ids.iter().max()
        && u64::from(*max) >= vocab
    {
        return Err(Error::HeadChoice(format!(
            "{}: the tokenizer gives id {max}, outside the model's vocabulary of {vocab}",
            path.display()
        )));
    }
    let windows = Windows::cut(&ids, WINDOW, WINDOWS, bos, "the bundled text")?;
    Ok(windows)
}
