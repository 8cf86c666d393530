//! Scoring a text: the text's ids cut into windows, each run from an empty cache with every
//! position's logits, as llama.cpp's `llama-perplexity` does: each window starts with the
//! beginning-of-sequence id when the tokenizer adds one, and only the second half of each window
//! is scored, so every scored token sees at least half a window of context.
//!
//! The first build scored keeps its logits (raw f32, with each row's log-sum-exp in f64) so that
//! the second can compare with it position by position: KL divergence `KL(P_ref ‖ P_model)` in f64
//! and whether both put the same token first.

use crate::Error;
use bitnet_runtime::session::Session;

/// The windows of a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Windows {
    /// Tokens per window.
    pub window: usize,
    /// The windows' ids.
    pub ids: Vec<Vec<u32>>,
    /// The first scored row of each window (its logits predict the next id).
    pub first_scored: usize,
}

impl Windows {
    /// Cuts `ids` into at most `max_windows` whole windows of `window` ids; the first id of each
    /// becomes `bos` when given. `source` names the text in errors.
    pub fn cut(
        ids: &[u32],
        window: usize,
        max_windows: usize,
        bos: Option<u32>,
        source: &str,
    ) -> Result<Windows, Error> {
        if window < 4 {
            return Err(Error::Validate(format!(
                "--window {window}: give at least 4 tokens"
            )));
        }
        let whole = ids.len() / window;
        if whole == 0 {
            return Err(Error::Validate(format!(
                "{source}: {} tokens, fewer than one window of {window}; give a longer text or a smaller --window",
                ids.len()
            )));
        }
        let windows = ids
            .chunks_exact(window)
            .take(max_windows.max(1))
            .map(|w| {
                let mut w = w.to_vec();
                if let (Some(b), Some(first)) = (bos, w.first_mut()) {
                    *first = b;
                }
                w
            })
            .collect();
        Ok(Windows {
            window,
            ids: windows,
            first_scored: window / 2,
        })
    }

    /// Scored positions per window.
    pub fn scored_per_window(&self) -> usize {
        self.window - 1 - self.first_scored
    }

    /// Scored positions in all.
    pub fn scored(&self) -> usize {
        self.ids.len() * self.scored_per_window()
    }
}

/// One build's scores on the windows.
#[derive(Clone, Debug, Default)]
pub struct Scores {
    /// The vocabulary size of the build scored.
    pub vocab: u64,
    /// Per scored position, −log p(next id).
    pub nll: Vec<f64>,
    /// Per scored position, the id with the largest logit (the first on a tie).
    pub top1: Vec<u32>,
    /// The raw logits of every scored position, `scored × vocab`, when kept for a comparison.
    logits: Vec<f32>,
    /// Per scored position, the log-sum-exp of its logits, when kept.
    lse: Vec<f64>,
    /// Per scored position, `KL(P_this ‖ P_other)` against the scores compared with.
    pub kl: Vec<f64>,
    /// Per scored position, whether the top ids agree with the scores compared with.
    pub same_top1: Vec<bool>,
}

impl Scores {
    /// Perplexity: exp of the mean negative log-likelihood.
    pub fn perplexity(&self) -> f64 {
        (self.nll.iter().sum::<f64>() / self.nll.len().max(1) as f64).exp()
    }
}

/// Runs every window through `session` and scores it. `keep` keeps the logits for a later
/// comparison; `against` compares each position with scores that were kept (same windows, same
/// vocabulary).
pub fn score(
    session: &mut Session,
    windows: &Windows,
    keep: bool,
    against: Option<&Scores>,
) -> Result<Scores, Error> {
    let vocab = session.vocab() as usize;
    let mut scores = Scores {
        vocab: vocab as u64,
        ..Scores::default()
    };
    let per_window = windows.scored_per_window();
    if keep {
        let n = windows
            .scored()
            .checked_mul(vocab)
            .ok_or_else(|| Error::Validate("the kept logits overflow memory".into()))?;
        scores.logits.reserve_exact(n);
    }
    let mut logp = vec![0f64; vocab];
    for (w, ids) in windows.ids.iter().enumerate() {
        session.reset();
        let logits = session.forward(ids)?;
        for j in windows.first_scored..windows.window - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let lse = log_softmax(row, &mut logp);
            let next = (ids[j + 1] as usize).min(vocab - 1);
            scores.nll.push(-logp[next]);
            let top = bitnet_runtime::sampling::argmax(row);
            scores.top1.push(top);
            if keep {
                scores.logits.extend_from_slice(row);
                scores.lse.push(lse);
            }
            if let Some(other) = against {
                let i = w * per_window + (j - windows.first_scored);
                let theirs = other
                    .logits
                    .get(i * vocab..(i + 1) * vocab)
                    .zip(other.lse.get(i))
                    .ok_or_else(|| {
                        Error::Validate("internal: the compared scores were not kept".into())
                    })?;
                scores.kl.push(kl_divergence(&logp, theirs.0, *theirs.1));
                scores
                    .same_top1
                    .push(other.top1.get(i).is_some_and(|&t| t == top));
            }
        }
    }
    session.reset();
    Ok(scores)
}

