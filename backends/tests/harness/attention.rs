//! Cases of the two kernels of `nn.attention`: `KvStore` (the cache write at pos, caches holding
//! garbage elsewhere) and `Attention` (prefill and decode at pos > 0, grouped-query heads, head
//! sizes that are not a multiple of anything, explicit and default scales, large, degenerate and
//! infinite scores, out in place of q, contexts on both sides of the CPU kernel's stack limit and
//! across its tiles). Each case's inputs and expected outputs come from one `nn.attention` eval.

use super::compare::Compare;
use super::reference::{eval, f32_bytes, f32s, tensor, tensor_of, unwritten};
use super::{Buffer, Case, Owner, Written};
use crate::support::Rng;
use bitnet_backends::cpu::kernels::attention::{SCORES_ON_STACK_MAX_CONTEXT, TILE_KEYS};
use bitnet_backends::kernel::{AttentionParams, KernelKind, KvStoreParams};
use bitnet_ir::{Attr, Attrs, Data, ElemType, OpKind, Tensor};

/// The part of CUDA's attention error (relative to the largest value mixed) that does not grow with
/// the scores: `exp`'s approximation and the roundings of the weights (`cuda_bound`).
const CUDA_ATTENTION: f64 = 1e-5;
/// The unit roundoff of f32.
const F32_UNIT: f64 = 1.0 / (1u64 << 24) as f64;

/// The bound on CUDA's error for one step: it runs in f32 (dots, `exp`, sums) where the interpreter
/// uses f64. An f32 dot of d products is off by at most `(d + 2)·u·Σ|q·k|` (u = 2^-24), so a score
/// by `δ = (d + 2)·u·scale·Σ|q·k|`; that changes each softmax weight by a factor within `e^{±2δ}`,
/// and the f32 sums of L weights and of L weighted values add about `L·u` each. An output is a
/// convex combination of value rows, so it is off by at most `max|v|·(4δ + 2(L + 1)·u + 1e-5)`.
fn cuda_bound(
    s: &Step,
    (heads, kv_heads, d): (usize, usize, usize),
    (t, pos): (usize, usize),
    scale: f64,
) -> f64 {
    let kvw = kv_heads * d;
    let keys = pos + t;
    let max_v = s.vc_after[..keys * kvw]
        .iter()
        .filter(|x| x.is_finite())
        .fold(0f64, |m, &x| m.max(f64::from(x).abs()));
    let mut dots = 0f64;
    for r in 0..t * heads {
        let (token, h) = (r / heads, r % heads);
        let q = &s.q[token * heads * d + h * d..][..d];
        let kv = h / (heads / kv_heads);
        for j in 0..=pos + token {
            let k = &s.kc_after[j * kvw + kv * d..][..d];
            let sum: f64 = q
                .iter()
                .zip(k)
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum();
            dots = dots.max(sum);
        }
    }
    let delta = (d + 2) as f64 * F32_UNIT * scale.abs() * dots;
    max_v * (4.0 * delta + 2.0 * (keys + 1) as f64 * F32_UNIT + CUDA_ATTENTION)
}

/// `(heads, kv_heads, head_dim)` of the fixed cases.
const SHAPES: [(usize, usize, usize); 9] = [
    (4, 2, 32),
    (8, 8, 64),
    (20, 5, 128),
    (2, 1, 1),
    (3, 3, 3),
    (6, 2, 17),
    (4, 4, 18),
    (2, 2, 30),
    (4, 1, 48),
];

/// How a case draws its inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Values {
    /// Varied magnitudes, some ±0.
    Normal,
    /// q and k scaled by 64: most weights underflow to 0, the max dominates.
    Large,
    /// q all zero (equal scores, uniform weights) and v all −0.0 (the output is −0.0).
    Degenerate,
    /// Some ±∞ in q and k (NaN and ∞ scores).
    Special,
}

fn draw(rng: &mut Rng, values: Values, n: usize, which: char) -> Vec<f32> {
    match (values, which) {
        (Values::Large, 'q' | 'k') => (0..n).map(|_| rng.value() * 64.0).collect(),
        (Values::Degenerate, 'q') => vec![0.0; n],
        (Values::Degenerate, 'v') => vec![-0.0; n],
        (Values::Special, 'q' | 'k') => (0..n)
            .map(|_| match rng.next() % 50 {
                0 => f32::INFINITY,
                1 => f32::NEG_INFINITY,
                _ => rng.value(),
            })
            .collect(),
        _ => rng.values(n),
    }
}

/// One step of `nn.attention` in the interpreter: T tokens at `pos` on caches holding garbage.
struct Step {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    kc: Vec<f32>,
    vc: Vec<f32>,
    out: Vec<f32>,
    kc_after: Vec<f32>,
    vc_after: Vec<f32>,
}

