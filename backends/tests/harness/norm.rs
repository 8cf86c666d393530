//! Cases of the norm kernels (`RmsNormQuant`, `ActQuant`, `RmsNorm`): rows of every kind the
//! quantizer and the norm treat specially (zeros, rounding ties, NaN, infinities, subnormals, huge
//! and tiny values), K with every tail (1, 15, 63, 64, 65, 200, 256, 2560), T = 1, 2 and 37, both
//! scale forms, and rows whose sum of squares rounds differently in any order but the index order.

use super::compare::Compare;
use super::reference::{eval, f32_bytes, f32s, i8_bytes, i8s, tensor, unwritten};
use super::{Buffer, Case, Elem, Owner, Written};
use crate::support::Rng;
use bitnet_backends::kernel::{ActQuantParams, KernelKind, RmsNormParams, RmsNormQuantParams};
use bitnet_ir::{Attr, Attrs, ElemType, OpKind};

const T_SIZES: [usize; 3] = [1, 2, 37];
const K_SIZES: [usize; 8] = [1, 15, 63, 64, 65, 200, 256, 2560];
/// The K of the grid cases that also use the reciprocal form of the scale.
const RECIPROCAL_K: [usize; 3] = [15, 65, 200];
/// The random cases draw their kinds (K and the constants) from a pool of this many, so that a
/// backend compiles few kernels (the CUDA host build of a norm takes time in proportion to K)
/// while the data, T and the row splits vary from case to case.
const POOL: usize = 8;
/// Random cases per op.
const RANDOM: usize = 60;

/// CUDA's normalized values: its block-tree sum of squares may round the f32 mean to the other side
/// of a rounding boundary, one ulp of `inv`, which moves `x·inv·w` by at most two ulps.
const CUDA_NORM: Compare = Compare::Ulps(2);
/// CUDA's quantizer scale: `127 / max|y|` of values each up to two ulps off, one more rounding.
const CUDA_SCALE: Compare = Compare::Ulps(4);
/// CUDA's quantized values: a value a few ulps off may round to the neighbouring step.
const CUDA_QUANT: Compare = Compare::Steps(1);

/// A row of one of several kinds: zeros, rounding ties (after act_quant's scaling by 1 when the
/// row's absmax is 127), specials (NaN, ±inf, subnormals, huge values, −0), tiny values (below the
/// quantizer's floor), or plain random values at a random scale.
fn row(rng: &mut Rng, k: usize, kind: usize) -> Vec<f32> {
    match kind {
        0 => vec![0.0; k],
        1 => (0..k)
            .map(|i| {
                if i == k / 2 {
                    127.0
                } else {
                    (rng.range(0, 254) as f32 - 127.0) + 0.5 * (rng.range(0, 1) as f32)
                }
                .clamp(-127.0, 127.0)
            })
            .collect(),
        2 => (0..k)
            .map(|_| match rng.range(0, 9) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => f32::from_bits(1 + rng.range(0, 999) as u32),
                4 => 3e38 * rng.unit(),
                5 => -0.0,
                _ => rng.unit(),
            })
            .collect(),
        3 => (0..k).map(|_| 1e-7 * rng.unit()).collect(),
        _ => {
            let scale = [1e-3, 1.0, 3.0, 100.0, 1e20][rng.range(0, 4)];
            (0..k).map(|_| scale * rng.unit()).collect()
        }
    }
}

/// `t` rows of `k`: mostly plain random rows, with every other kind mixed in.
pub fn rows(rng: &mut Rng, t: usize, k: usize) -> Vec<f32> {
    (0..t)
        .flat_map(|_| {
            let kind = if rng.range(0, 1) == 0 {
                4
            } else {
                rng.range(0, 4)
            };
            row(rng, k, kind)
        })
        .collect()
}

/// Norm weights: random in [−2, 2), sometimes with zeros.
fn weights(rng: &mut Rng, k: usize, zeros: bool) -> Vec<f32> {
    (0..k)
        .map(|_| {
            if zeros && rng.range(0, 9) == 0 {
                0.0
            } else {
                2.0 * rng.unit()
            }
        })
        .collect()
}