/// Per position of two builds' kept scores (the same windows), `KL(P_a ‖ P_b)` and whether both
/// put the same token first; `None` unless both kept their logits for the same positions and
/// vocabulary.
pub fn compare(a: &Scores, b: &Scores) -> Option<(Vec<f64>, Vec<bool>)> {
    let vocab = a.vocab as usize;
    let n = a.lse.len();
    if vocab == 0 || a.vocab != b.vocab || b.lse.len() != n || a.logits.len() != n * vocab {
        return None;
    }
    let mut logp = vec![0f64; vocab];
    let mut kl = Vec::with_capacity(n);
    let mut same = Vec::with_capacity(n);
    for i in 0..n {
        let row = a.logits.get(i * vocab..(i + 1) * vocab)?;
        log_softmax(row, &mut logp);
        let theirs = b.logits.get(i * vocab..(i + 1) * vocab)?;
        kl.push(kl_divergence(&logp, theirs, *b.lse.get(i)?));
        same.push(a.top1.get(i)? == b.top1.get(i)?);
    }
    Some((kl, same))
}

/// `out = log_softmax(row)` in f64; returns the log-sum-exp.
fn log_softmax(row: &[f32], out: &mut [f64]) -> f64 {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    let sum: f64 = row.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let lse = max + sum.ln();
    for (o, &x) in out.iter_mut().zip(row) {
        *o = f64::from(x) - lse;
    }
    lse
}

/// `KL(P ‖ Q) = Σ p·(log p − log q)` with `log p` given and `log q = logits − lse`; rounding can
/// leave a sum a hair below 0 for equal distributions, reported as 0.
fn kl_divergence(logp: &[f64], logits_q: &[f32], lse_q: f64) -> f64 {
    let kl: f64 = logp
        .iter()
        .zip(logits_q)
        .map(|(&lp, &q)| lp.exp() * (lp - (f64::from(q) - lse_q)))
        .sum();
    kl.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_replace_the_first_id_with_bos_and_drop_the_tail() {
        let ids: Vec<u32> = (10..31).collect();
        let w = Windows::cut(&ids, 8, 10, Some(1), "t").unwrap();
        assert_eq!(w.ids.len(), 2);
        assert_eq!(w.ids[0], vec![1, 11, 12, 13, 14, 15, 16, 17]);
        assert_eq!(w.ids[1][0], 1);
        assert_eq!(w.ids[1][1], 19);
        assert_eq!(w.first_scored, 4);
        assert_eq!(w.scored(), 6);
        assert!(Windows::cut(&ids[..5], 8, 10, None, "t").is_err());
    }

    #[test]
    fn kl_of_a_distribution_with_itself_is_zero_and_positive_otherwise() {
        let a = [1.0f32, 2.0, 3.0];
        let mut lp = [0.0; 3];
        let lse = log_softmax(&a, &mut lp);
        assert!(kl_divergence(&lp, &a, lse) < 1e-15);
        // P = softmax([1, 2, 3]), Q = uniform: KL = Σ p log p + log 3.
        let u = [0.0f32; 3];
        let expected: f64 = lp.iter().map(|l| l.exp() * l).sum::<f64>() + 3f64.ln();
        let got = kl_divergence(&lp, &u, 3f64.ln());
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    }

    #[test]
    fn kept_scores_compare_position_by_position() {
        let kept = |rows: &[[f32; 3]]| {
            let mut s = Scores {
                vocab: 3,
                ..Scores::default()
            };
            let mut lp = [0f64; 3];
            for r in rows {
                s.lse.push(log_softmax(r, &mut lp));
                s.logits.extend_from_slice(r);
                s.top1.push(bitnet_runtime::sampling::argmax(r));
            }
            s
        };
        let a = kept(&[[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]]);
        let b = kept(&[[1.0, 2.0, 3.0], [0.0, 6.0, 5.0]]);
        let (kl, same) = compare(&a, &b).unwrap();
        assert!(kl[0] < 1e-15 && kl[1] > 0.5, "{kl:?}");
        assert_eq!(same, [true, false]);
        // KL(P_a ‖ P_b) of the second row, by hand.
        let (lse_a, lse_b) = (a.lse[1], b.lse[1]);
        let by_hand: f64 = [0.0, 0.0, 5.0]
            .iter()
            .zip([0.0, 6.0, 5.0])
            .map(|(&x, y)| (x - lse_a).exp() * ((x - lse_a) - (y - lse_b)))
            .sum();
        assert!((kl[1] - by_hand).abs() < 1e-12);
        // Different positions or vocabularies do not compare.
        assert!(compare(&a, &kept(&[[1.0, 2.0, 3.0]])).is_none());
        assert!(compare(&a, &Scores::default()).is_none());
    }
}
