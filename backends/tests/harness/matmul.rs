//! Cases of the matmul kernels, whose rows are output features (`n`), each looping over all T
//! tokens: `TernaryMatmul` (exact; K with every tail of the 64-element blocks and the 16-byte
//! vectors, n not a multiple of the 4-row warp tile, residual off, on and in place), `MatmulNt` (f32
//! and bf16 weights), `MatmulNtHalf` (f16 and bf16, K with every remainder of 8, 16, 32 and 128)
//! and `MatmulI8` (CPU only, exact).

use super::compare::{Compare, relative_to_max};
use super::reference::{eval_f32, f32_bytes, i8_bytes, tensor, tensor_of, u16_bytes, unwritten};
use super::{Buffer, Case, Owner, Written};
use crate::support::Rng;
use bitnet_backends::cpu::kernels::matmul_half::{self, HalfFormat};
use bitnet_backends::cpu::kernels::{matmul_i8, matmul_q4};
use bitnet_backends::cpu::{PACK_BLOCK, PACK_ORDER};
use bitnet_backends::kernel::{
    KernelKind, MatmulI8Params, MatmulNtHalfParams, MatmulNtParams, MatmulQ4Params,
    TernaryMatmulParams,
};
use bitnet_ir::ops::ternary_matmul_packed::{pack_row, padded_k};
use bitnet_ir::{Attr, Attrs, Data, OpKind};

/// The float matmuls (`MatmulNt`, `MatmulNtHalf`) on both backends: an f32 sum of k products in
/// SIMD or warp lanes has a relative error around 1e-7·√k of the sum of |products|, two orders of
/// magnitude below this bound on random data, relative to the largest output of the case.
const FLOAT_MATMUL: f64 = 1e-5;

/// `n × k` random ternary weights, sometimes all +1 or all −1.
fn ternary_weights(rng: &mut Rng, n: usize, k: usize) -> Vec<i8> {
    let mode = rng.range(0, 7);
    (0..n * k)
        .map(|_| match mode {
            0 => 1,
            1 => -1,
            _ => rng.range(0, 2) as i8 - 1,
        })
        .collect()
}

/// How a `TernaryMatmul` case treats its residual.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Residual {
    None,
    Separate,
    /// `out` is the residual buffer itself.
    InPlace,
}

/// One `TernaryMatmul` case; `xq` and `w` given, or drawn when `None`.
fn ternary_case(
    rng: &mut Rng,
    (t, k, n): (usize, usize, usize),
    residual: Residual,
    fixed: Option<(Vec<i8>, Vec<i8>)>,
) -> Case {
    let (xq, w) = fixed.unwrap_or_else(|| {
        // Activations: mostly uniform i8 with the extremes forced in.
        let xq = (0..t * k)
            .map(|_| match rng.range(0, 15) {
                0 => -128,
                1 => 127,
                _ => rng.next() as i8,
            })
            .collect();
        (xq, ternary_weights(rng, n, k))
    });
    let xs: Vec<f32> = (0..t).map(|_| 0.01 + 10.0 * rng.unit().abs()).collect();
    let ws = 0.05 + rng.unit().abs();
    let res: Vec<f32> = (0..t * n).map(|_| rng.unit() * 4.0).collect();
    let row_bytes = padded_k(k, PACK_BLOCK).expect("a valid block") / 4;
    let mut packed = vec![0u8; n * row_bytes];
    for (row, dst) in w.chunks(k).zip(packed.chunks_mut(row_bytes)) {
        pack_row(row, PACK_BLOCK, PACK_ORDER, dst);
    }
    let xqt = tensor_of(vec![t, k], Data::I8(xq.clone()));
    let xst = tensor(vec![t, 1], &xs);
    let wt = tensor_of(vec![n, row_bytes], Data::U8(packed.clone()));
    let wst = tensor(vec![1], &[ws]);
    let rt = tensor(vec![t, n], &res);
    let mut inputs = vec![&xqt, &xst, &wt, &wst];
    if residual != Residual::None {
        inputs.push(&rt);
    }
    let attrs = Attrs::new()
        .with("block", Attr::Int(PACK_BLOCK as i64))
        .with("k", Attr::Int(k as i64))
        .with("order", Attr::Str(PACK_ORDER.name().into()));
    let want = eval_f32(OpKind::TernaryMatmulPacked, &inputs, &attrs, vec![t, n]);
    let mut buffers = vec![
        Buffer::input(i8_bytes(&xq)),
        Buffer::input(f32_bytes(&xs)),
        Buffer::input(packed),
        Buffer::input(f32_bytes(&[ws])),
    ];
    // Exact on both backends: an i32 sum and two f32 operations (+ the residual).
    let written = Written::exact_f32(&want, Owner::Columns { n });
    match residual {
        Residual::None => buffers.push(Buffer::output(unwritten(4 * t * n), written)),
        Residual::Separate => {
            buffers.push(Buffer::input(f32_bytes(&res)));
            buffers.push(Buffer::output(unwritten(4 * t * n), written));
        }
        Residual::InPlace => {
            buffers.push(Buffer::input(f32_bytes(&res)));
            buffers.push(Buffer::in_place(4, written));
        }
    }
    Case {
        kind: KernelKind::TernaryMatmul(TernaryMatmulParams {
            k: k as u64,
            n: n as u64,
            residual: residual != Residual::None,
        }),
        t,
        pos: 0,
        rows: n,
        buffers,
        note: format!("residual {residual:?}"),
    }
}

