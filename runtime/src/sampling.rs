//! Choosing the next token from a step's logits: greedy, or sampling with temperature, top-k,
//! top-p and a repetition penalty, from a seeded generator so that a seed replays a run exactly.
//!
//! The order follows transformers' logits processors: repetition penalty, then temperature, then
//! top-k, then top-p, then a draw from the softmax of what is left. Greedy (temperature 0) applies
//! the repetition penalty and takes the first largest logit, as `torch.argmax` does.
//!
//! The repetition penalty `p` is CTRL's: every token already in the history (prompt and output) has
//! its logit divided by `p` when positive and multiplied by `p` when negative.

use crate::error::RuntimeError;

/// How to choose tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 for greedy decoding; otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// CTRL repetition penalty (1: none).
    pub repetition_penalty: f32,
    /// The seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy decoding, no penalty, seed 0.
    fn default() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> SamplingParams {
        SamplingParams::default()
    }

    /// Checks the ranges: temperature ≥ 0, top_p in (0, 1], penalty > 0, all finite.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |what: String| Err(RuntimeError::Sampling(what));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature {} must be a finite number ≥ 0 (0 is greedy)",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p {} must be in (0, 1]", self.top_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(format!(
                "repetition penalty {} must be a finite number > 0 (1 is none)",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    /// True when no randomness is involved.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// xoshiro256** seeded through splitmix64: small, fast and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform number in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Chooses tokens; holds the generator and scratch space reused between steps.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// (logit, id) candidates of the current step.
    candidates: Vec<(f32, u32)>,
    /// Penalized logits of the current step.
    work: Vec<f32>,
}

impl Sampler {
    /// A sampler for `params` (checked).
    pub fn new(params: SamplingParams) -> Result<Sampler, RuntimeError> {
        params.validate()?;
        Ok(Sampler {
            rng: Rng::new(params.seed),
            params,
            candidates: Vec::new(),
            work: Vec::new(),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Chooses the next token from `logits` (one per vocabulary entry), given the tokens so far.
    /// Logits that are NaN are an error (a broken model must not look like a choice).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32, RuntimeError> {
        if logits.is_empty() {
            return Err(RuntimeError::Sampling("no logits to choose from".into()));
        }
        if let Some(i) = logits.iter().position(|x| x.is_nan()) {
            return Err(RuntimeError::Sampling(format!(
                "the logit of token {i} is NaN"
            )));
        }
        self.work.clear();
        self.work.extend_from_slice(logits);
        let penalty = self.params.repetition_penalty;
        if penalty != 1.0 {
            for &id in history {
                if let Some(x) = self.work.get_mut(id as usize) {
                    // A token seen twice is penalized once (as transformers' gather and scatter
                    // do): only a logit still equal to the original is updated.
                    if *x == logits[id as usize] {
                        *x = if *x > 0.0 { *x / penalty } else { *x * penalty };
                    }
                }
            }
        }
        if self.params.is_greedy() {
            return Ok(argmax(&self.work));
        }
        let inv_t = 1.0 / self.params.temperature;
        self.candidates.clear();
        self.candidates.extend(
            self.work
                .iter()
                .enumerate()
                .map(|(i, &x)| (x * inv_t, i as u32)),
        );
        // Most likely first; ties by lower id, so the order (and a seeded draw) is deterministic.
        let by_logit = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let k = self.params.top_k;
        if k > 0 && k < self.candidates.len() {
            self.candidates.select_nth_unstable_by(k - 1, by_logit);
            self.candidates.truncate(k);
        }
        self.candidates.sort_unstable_by(by_logit);
        let top = self.candidates.first().map_or(0.0, |c| c.0);
        if top == f32::NEG_INFINITY {
            return Err(RuntimeError::Sampling(
                "every logit is -inf: nothing can be chosen".into(),
            ));
        }
        // Softmax in f64, relative to the largest logit.
        let mut total = 0.0f64;
        for c in &mut self.candidates {
            let p = f64::from(c.0 - top).exp();
            c.0 = p as f32;
            total += p;
        }
        if self.params.top_p < 1.0 {
            let want = f64::from(self.params.top_p) * total;
            let mut sum = 0.0f64;
            let mut keep = self.candidates.len();
            for (i, c) in self.candidates.iter().enumerate() {
                sum += f64::from(c.0);
                if sum >= want {
                    keep = i + 1;
                    break;
                }
            }
            self.candidates.truncate(keep.max(1));
            total = self.candidates.iter().map(|c| f64::from(c.0)).sum();
        }
        let mut r = self.rng.next_f64() * total;
        for c in &self.candidates {
            r -= f64::from(c.0);
            if r < 0.0 {
                return Ok(c.1);
            }
        }
        // Rounding left a sliver at the end: the least likely kept token.
        Ok(self.candidates.last().map_or(0, |c| c.1))
    }
}

/// The index of the first largest value (as `torch.argmax`); NaN never wins.
pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &x) in xs.iter().enumerate() {
        if x > best_v {
            best = i;
            best_v = x;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(p: SamplingParams) -> Sampler {
        Sampler::new(p).unwrap()
    }

    #[test]
    fn greedy_takes_the_first_largest() {
        let mut s = sampler(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.0, 3.0, 1.0, 3.0], &[]).unwrap(), 1);
        assert_eq!(s.sample(&[-5.0, -1.0, -2.0], &[]).unwrap(), 1);
    }

