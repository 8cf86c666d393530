//! The optimizer side of a step: AdamW with decoupled weight decay (torch's `AdamW` operation order,
//! in f32), clipping by the global gradient norm (torch's `clip_grad_norm_`), and the learning-rate
//! schedule (linear warmup, then cosine decay to a floor, or constant).

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
}

impl Schedule {
    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Cosine => "cosine",
            Schedule::Constant => "constant",
        }
    }

    /// The schedule named `s`.
    pub fn parse(s: &str) -> Option<Schedule> {
        match s {
            "cosine" => Some(Schedule::Cosine),
            "constant" => Some(Schedule::Constant),
            _ => None,
        }
    }

    /// The learning rate of step `step` (1-based) of `total`, peak `lr`, `warmup` warmup steps.
    pub fn lr(self, lr: f64, step: u64, total: u64, warmup: u64) -> f64 {
        if warmup > 0 && step <= warmup {
            return lr * step as f64 / warmup as f64;
        }
        match self {
            Schedule::Constant => lr,
            Schedule::Cosine => {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = (step.saturating_sub(warmup) as f64 / span).min(1.0);
                let floor = 0.1 * lr;
                floor + 0.5 * (lr - floor) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
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
        let mut w = param.data.to_f32();
        for (k, wk) in w.iter_mut().enumerate() {
            let g = grad.get(k).copied().unwrap_or(0.0) as f32;
            let (Some(m), Some(v)) = (state.m.get_mut(k), state.v.get_mut(k)) else {
                continue;
            };
            *wk *= decay;
            *m += b1c * (g - *m);
            *v = *v * b2 + b2c * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *wk -= step_size * (*m / denom);
        }
        param.data = bitnet_ir::Data::F32(w);
    }
}