/// `TernaryMatmul` cases. Each kind (K, n, residual) runs at T = 1, 2 and 37; each K of the grid
/// meets two of the row counts, so that every K and every n occurs without compiling the whole
/// product (the CUDA host build takes a fifth of a second per kind). The CPU backend's own test
/// (`kernels_ternary.rs`) covers the whole product for each of its dot strategies.
pub fn ternary(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    let ns = [1, 3, 64, 100];
    for (i, &k) in [1, 15, 63, 64, 65, 200, 256, 2560].iter().enumerate() {
        for n in [ns[i % 4], ns[(i + 1) % 4]] {
            let res = rng.pick(&[Residual::Separate, Residual::InPlace]);
            for residual in [Residual::None, res] {
                for t in [1, 2, 37] {
                    cases.push(ternary_case(rng, (t, k, n), residual, None));
                }
            }
        }
    }
    let pool: Vec<(usize, usize, bool)> = (0..8)
        .map(|_| (rng.range(1, 400), rng.range(1, 70), rng.range(0, 1) == 0))
        .collect();
    for _ in 0..40 {
        let (k, n, residual) = rng.pick(&pool);
        let residual = match (residual, rng.range(0, 1)) {
            (false, _) => Residual::None,
            (true, 0) => Residual::Separate,
            (true, _) => Residual::InPlace,
        };
        let t = rng.range(1, 9);
        cases.push(ternary_case(rng, (t, k, n), residual, None));
    }
    // The largest sums: all activations −128 or 127 against all +1 or −1 weights.
    for x in [-128i8, 127] {
        for w in [-1i8, 1] {
            let (t, k, n) = (5, 2560 + 17, 3);
            let fixed = (vec![x; t * k], vec![w; n * k]);
            cases.push(ternary_case(rng, (t, k, n), Residual::None, Some(fixed)));
        }
    }
    cases
}

/// `w` (`[n, k]`) transposed, as `nn.matmul` takes it.
fn transposed(w: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut wt = vec![0f32; k * n];
    for r in 0..n {
        for c in 0..k {
            wt[c * n + r] = w[r * k + c];
        }
    }
    wt
}

/// The interpreter's `x · wᵀ` (f64 sums rounded once).
fn matmul_reference(x: &[f32], w: &[f32], (t, k, n): (usize, usize, usize)) -> Vec<f32> {
    eval_f32(
        OpKind::MatMul,
        &[
            &tensor(vec![t, k], x),
            &tensor(vec![k, n], &transposed(w, n, k)),
        ],
        &Attrs::new(),
        vec![t, n],
    )
}

