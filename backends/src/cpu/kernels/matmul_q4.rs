//! Kernel `MatmulQ4` (see `KernelKind::MatmulQ4` for its buffers, rows and numerics): the 4-bit
//! lm_head (`HeadDtype::Q4`), `out[t, r] = f32(Σ_g m[r, g]·Σ_{i∈g} q[r, i]·xq[t, i]) / xs[t] ·
//! ws[r]`, 4.25 bits per weight.
//!
//! The kernel is always a call of the runtime's micro-kernel (`bitnet_runtime::native::matmul_q4`,
//! whose doc has the layout: AVX-512 VNNI where the CPU has it, else portable code with the same
//! results), on every target: its sums are integers, so there is no order to keep in step with a
//! generated version.
//!
//! The weights are quantized at compile time by `quantize_row`, per row:
//! 1. each group of 32 weights gets the step `a_g / 7` (`a_g` its largest magnitude), the row the
//!    scale `ws = max_g step_g / 63`;
//! 2. a group's multiplier is `m_g = ceil(step_g / ws)` in 1..=63, so its step `ws·m_g` is at least
//!    `step_g` and no weight is clipped;
//! 3. `q = round_half_even(w / (ws·m_g))`, in −7..=7 (clamped to −8..=7 against rounding).
//!
//! A row of zeros gets `ws = 0` (its outputs are 0). NaN weights quantize to 0.

use crate::BackendError;
use crate::cpu::emit::{bad_params, define_micro_kernel_call, imm64};
use crate::kernel::MatmulQ4Params;
use bitnet_runtime::native::matmul_q4::{CHUNK, GROUP, MAX_K, MAX_M, multipliers, padded};
use cranelift_module::{FuncId, Module};

/// One row's quantized form (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct Q4Row {
    /// The row scale `ws`.
    pub scale: f32,
    /// `128·Σ_g m_g·Σ_{i∈g} q_i` (wrapping i32, as the kernel subtracts it).
    pub correction: i32,
}

/// Quantizes `row` (K ≤ `MAX_K` values; the kernel refuses a larger K): its nibbles into `nibbles`
/// (`nibble_bytes(K)` bytes) and its multipliers into `mults` (`multipliers(K)` bytes), as the
/// runtime's layout says.
pub fn quantize_row(row: &[f32], nibbles: &mut [u8], mults: &mut [u8]) -> Q4Row {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting rounds half to even
    let groups = multipliers(row.len());
    let mut steps = [0f32; MAX_K / GROUP];
    for (step, part) in steps.iter_mut().zip(row.chunks(GROUP)) {
        *step = part.iter().fold(0f32, |m, &x| m.max(x.abs())) / 7.0;
    }
    let steps = &steps[..groups.min(MAX_K / GROUP)];
    let top = steps.iter().copied().fold(0f32, f32::max);
    let scale = top / f32::from(MAX_M);
    nibbles.fill(0x88);
    let mut correction = 0i32;
    for (g, (m, &step)) in mults.iter_mut().zip(steps).enumerate() {
        let mg = if scale > 0.0 {
            (step / scale).ceil().clamp(1.0, f32::from(MAX_M)) as u8
        } else {
            1
        };
        *m = mg;
        let s = scale * f32::from(mg);
        for (i, &w) in row.iter().enumerate().skip(g * GROUP).take(GROUP) {
            let q = if s > 0.0 {
                ((w / s + ROUND) - ROUND).clamp(-8.0, 7.0) as i32
            } else {
                0
            };
            let (c, j) = (i / CHUNK, i % CHUNK);
            let byte = &mut nibbles[c * 64 + j % 64];
            let nibble = (q + 8) as u8;
            *byte = if j < 64 {
                (*byte & 0xf0) | nibble
            } else {
                (*byte & 0x0f) | (nibble << 4)
            };
            correction = correction.wrapping_add(128 * i32::from(mg) * q);
        }
    }
    Q4Row { scale, correction }
}