/// The rows of `rms_sum_is_in_index_order`: the first two squares sum to exactly an f32 rounding
/// tie (1 + 2^-24, times 1/K exactly), and six squares of 2^-54 (a quarter ulp each) round away
/// when added one by one after them, but not when some are added to each other first (as a
/// reversed, pairwise or lane-wise sum would), which moves the f32 mean off the tie.
fn index_order_row(k: usize) -> Vec<f32> {
    let mut x = vec![0f32; k];
    x[0] = 1.0;
    x[1] = 2f32.powi(-12);
    for v in &mut x[2..8] {
        *v = 2f32.powi(-27);
    }
    x
}

/// One quantizer case: `ActQuant`, or `RmsNormQuant` when `w` is given.
fn quant_case(
    t: usize,
    k: usize,
    x: &[f32],
    w: Option<&[f32]>,
    (eps, eps_norm, reciprocal): (f32, f32, bool),
    note: &str,
) -> Case {
    let xt = tensor(vec![t, k], x);
    let results = [(vec![t, k], ElemType::I8), (vec![t, 1], ElemType::F32)];
    let mut attrs = Attrs::new().with("eps", Attr::Float(f64::from(eps)));
    if reciprocal {
        attrs = attrs.with("reciprocal", Attr::Bool(true));
    }
    let (want, kind, mut buffers, cuda) = match w {
        Some(w) => {
            let attrs = attrs.with("eps_norm", Attr::Float(f64::from(eps_norm)));
            let want = eval(
                OpKind::RmsNormQuant,
                &[&xt, &tensor(vec![k], w)],
                &attrs,
                &results,
            );
            let kind = KernelKind::RmsNormQuant(RmsNormQuantParams {
                k: k as u64,
                eps_norm_bits: eps_norm.to_bits(),
                eps_bits: eps.to_bits(),
                reciprocal,
            });
            let buffers = vec![Buffer::input(f32_bytes(x)), Buffer::input(f32_bytes(w))];
            (want, kind, buffers, (CUDA_QUANT, CUDA_SCALE))
        }
        None => {
            let want = eval(OpKind::ActQuant, &[&xt], &attrs, &results);
            let kind = KernelKind::ActQuant(ActQuantParams {
                k: k as u64,
                eps_bits: eps.to_bits(),
                reciprocal,
            });
            // The maximum does not depend on the order: exact on both backends.
            (
                want,
                kind,
                vec![Buffer::input(f32_bytes(x))],
                (Compare::Exact, Compare::Exact),
            )
        }
    };
    buffers.push(Buffer::output(
        unwritten(t * k),
        Written {
            want: i8_bytes(&i8s(&want[0])),
            elem: Elem::I8,
            owner: Owner::Rows { row_bytes: k },
            cpu: Compare::Exact,
            cuda: cuda.0,
        },
    ));
    buffers.push(Buffer::output(
        unwritten(4 * t),
        Written::exact_f32(&f32s(&want[1]), Owner::Rows { row_bytes: 4 })
            .compared(Compare::Exact, cuda.1),
    ));
    Case {
        kind,
        t,
        pos: 0,
        rows: t,
        buffers,
        note: format!("{note}, eps {eps:e}, eps_norm {eps_norm:e}, reciprocal {reciprocal}"),
    }
}

/// `ActQuant` cases.
pub fn act_quant(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for &t in &T_SIZES {
        for &k in &K_SIZES {
            for reciprocal in [false, true] {
                if reciprocal && !RECIPROCAL_K.contains(&k) {
                    continue;
                }
                let x = rows(rng, t, k);
                cases.push(quant_case(t, k, &x, None, (1e-5, 0.0, reciprocal), "grid"));
            }
        }
    }
    let pool: Vec<(usize, (f32, f32, bool))> = (0..POOL)
        .map(|_| {
            let eps = rng.pick(&[1e-5, 1e-6, 0.5, 1e3]);
            (rng.range(1, 300), (eps, 0.0, rng.range(0, 3) == 0))
        })
        .collect();
    for _ in 0..RANDOM {
        let (k, eps) = rng.pick(&pool);
        let t = rng.range(1, 8);
        let x = rows(rng, t, k);
        cases.push(quant_case(t, k, &x, None, eps, "random"));
    }
    // Absmax 127: the scale is exactly 1, so every x.5 value is a rounding tie.
    let k = 260;
    let mut x: Vec<f32> = (0..k).map(|i| (i as f32 - 128.0) / 2.0).collect();
    x[..7].copy_from_slice(&[127.0, -127.5, 126.5, -0.5, 0.5, 1.5, 2.5]);
    cases.push(quant_case(1, k, &x, None, (1e-5, 0.0, false), "ties"));
    cases
}