fn step(
    rng: &mut Rng,
    (heads, kv_heads, d): (usize, usize, usize),
    (t, pos, context): (usize, usize, usize),
    values: Values,
    attrs: &Attrs,
) -> Step {
    let (qw, kvw) = (heads * d, kv_heads * d);
    let q = draw(rng, values, t * qw, 'q');
    let k = draw(rng, values, t * kvw, 'k');
    let v = draw(rng, values, t * kvw, 'v');
    // Rows the step does not write hold garbage, as earlier steps left them.
    let kc = rng.values(context * kvw);
    let vc = rng.values(context * kvw);
    let inputs: [Tensor; 6] = [
        tensor(vec![t, qw], &q),
        tensor(vec![t, kvw], &k),
        tensor(vec![t, kvw], &v),
        tensor(vec![context, kvw], &kc),
        tensor(vec![context, kvw], &vc),
        tensor_of(vec![], Data::I64(vec![pos as i64])),
    ];
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let results = [
        (vec![t, qw], ElemType::F32),
        (vec![context, kvw], ElemType::F32),
        (vec![context, kvw], ElemType::F32),
    ];
    let res = eval(OpKind::Attention, &refs, attrs, &results);
    Step {
        q,
        k,
        v,
        kc,
        vc,
        out: f32s(&res[0]),
        kc_after: f32s(&res[1]),
        vc_after: f32s(&res[2]),
    }
}

/// The attributes of `nn.attention` for `heads`/`kv_heads`, with `scale` when given.
fn attrs(heads: usize, kv_heads: usize, scale: Option<f64>) -> Attrs {
    let attrs = Attrs::new()
        .with("heads", Attr::Int(heads as i64))
        .with("kv_heads", Attr::Int(kv_heads as i64));
    match scale {
        Some(s) => attrs.with("scale", Attr::Float(s)),
        None => attrs,
    }
}

/// A cache in the IR's `[C, kv_heads·d]` layout (as the interpreter keeps it) in the kernels'
/// head-major `[kv_heads, C, d]`.
fn head_major(c: &[f32], kv_heads: usize, d: usize) -> Vec<f32> {
    let kvw = kv_heads * d;
    let context = c.len() / kvw.max(1);
    (0..kv_heads)
        .flat_map(|g| (0..context).flat_map(move |j| (0..d).map(move |i| j * kvw + g * d + i)))
        .map(|at| c[at])
        .collect()
}

/// One `KvStore` case: T rows of `kv_heads` heads of `d` into cache rows `pos..pos + T` of
/// `context`.
fn kv_store_case(
    rng: &mut Rng,
    (kv_heads, d): (usize, usize),
    (t, pos, context): (usize, usize, usize),
) -> Case {
    let s = step(
        rng,
        (kv_heads, kv_heads, d),
        (t, pos, context),
        Values::Normal,
        &attrs(kv_heads, kv_heads, None),
    );
    let owner = Owner::Shifted {
        row_bytes: 4 * d,
        context,
        first: pos,
    };
    let hm = |c: &[f32]| head_major(c, kv_heads, d);
    Case {
        kind: KernelKind::KvStore(KvStoreParams {
            kvw: (kv_heads * d) as u64,
            head_dim: d as u64,
            context: context as u64,
        }),
        t,
        pos,
        rows: t,
        buffers: vec![
            Buffer::input(f32_bytes(&s.k)),
            Buffer::input(f32_bytes(&s.v)),
            Buffer::output(
                f32_bytes(&hm(&s.kc)),
                Written::exact_f32(&hm(&s.kc_after), owner),
            ),
            Buffer::output(
                f32_bytes(&hm(&s.vc)),
                Written::exact_f32(&hm(&s.vc_after), owner),
            ),
        ],
        note: format!("{kv_heads} heads of {d}, context {context}"),
    }
}

/// `KvStore` cases.
pub fn kv_store(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for &(_, kv_heads, d) in &SHAPES {
        for &t in &[1, 2, 37] {
            for &pos in &[0, 1, 7, 9] {
                let context = pos + t + rng.range(0, 3);
                cases.push(kv_store_case(rng, (kv_heads, d), (t, pos, context)));
            }
        }
    }
    for _ in 0..40 {
        let (kv_heads, d) = (rng.range(1, 5), rng.range(1, 70));
        let opts = [1, 2, 37, rng.range(1, 9)];
        let t = rng.pick(&opts);
        let opts = [0, rng.range(1, 40), rng.range(1, 200)];
        let pos = rng.pick(&opts);
        let context = pos + t + rng.range(0, 20);
        cases.push(kv_store_case(rng, (kv_heads, d), (t, pos, context)));
    }
    cases
}

