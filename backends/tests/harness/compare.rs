//! How a kernel's output is compared with the interpreter's, per backend: bit for bit where the
//! `KernelKind` contract says exact, within a stated bound where it does not.

use super::Elem;

/// The backend whose kernel is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The Cranelift kernels (`cpu::jit`).
    Cpu,
    /// The CUDA kernels built for the host (`cuda::host`).
    Cuda,
}

/// A comparison of one output buffer with the interpreter's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compare {
    /// The same bytes (f32: the same bits, or both NaN of any payload).
    Exact,
    /// f32: at most this many units in the last place apart (both NaN, or equal infinities, agree).
    Ulps(u32),
    /// i8: at most this many quantization steps apart.
    Steps(u8),
    /// f32: `|got − want| ≤` this bound (non-finite values must agree exactly).
    Abs(f64),
}

/// The distance in units in the last place between two finite or infinite f32 of any signs.
fn ulps(a: f32, b: f32) -> u64 {
    // Maps the floats onto a line of integers where neighbours differ by one (−0 and +0 meet).
    let line = |x: f32| {
        let bits = i64::from(x.to_bits() as i32);
        if bits < 0 {
            i64::from(i32::MIN) - bits
        } else {
            bits
        }
    };
    line(a).abs_diff(line(b))
}

/// The first element where `got` and `want` (`elem`s) differ beyond `compare`: its index and a
/// description.
pub fn mismatch(elem: Elem, compare: Compare, got: &[u8], want: &[u8]) -> Option<(usize, String)> {
    if got.len() != want.len() {
        return Some((0, format!("{} bytes, want {}", got.len(), want.len())));
    }
    match elem {
        Elem::I8 => {
            let steps = match compare {
                Compare::Steps(s) => i16::from(s),
                _ => 0,
            };
            got.iter().zip(want).enumerate().find_map(|(i, (&g, &w))| {
                let (g, w) = (i16::from(g as i8), i16::from(w as i8));
                ((g - w).abs() > steps).then(|| (i, format!("{g}, interpreter {w}")))
            })
        }
        Elem::F32 => {
            let floats = |b: &[u8]| -> Vec<f32> {
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            let (got, want) = (floats(got), floats(want));
            got.iter().zip(&want).enumerate().find_map(|(i, (&g, &w))| {
                let agree = if g.is_nan() || w.is_nan() {
                    g.is_nan() && w.is_nan()
                } else {
                    match compare {
                        Compare::Exact | Compare::Steps(_) => g.to_bits() == w.to_bits(),
                        Compare::Ulps(n) => ulps(g, w) <= u64::from(n),
                        Compare::Abs(bound) => {
                            if g.is_finite() && w.is_finite() {
                                (f64::from(g) - f64::from(w)).abs() <= bound
                            } else {
                                g == w
                            }
                        }
                    }
                };
                (!agree).then(|| {
                    (
                        i,
                        format!(
                            "{g:e} ({:#010x}), interpreter {w:e} ({:#010x})",
                            g.to_bits(),
                            w.to_bits()
                        ),
                    )
                })
            })
        }
    }
}

/// The comparison of an f32 sum in another order than the interpreter's: within `relative` of the
/// largest magnitude among `want`'s finite values.
pub fn relative_to_max(want: &[f32], relative: f64) -> Compare {
    let max = want
        .iter()
        .filter(|x| x.is_finite())
        .fold(0f64, |m, &x| m.max(f64::from(x).abs()));
    Compare::Abs(relative * max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulps_count_across_zero() {
        assert_eq!(ulps(0.0, -0.0), 0);
        assert_eq!(ulps(f32::from_bits(1), -f32::from_bits(1)), 2);
        assert_eq!(ulps(1.0, f32::from_bits(1.0f32.to_bits() + 3)), 3);
    }
}