/// A float matmul case with weights `w_bytes` whose values are `w`.
fn float_case(
    kind: KernelKind,
    x: &[f32],
    w: &[f32],
    w_bytes: Vec<u8>,
    (t, k, n): (usize, usize, usize),
) -> Case {
    let want = matmul_reference(x, w, (t, k, n));
    let within = relative_to_max(&want, FLOAT_MATMUL);
    Case {
        kind,
        t,
        pos: 0,
        rows: n,
        buffers: vec![
            Buffer::input(f32_bytes(x)),
            Buffer::input(w_bytes),
            Buffer::output(
                unwritten(4 * t * n),
                Written::exact_f32(&want, Owner::Columns { n }).compared(within, within),
            ),
        ],
        note: format!("within {within:?}"),
    }
}

/// `MatmulNt` cases (weights f32, or exactly bf16 values stored as bf16).
pub fn matmul_nt(rng: &mut Rng) -> Vec<Case> {
    let case = |rng: &mut Rng, (k, n, t): (usize, usize, usize), bf16: bool| {
        let x = rng.values(t * k);
        let mut w = rng.values(n * k);
        if bf16 {
            w.iter_mut()
                .for_each(|v| *v = f32::from_bits(v.to_bits() & 0xffff_0000));
        }
        let bytes = if bf16 {
            u16_bytes(
                &w.iter()
                    .map(|v| (v.to_bits() >> 16) as u16)
                    .collect::<Vec<_>>(),
            )
        } else {
            f32_bytes(&w)
        };
        let kind = KernelKind::MatmulNt(MatmulNtParams {
            k: k as u64,
            n: n as u64,
            bf16,
        });
        float_case(kind, &x, &w, bytes, (t, k, n))
    };
    let mut cases = Vec::new();
    for &shape in &[
        (1, 1, 1),
        (1, 7, 2),
        (3, 5, 37),
        (4, 3, 1),
        (15, 2, 2),
        (16, 9, 1),
        (17, 4, 3),
        (255, 33, 2),
        (256, 8, 37),
        (2560, 19, 1),
        (2560, 5, 37),
    ] {
        for bf16 in [false, true] {
            cases.push(case(rng, shape, bf16));
        }
    }
    for _ in 0..120 {
        let opts = [1, 3, 255, 2560, rng.range(1, 40), rng.range(1, 600)];
        let k = rng.pick(&opts);
        let n = rng.range(1, 40);
        let opts = [1, 2, 37, rng.range(1, 6)];
        let t = rng.pick(&opts);
        let bf16 = rng.range(0, 1) == 1;
        cases.push(case(rng, (k, n, t), bf16));
    }
    cases
}

/// Sizes with every remainder the lm_head kernels handle: k mod 8, 16, 32, 128 and tiny k.
const HEAD_SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 2),
    (3, 5, 3),
    (7, 3, 1),
    (8, 2, 2),
    (9, 4, 1),
    (15, 2, 3),
    (16, 9, 1),
    (17, 4, 2),
    (31, 3, 1),
    (32, 5, 2),
    (33, 6, 3),
    (127, 4, 1),
    (128, 3, 2),
    (129, 5, 5),
    (255, 33, 2),
    (2560, 19, 1),
    (2560, 7, 37),
];

/// `MatmulNtHalf` cases, compared with the interpreter's matmul over the rounded weights.
pub fn matmul_nt_half(rng: &mut Rng) -> Vec<Case> {
    let case = |rng: &mut Rng, (k, n, t): (usize, usize, usize), format: HalfFormat| {
        let x = rng.values(t * k);
        let mut w = rng.values(n * k);
        // Subnormal f16 values, a signed zero and f16's largest value.
        if n * k > 4 {
            w[..4].copy_from_slice(&[3.0e-6, -5.9e-8, -0.0, 65504.0]);
        }
        let bits = matmul_half::layout(&w, k, format).expect("weights in range");
        let rounded: Vec<f32> = w.iter().map(|&v| format.value(format.bits(v))).collect();
        let kind = KernelKind::MatmulNtHalf(MatmulNtHalfParams {
            k: k as u64,
            n: n as u64,
            format,
        });
        float_case(kind, &x, &rounded, u16_bytes(&bits), (t, k, n))
    };
    let mut cases = Vec::new();
    for format in [HalfFormat::F16, HalfFormat::Bf16] {
        for &shape in HEAD_SHAPES {
            cases.push(case(rng, shape, format));
        }
        for _ in 0..60 {
            let opts = [1, 8, 255, 2560, rng.range(1, 40), rng.range(1, 600)];
            let k = rng.pick(&opts);
            let n = rng.range(1, 40);
            let opts = [1, 2, 37, rng.range(1, 6)];
            let t = rng.pick(&opts);
            cases.push(case(rng, (k, n, t), format));
        }
    }
    cases
}