/// `RmsNormQuant` cases.
pub fn rms_norm_quant(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for &t in &T_SIZES {
        for &k in &K_SIZES {
            for reciprocal in [false, true] {
                if reciprocal && !RECIPROCAL_K.contains(&k) {
                    continue;
                }
                let x = rows(rng, t, k);
                let w = weights(rng, k, false);
                let eps = (1e-5, 1e-5, reciprocal);
                cases.push(quant_case(t, k, &x, Some(&w), eps, "grid"));
            }
        }
    }
    let pool: Vec<(usize, (f32, f32, bool))> = (0..POOL)
        .map(|_| {
            let eps = rng.pick(&[1e-5, 1e-6, 0.5]);
            let eps_norm = rng.pick(&[1e-5, 1e-6, 0.0, 2.0]);
            (rng.range(1, 300), (eps, eps_norm, rng.range(0, 3) == 0))
        })
        .collect();
    for _ in 0..RANDOM {
        let (k, eps) = rng.pick(&pool);
        let t = rng.range(1, 8);
        let x = rows(rng, t, k);
        let w = weights(rng, k, true);
        cases.push(quant_case(t, k, &x, Some(&w), eps, "random"));
    }
    for k in [8usize, 16, 64, 256, 2048] {
        let w = vec![1f32; k];
        let eps = (1e-5, 0.0, false);
        let x = index_order_row(k);
        cases.push(quant_case(1, k, &x, Some(&w), eps, "index-order sum"));
    }
    cases
}

/// One `RmsNorm` case, in place (`out` = `x`) when `in_place`.
fn rms_norm_case(t: usize, k: usize, x: &[f32], w: &[f32], eps: f32, in_place: bool) -> Case {
    let attrs = Attrs::new().with("eps", Attr::Float(f64::from(eps)));
    let want = eval(
        OpKind::RmsNorm,
        &[&tensor(vec![t, k], x), &tensor(vec![k], w)],
        &attrs,
        &[(vec![t, k], ElemType::F32)],
    );
    let written = Written::exact_f32(&f32s(&want[0]), Owner::Rows { row_bytes: 4 * k })
        .compared(Compare::Exact, CUDA_NORM);
    let out = if in_place {
        Buffer::in_place(0, written)
    } else {
        Buffer::output(unwritten(4 * t * k), written)
    };
    Case {
        kind: KernelKind::RmsNorm(RmsNormParams {
            k: k as u64,
            eps_bits: eps.to_bits(),
        }),
        t,
        pos: 0,
        rows: t,
        buffers: vec![
            Buffer::input(f32_bytes(x)),
            Buffer::input(f32_bytes(w)),
            out,
        ],
        note: format!("eps {eps:e}, in place {in_place}"),
    }
}

/// `RmsNorm` cases.
pub fn rms_norm(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for &t in &T_SIZES {
        for &k in &K_SIZES {
            let x = rows(rng, t, k);
            let w = weights(rng, k, false);
            let in_place = rng.range(0, 3) == 0;
            cases.push(rms_norm_case(t, k, &x, &w, 1e-5, in_place));
        }
    }
    let pool: Vec<(usize, f32)> = (0..POOL)
        .map(|_| (rng.range(1, 300), rng.pick(&[1e-5, 1e-6, 0.0, 2.0])))
        .collect();
    for _ in 0..RANDOM {
        let (k, eps) = rng.pick(&pool);
        let t = rng.range(1, 8);
        let x = rows(rng, t, k);
        let w = weights(rng, k, false);
        let in_place = rng.range(0, 3) == 0;
        cases.push(rms_norm_case(t, k, &x, &w, eps, in_place));
    }
    for k in [8usize, 16, 64, 256, 2048] {
        let w = vec![1f32; k];
        cases.push(rms_norm_case(1, k, &index_order_row(k), &w, 0.0, false));
    }
    cases
}
