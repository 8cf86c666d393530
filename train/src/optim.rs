//! The optimizer side of a step: AdamW with decoupled weight decay (torch's `AdamW` operation order,
//! in f32), clipping by the global gradient norm (torch's `clip_grad_norm_`), and the learning-rate
//! schedule (linear warmup, then cosine decay to a floor, constant, or BitNet b1.58's two stages).

use bitnet_ir::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// AdamW's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// β1.
    pub beta1: f64,
    /// β2.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not to norms).
    pub weight_decay: f64,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// One parameter's optimizer state: the first and second moments, f32 as torch keeps them.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// First moment.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
}

/// The learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Linear warmup, then cosine decay to a tenth of the peak at the last step.
    Cosine,
    /// Linear warmup, then the peak.
    Constant,
    /// BitNet b1.58's two stages (the 2B-4T report: a high learning rate, then an abrupt cooldown;
    /// weight decay in the first stage only). After warmup, the first half of the remaining steps
    /// decays from the peak to half of it (cosine); the second starts at a quarter of the peak and
    /// decays to a fortieth (cosine), with weight decay off (`decays_at`). The ratios are ours: the
    /// report does not give them.
    TwoStage,
}

impl Schedule {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Cosine => "cosine",
            Schedule::Constant => "constant",
            Schedule::TwoStage => "two-stage",
        }
    }

    /// The schedule named `s`.
    pub fn parse(s: &str) -> Option<Schedule> {
        match s {
            "cosine" => Some(Schedule::Cosine),
            "constant" => Some(Schedule::Constant),
            "two-stage" => Some(Schedule::TwoStage),
            _ => None,
        }
    }

    /// The learning rate of step `step` (1-based) of `total`, peak `lr`, `warmup` warmup steps.
    pub fn lr(self, lr: f64, step: u64, total: u64, warmup: u64) -> f64 {
        if warmup > 0 && step <= warmup {
            return lr * step as f64 / warmup as f64;
        }
        let progress = Self::progress(step, total, warmup);
        // From `from` at progress 0 to `to` at 1 along half a cosine.
        let cosine = |from: f64, to: f64, p: f64| {
            to + 0.5 * (from - to) * (1.0 + (std::f64::consts::PI * p).cos())
        };
        match self {
            Schedule::Constant => lr,
            Schedule::Cosine => cosine(lr, 0.1 * lr, progress),
            Schedule::TwoStage if progress < 0.5 => cosine(lr, 0.5 * lr, 2.0 * progress),
            Schedule::TwoStage => cosine(0.25 * lr, 0.025 * lr, 2.0 * progress - 1.0),
        }
    }

    /// Whether weight decay applies at step `step` of `total` (`warmup` warmup steps): always,
    /// except in the second stage of `TwoStage`.
    pub fn decays_at(self, step: u64, total: u64, warmup: u64) -> bool {
        match self {
            Schedule::TwoStage => {
                (warmup > 0 && step <= warmup) || Self::progress(step, total, warmup) < 0.5
            }
            _ => true,
        }
    }

    /// How far step `step` is through the steps after warmup, 0 to 1.
    fn progress(step: u64, total: u64, warmup: u64) -> f64 {
        let span = total.saturating_sub(warmup).max(1) as f64;
        (step.saturating_sub(warmup) as f64 / span).min(1.0)
    }
}

/// The global L2 norm of `grads` (f64).
pub fn global_norm(grads: &BTreeMap<String, Vec<f64>>) -> f64 {
    grads
        .values()
        .flat_map(|g| g.iter())
        .map(|v| v * v)
        .sum::<f64>()
        .sqrt()
}

/// Scales `grads` so their global norm is at most `max_norm` (torch: coefficient
/// `max_norm / (norm + 1e-6)`, applied when below 1); returns the norm before clipping.
pub fn clip(grads: &mut BTreeMap<String, Vec<f64>>, max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.values_mut() {
            for v in g.iter_mut() {
                *v *= coef;
            }
        }
    }
    norm
}

impl AdamW {
    /// One update of `param` (f32 master weights) with gradient `grad` at step `step` (1-based) and
    /// learning rate `lr`, in torch's order: decay, moments, bias-corrected step.
    pub fn update(
        &self,
        param: &mut Tensor,
        grad: &[f64],
        state: &mut Moments,
        step: u64,
        lr: f64,
        decays: bool,
    ) {
        let bc1 = 1.0 - self.beta1.powf(step as f64);
        let bc2 = 1.0 - self.beta2.powf(step as f64);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = if decays {
            (1.0 - lr * self.weight_decay) as f32
        } else {
            1.0
        };
        let (b1c, b2, b2c, eps) = (
            (1.0 - self.beta1) as f32,
            self.beta2 as f32,
            (1.0 - self.beta2) as f32,
            self.eps as f32,
        );
        if !matches!(param.data, bitnet_ir::Data::F32(_)) {
            param.data = bitnet_ir::Data::F32(param.data.to_f32());
        }
        let bitnet_ir::Data::F32(w) = &mut param.data else {
            return;
        };
        let update = |wk: &mut f32, m: &mut f32, v: &mut f32, g: f32| {
            *wk *= decay;
            *m += b1c * (g - *m);
            *v = *v * b2 + b2c * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *wk -= step_size * (*m / denom);
        };
        // Element by element (so it vectorizes); past the gradient's end, as with a zero gradient.
        let moments = state.m.iter_mut().zip(state.v.iter_mut());
        let mut weights = w.iter_mut().zip(moments);
        // The gradient first: `zip` stops on it without taking a weight.
        for (&g, (wk, (m, v))) in grad.iter().zip(weights.by_ref()) {
            update(wk, m, v, g as f32);
        }
        for (wk, (m, v)) in weights {
            update(wk, m, v, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn the_two_stage_schedule_drops_at_the_midpoint_and_stops_weight_decay() {
        let (lr, total, warmup) = (1e-3, 110, 10);
        let at = |step| Schedule::TwoStage.lr(lr, step, total, warmup);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // Warmup as the others; the peak where it ends.
        assert!(close(at(5), 0.5e-3) && close(at(10), 1e-3));
        // Stage 1: peak to half the peak, never below it.
        assert!(close(at(35), 0.5e-3 + 0.25e-3));
        assert!((11..60).all(|s| at(s) > 0.5e-3 && at(s) <= 1e-3));
        // The drop at the midpoint (step 60 of the 100 after warmup), then a quarter down to a
        // fortieth at the last step.
        assert!(close(at(60), 0.25e-3) && close(at(110), 0.025e-3));
        assert!((61..=110).all(|s| at(s) < at(s - 1)));
        let decays = |s| Schedule::TwoStage.decays_at(s, total, warmup);
        assert!((1..60).all(decays) && !(60..=110).any(decays));
        assert!((1..=110).all(|s| Schedule::Cosine.decays_at(s, total, warmup)));
        for s in [Schedule::Cosine, Schedule::Constant, Schedule::TwoStage] {
            assert_eq!(Schedule::parse(s.name()), Some(s));
        }
    }
}