    #[test]
    fn repetition_penalty_follows_ctrl() {
        let mut s = sampler(SamplingParams {
            repetition_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        // Token 0 (logit 4) is penalized to 2, below token 1's 3.
        assert_eq!(s.sample(&[4.0, 3.0], &[0, 0]).unwrap(), 1);
        // Negative logits get more negative: -1 × 2 = -2 < -1.5.
        assert_eq!(s.sample(&[-1.0, -1.5], &[0]).unwrap(), 1);
    }

    #[test]
    fn nan_and_bad_params_are_errors() {
        let mut s = sampler(SamplingParams::greedy());
        let e = s.sample(&[0.0, f32::NAN], &[]).unwrap_err().to_string();
        assert!(e.contains("token 1") && e.contains("NaN"), "{e}");
        for p in [
            SamplingParams {
                temperature: -1.0,
                ..SamplingParams::default()
            },
            SamplingParams {
                top_p: 0.0,
                ..SamplingParams::default()
            },
            SamplingParams {
                repetition_penalty: 0.0,
                ..SamplingParams::default()
            },
        ] {
            assert!(Sampler::new(p).is_err());
        }
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_head() {
        let logits = [0.1, 2.0, 1.9, -3.0, 0.5];
        let mut s = sampler(SamplingParams {
            temperature: 1.0,
            top_k: 1,
            seed: 7,
            ..SamplingParams::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&logits, &[]).unwrap(), 1);
        }
        // Probabilities ≈ 0.42, 0.38, 0.09, …: top-p 0.3 keeps token 1 alone, 0.6 keeps 1 and 2.
        let mut s = sampler(SamplingParams {
            temperature: 1.0,
            top_p: 0.3,
            seed: 7,
            ..SamplingParams::default()
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&logits, &[]).unwrap(), 1);
        }
        let mut s = sampler(SamplingParams {
            temperature: 1.0,
            top_p: 0.6,
            seed: 7,
            ..SamplingParams::default()
        });
        for _ in 0..200 {
            let t = s.sample(&logits, &[]).unwrap();
            assert!(t == 1 || t == 2, "{t}");
        }
    }

    #[test]
    fn a_seed_replays_and_frequencies_follow_the_softmax() {
        let logits = [0.0f32, 1.0, 2.0];
        let params = SamplingParams {
            temperature: 1.0,
            seed: 42,
            ..SamplingParams::default()
        };
        let draw = |n| {
            let mut s = sampler(params.clone());
            (0..n)
                .map(|_| s.sample(&logits, &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(100), draw(100));
        let n = 20_000;
        let mut counts = [0usize; 3];
        for t in draw(n) {
            counts[t as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&x| f64::from(x).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let expect = f64::from(logits[i]).exp() / z;
            let got = c as f64 / n as f64;
            // Five standard deviations of a binomial proportion.
            let sd = (expect * (1.0 - expect) / n as f64).sqrt();
            assert!(
                (got - expect).abs() < 5.0 * sd,
                "token {i}: {got} vs {expect}"
            );
        }
        // Temperature sharpens: at 0.25 the top token takes almost everything.
        let mut s = sampler(SamplingParams {
            temperature: 0.25,
            ..params
        });
        let top = (0..1000)
            .filter(|_| s.sample(&logits, &[]).unwrap() == 2)
            .count();
        assert!(top > 950, "{top}");
    }
}