/// One `MatmulI8` case on activations `xq` (scales drawn) and weights `w` quantized per row.
fn i8_case(
    rng: &mut Rng,
    xq: Vec<i8>,
    (wq, ws): (Vec<u8>, Vec<f32>),
    (t, k, n): (usize, usize, usize),
) -> Case {
    let q: Vec<f32> = wq.iter().map(|&b| f32::from(b) - 128.0).collect();
    let kind = KernelKind::MatmulI8(MatmulI8Params {
        k: k as u64,
        n: n as u64,
    });
    let weights = vec![Buffer::input(wq), Buffer::input(f32_bytes(&ws))];
    integer_head_case(rng, kind, xq, &q, &ws, weights, (t, k, n))
}

/// A case of an integer lm_head kernel `kind` (`MatmulI8`, `MatmulQ4`): activations `xq` with
/// drawn scales `xs`, then the kernel's `weights` buffers, then the output `f32(Σ xq·q) / xs[t] ·
/// ws[n]` for the integer weights `q` (`[n, k]`, exact in f32) and the row scales `ws`.
fn integer_head_case(
    rng: &mut Rng,
    kind: KernelKind,
    xq: Vec<i8>,
    q: &[f32],
    ws: &[f32],
    weights: Vec<Buffer>,
    (t, k, n): (usize, usize, usize),
) -> Case {
    let xs: Vec<f32> = (0..t).map(|_| 127.0 / (rng.unit().abs() + 0.01)).collect();
    // The interpreter's matmul sums the integer products exactly in f64 and rounds once, as the
    // kernel's i32 → f32 conversion does.
    let xf: Vec<f32> = xq.iter().map(|&v| f32::from(v)).collect();
    let products = matmul_reference(&xf, q, (t, k, n));
    // An i32 sum has no −0: adding +0 turns the f64 sum of products that are all −0 into +0.
    let acc = eval_f32(
        OpKind::Add,
        &[&tensor(vec![t, n], &products), &tensor(vec![1], &[0.0])],
        &Attrs::new(),
        vec![t, n],
    );
    let scaled = eval_f32(
        OpKind::Div,
        &[&tensor(vec![t, n], &acc), &tensor(vec![t, 1], &xs)],
        &Attrs::new(),
        vec![t, n],
    );
    let want = eval_f32(
        OpKind::Mul,
        &[&tensor(vec![t, n], &scaled), &tensor(vec![n], ws)],
        &Attrs::new(),
        vec![t, n],
    );
    let mut buffers = vec![Buffer::input(i8_bytes(&xq)), Buffer::input(f32_bytes(&xs))];
    buffers.extend(weights);
    buffers.push(Buffer::output(
        unwritten(4 * t * n),
        // The CUDA backend has no integer lm_head: its runner checks the refusal instead.
        Written::exact_f32(&want, Owner::Columns { n }).compared(Compare::Exact, Compare::Exact),
    ));
    Case {
        kind,
        t,
        pos: 0,
        rows: n,
        buffers,
        note: String::new(),
    }
}

/// Random int8 activations of `t` tokens, the first two −128 and 127 (when there are three or
/// more).
fn random_activations(rng: &mut Rng, t: usize, k: usize) -> Vec<i8> {
    let mut xq: Vec<i8> = (0..t * k).map(|_| rng.range(0, 255) as u8 as i8).collect();
    if t * k > 2 {
        xq[0] = -128;
        xq[1] = 127;
    }
    xq
}