/// One `Attention` case (with a random scale, explicit or the default, and out sometimes in place
/// of q), and the decode step after it when the context has room.
fn attention_cases(
    rng: &mut Rng,
    (heads, kv_heads, d): (usize, usize, usize),
    (t, pos, context): (usize, usize, usize),
    values: Values,
) -> Vec<Case> {
    let explicit = rng.range(0, 1) == 0;
    let scale = if explicit {
        0.05 + f64::from(rng.unit().abs()) * 2.0
    } else {
        1.0 / (d as f64).sqrt()
    };
    let attrs = attrs(heads, kv_heads, explicit.then_some(scale));
    let kind = KernelKind::Attention(AttentionParams {
        heads: heads as u64,
        kv_heads: kv_heads as u64,
        head_dim: d as u64,
        context: context as u64,
        scale_bits: scale.to_bits(),
    });
    let mut steps = vec![(t, pos)];
    if pos + t < context {
        steps.push((1, pos + t));
    }
    let mut cases = Vec::new();
    for (t, pos) in steps {
        let s = step(rng, (heads, kv_heads, d), (t, pos, context), values, &attrs);
        let bound = cuda_bound(&s, (heads, kv_heads, d), (t, pos), scale);
        let written = Written::exact_f32(&s.out, Owner::Rows { row_bytes: 4 * d })
            .compared(Compare::Exact, Compare::Abs(bound));
        let in_place = rng.range(0, 2) == 0;
        let out = if in_place {
            Buffer::in_place(0, written)
        } else {
            Buffer::output(unwritten(4 * t * heads * d), written)
        };
        cases.push(Case {
            kind: kind.clone(),
            t,
            pos,
            rows: t * heads,
            buffers: vec![
                Buffer::input(f32_bytes(&s.q)),
                Buffer::input(f32_bytes(&head_major(&s.kc_after, kv_heads, d))),
                Buffer::input(f32_bytes(&head_major(&s.vc_after, kv_heads, d))),
                out,
            ],
            note: format!("{values:?} values, explicit scale {explicit}, in place {in_place}"),
        });
    }
    cases
}

/// `Attention` cases.
pub fn attention(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for &shape in &SHAPES {
        for &t in &[1, 2, 37] {
            for &pos in &[0, 1, 7, 9] {
                let context = pos + t + 1 + rng.range(0, 2);
                cases.extend(attention_cases(
                    rng,
                    shape,
                    (t, pos, context),
                    Values::Normal,
                ));
            }
        }
        // The cache exactly full after the step.
        cases.extend(attention_cases(rng, shape, (2, 5, 7), Values::Normal));
        for values in [Values::Large, Values::Degenerate, Values::Special] {
            cases.extend(attention_cases(rng, shape, (3, 4, 9), values));
        }
    }
    for _ in 0..150 {
        let shape = if rng.range(0, 2) == 0 {
            let kv = rng.range(1, 4);
            (kv * rng.range(1, 4), kv, rng.range(1, 70))
        } else {
            rng.pick(&SHAPES)
        };
        let opts = [1, 2, 37, rng.range(1, 9)];
        let t = rng.pick(&opts);
        let opts = [0, rng.range(1, 40), rng.range(1, 200)];
        let pos = rng.pick(&opts);
        let context = pos + t + rng.range(0, 20);
        let values = match rng.next() % 10 {
            0 => Values::Large,
            1 => Values::Special,
            _ => Values::Normal,
        };
        cases.extend(attention_cases(rng, shape, (t, pos, context), values));
    }
    // The largest context that keeps the CPU kernel's scores on the stack, filled to the end.
    let c = SCORES_ON_STACK_MAX_CONTEXT as usize;
    cases.extend(attention_cases(
        rng,
        (4, 2, 32),
        (2, c - 3, c),
        Values::Normal,
    ));
    // Past the stack limit, the CPU kernel recomputes scores in tiles of TILE_KEYS keys; tile edges.
    let c = c + 100;
    let tile = TILE_KEYS as usize;
    for &(shape, t, pos) in &[
        ((4, 2, 32), 1, 0),
        ((4, 2, 32), 2, tile - 2),
        ((4, 2, 32), 37, 2 * tile - 20),
        ((2, 1, 17), 3, 3 * tile - 1),
        ((20, 5, 128), 2, 2500),
        ((4, 2, 32), 37, c - 38),
    ] {
        cases.extend(attention_cases(rng, shape, (t, pos, c), Values::Normal));
    }
    cases.extend(attention_cases(
        rng,
        (4, 2, 32),
        (2, tile + 5, c),
        Values::Large,
    ));
    cases
}
