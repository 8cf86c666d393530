//! BitNet b1.58's absmean weight ternarization, computed exactly as the reference interpreter runs
//! the online chain that importers emit (`abs → reduce_mean → clip(eps) → 1/· → mul → round → clip`):
//!
//! `s = 1 / max(mean|W|, eps)`, `T = clamp(round_half_even(W·s), -1, 1)`, `γ = 1/s`,
//!
//! with the mean summed in f64 over the tensor and rounded once to f32 (the interpreter's
//! `nn.reduce_mean`), and every other step in f32. The lowering pass (`lower-bitlinear`) and
//! `bitnetc export` both call this, so a model's online weights and its exported ternary weights are
//! the same values.

/// Ternarizes `w` (any shape, flattened) with floor `eps` on the mean: the ternary values and γ.
pub fn absmean_ternarize(w: &[f32], eps: f32) -> (Vec<i8>, f32) {
    let mean = (w.iter().map(|&x| f64::from(x.abs())).sum::<f64>() / w.len().max(1) as f64) as f32;
    let sw = 1.0 / mean.max(eps);
    let t = w
        .iter()
        .map(|&x| (x * sw).round_ties_even().clamp(-1.0, 1.0) as i8)
        .collect();
    (t, 1.0 / sw)
}

#[cfg(test)]
mod tests {
    use super::absmean_ternarize;

    #[test]
    fn rounds_half_to_even_and_clamps() {
        // mean|W| = 1, so s = 1: 0.5 → 0, 1.5 → 2 → 1, -2.5 → -2 → -1, -0.4 → -0.
        let (t, g) = absmean_ternarize(&[0.5, 1.5, -2.5, -0.4, 0.0, 1.1], 1e-5);
        assert_eq!(t, vec![0, 1, -1, 0, 0, 1]);
        assert_eq!(g, 1.0);
    }

    #[test]
    fn the_floor_applies_to_tiny_weights() {
        let (t, g) = absmean_ternarize(&[0.0, 0.0], 1e-5);
        assert_eq!(t, vec![0, 0]);
        assert_eq!(g, 1.0 / (1.0 / 1e-5f32));
    }
}