/// `MatmulI8` cases.
pub fn matmul_i8(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    let random = |rng: &mut Rng, (k, n, t): (usize, usize, usize)| {
        let xq = random_activations(rng, t, k);
        let w = rng.values(n * k);
        let quantized = matmul_i8::quantize_rows(&w, k);
        i8_case(rng, xq, quantized, (t, k, n))
    };
    for &shape in HEAD_SHAPES {
        cases.push(random(rng, shape));
    }
    for _ in 0..60 {
        let opts = [1, 16, 255, 2560, rng.range(1, 40), rng.range(1, 600)];
        let k = rng.pick(&opts);
        let n = rng.range(1, 40);
        let opts = [1, 2, 37, rng.range(1, 6)];
        let t = rng.pick(&opts);
        cases.push(random(rng, (k, n, t)));
    }
    // Every product at its largest magnitude: 127·128·k must not wrap the sum.
    let (k, n, t) = (4096usize, 3usize, 2usize);
    let mut xq = vec![-128i8; t * k];
    xq[k..].iter_mut().for_each(|x| *x = 127);
    let mut wq = vec![1u8; n * k]; // q = −127
    wq[k..2 * k].iter_mut().for_each(|b| *b = 255); // q = 127
    cases.push(i8_case(rng, xq, (wq, vec![1.0; n]), (t, k, n)));
    cases
}

/// One `MatmulQ4` case: activations `xq` (scales drawn) and weights `w` (`[n, k]`) quantized per row
/// by `matmul_q4::quantize_row`.
fn q4_case(rng: &mut Rng, xq: Vec<i8>, w: &[f32], (t, k, n): (usize, usize, usize)) -> Case {
    use bitnet_runtime::native::matmul_q4::{multipliers, nibble_bytes};
    let (nb, mb) = (nibble_bytes(k), multipliers(k));
    let mut nibbles = vec![0u8; n * nb];
    let mut mults = vec![0u8; n * mb];
    let mut scales = Vec::with_capacity(n);
    let mut corrections = Vec::with_capacity(n);
    for (r, row) in w.chunks(k).enumerate() {
        let q = matmul_q4::quantize_row(
            row,
            &mut nibbles[r * nb..][..nb],
            &mut mults[r * mb..][..mb],
        );
        scales.push(q.scale);
        corrections.push(q.correction);
    }
    // The integer weights m_g·q (at most 504 in magnitude: exact in f32): each weight's value at a
    // row scale of 1.
    let q: Vec<f32> = (0..n * k)
        .map(|e| {
            let r = e / k;
            matmul_q4::dequantize(&nibbles[r * nb..][..nb], &mults[r * mb..][..mb], 1.0, e % k)
        })
        .collect();
    let corr_bytes: Vec<u8> = corrections.iter().flat_map(|c| c.to_le_bytes()).collect();
    let kind = KernelKind::MatmulQ4(MatmulQ4Params {
        k: k as u64,
        n: n as u64,
    });
    let weights = vec![
        Buffer::input(nibbles),
        Buffer::input(mults),
        Buffer::input(f32_bytes(&scales)),
        Buffer::input(corr_bytes),
    ];
    integer_head_case(rng, kind, xq, &q, &scales, weights, (t, k, n))
}

/// `MatmulQ4` cases: the head shapes, random shapes (K across and within chunks of 128 and groups
/// of 32), and the largest products at a large K.
pub fn matmul_q4(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    let random = |rng: &mut Rng, (k, n, t): (usize, usize, usize)| {
        let xq = random_activations(rng, t, k);
        let w = rng.values(n * k);
        q4_case(rng, xq, &w, (t, k, n))
    };
    for &shape in HEAD_SHAPES {
        cases.push(random(rng, shape));
    }
    for _ in 0..60 {
        let opts = [
            1,
            32,
            127,
            128,
            129,
            2560,
            rng.range(1, 40),
            rng.range(1, 600),
        ];
        let k = rng.pick(&opts);
        let n = rng.range(1, 40);
        let opts = [1, 2, 37, rng.range(1, 6)];
        let t = rng.pick(&opts);
        cases.push(random(rng, (k, n, t)));
    }
    // Rows whose weights all quantize to ±7 at the largest multiplier, against ±128 activations.
    let (k, n, t) = (8192usize, 2usize, 2usize);
    let mut xq = vec![-128i8; t * k];
    xq[k..].iter_mut().for_each(|x| *x = 127);
    let mut w = vec![1.0f32; n * k];
    w[k..].iter_mut().for_each(|x| *x = -1.0);
    cases.push(q4_case(rng, xq, &w, (t, k, n)));
    cases
}