/// The value weight `i` of a quantized row stands for (`ws·m_g·q`), for tests and accuracy checks.
pub fn dequantize(nibbles: &[u8], mults: &[u8], scale: f32, i: usize) -> f32 {
    let (c, j) = (i / CHUNK, i % CHUNK);
    let byte = nibbles[c * 64 + j % 64];
    let nibble = if j < 64 { byte & 15 } else { byte >> 4 };
    let q = i32::from(nibble) - 8;
    scale * f32::from(mults[i / GROUP]) * q as f32
}

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &MatmulQ4Params) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let MatmulQ4Params { k, n } = *p;
    if k == 0 || k > MAX_K as u64 {
        return Err(bad_params(name, "k must be between 1 and MAX_K (32768)"));
    }
    // The rows' offsets in bytes (nibbles, outputs) fit the platform's pointers.
    let rows_bytes = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(padded(k as usize)));
    if rows_bytes.is_none() {
        return Err(bad_params(name, "n·k beyond the address space"));
    }
    let params = [imm64(name, k)?, imm64(name, n)?];
    define_micro_kernel_call(module, name, bitnet_runtime::native::MATMUL_Q4, &params)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use bitnet_runtime::native::matmul_q4::nibble_bytes;

    fn quantize(row: &[f32]) -> (Vec<u8>, Vec<u8>, Q4Row) {
        let mut nib = vec![0u8; nibble_bytes(row.len())];
        let mut m = vec![0u8; multipliers(row.len())];
        let q = quantize_row(row, &mut nib, &mut m);
        (nib, m, q)
    }

    /// Every weight comes back within half its group's step, the step is at most twice the ideal
    /// `a_g / 7` (a multiplier of at least 1) and padding weights are 0.
    #[test]
    fn weights_come_back_within_half_a_step() {
        let mut s = 7u64;
        for k in [1usize, 31, 32, 100, 128, 129, 2560] {
            let row: Vec<f32> = (0..k)
                .map(|i| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    // Groups of very different magnitudes.
                    ((s % 2001) as f32 / 1000.0 - 1.0) * if (i / 32) % 3 == 0 { 100.0 } else { 0.5 }
                })
                .collect();
            let (nib, m, q) = quantize(&row);
            for (i, &w) in row.iter().enumerate() {
                let g = i / GROUP;
                let step = q.scale * f32::from(m[g]);
                let back = dequantize(&nib, &m, q.scale, i);
                assert!(
                    (back - w).abs() <= step * 0.5 + 1e-6,
                    "k {k} i {i}: {w} -> {back}"
                );
                let part = &row[g * GROUP..((g + 1) * GROUP).min(k)];
                let ideal = part.iter().fold(0f32, |a, &x| a.max(x.abs())) / 7.0;
                assert!(step >= ideal * 0.999_99 && step <= (ideal * 2.0).max(q.scale) * 1.000_01);
            }
            for i in k..padded(k) {
                assert_eq!(dequantize(&nib, &m, q.scale, i), 0.0, "padding {i}");
            }
            let mut corr = 0i32;
            for i in 0..k {
                let (c, j) = (i / CHUNK, i % CHUNK);
                let b = nib[c * 64 + j % 64];
                let v = i32::from(if j < 64 { b & 15 } else { b >> 4 }) - 8;
                corr = corr.wrapping_add(128 * i32::from(m[i / GROUP]) * v);
            }
            assert_eq!(corr, q.correction);
        }
    }

    #[test]
    fn a_row_of_zeros_or_nan_quantizes_to_zero() {
        let (nib, m, q) = quantize(&[0.0; 40]);
        assert_eq!(
            q,
            Q4Row {
                scale: 0.0,
                correction: 0
            }
        );
        assert!(nib.iter().all(|&b| b == 0x88) && m.iter().all(|&v| v == 1));
        let (_, _, q) = quantize(&[f32::NAN, 1.0, -2.0]);
        assert!(q.scale > 0.0);
    }
}
