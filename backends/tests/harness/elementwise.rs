//! Cases of the row-wise kernels that compute element by element, all exact on both backends but
//! `SiluMul` on CUDA (within 3 ulps):
//! `Embedding` (f32, bf16 and f16 tables, the 16-bit ones in `layout` order and in index order;
//! random bit patterns so that a copy must move bits), `Relu2Mul`,
//! `SiluMul`, `Add` and `BiasAdd` (special values, in place), and `Rope` (pos > 0, several thetas, scaled
//! frequencies, in place).

use super::norm::rows;
use super::reference::{eval_f32, f32_bytes, i64_bytes, tensor, tensor_of, u16_bytes, unwritten};
use super::{Buffer, Case, Compare, Owner, Written};
use crate::support::Rng;
use bitnet_backends::cpu::kernels::matmul_half::layout_exact;
use bitnet_backends::cpu::kernels::rope::rope_table;
use bitnet_backends::kernel::HalfFormat;
use bitnet_backends::kernel::{
    AddParams, BiasAddParams, EmbeddingParams, KernelKind, Relu2MulParams, RopeParams,
    SiluMulParams,
};
use bitnet_ir::ops::rope;
use bitnet_ir::{Attr, Attrs, Data, OpKind};

/// One `Embedding` case.
fn embedding_case(
    rng: &mut Rng,
    vocab: usize,
    hidden: usize,
    t: usize,
    half: Option<HalfFormat>,
    in_order: bool,
) -> Case {
    // Random bit patterns (NaN payloads included): a copy must move bits. An f16 table: every
    // finite f16, subnormals and both zeros included.
    let table: Vec<f32> = (0..vocab * hidden)
        .map(|_| {
            let bits = rng.next() as u32;
            match half {
                None => f32::from_bits(bits),
                Some(HalfFormat::Bf16) => f32::from_bits(bits & 0xffff_0000),
                Some(HalfFormat::F16) => {
                    let h = half::f16::from_bits(bits as u16);
                    if h.is_finite() {
                        h.to_f32()
                    } else {
                        half::f16::from_bits(bits as u16 & 0x83ff).to_f32()
                    }
                }
            }
        })
        .collect();
    let mut ids: Vec<i64> = (0..t).map(|_| rng.range(0, vocab - 1) as i64).collect();
    if t > 1 {
        ids[0] = 0;
        ids[t - 1] = vocab as i64 - 1;
    }
    let want = eval_f32(
        OpKind::Embedding,
        &[
            &tensor(vec![vocab, hidden], &table),
            &tensor_of(vec![t], Data::I64(ids.clone())),
        ],
        &Attrs::new(),
        vec![t, hidden],
    );
    let table = match half {
        Some(format) if in_order => {
            u16_bytes(&table.iter().map(|&x| format.bits(x)).collect::<Vec<u16>>())
        }
        Some(format) => u16_bytes(&layout_exact(&table, hidden, format).expect("exact values")),
        None => f32_bytes(&table),
    };
    Case {
        kind: KernelKind::Embedding(EmbeddingParams {
            vocab: vocab as u64,
            hidden: hidden as u64,
            half,
            in_order: in_order && half.is_some(),
        }),
        t,
        pos: 0,
        rows: t,
        buffers: vec![
            Buffer::input(table),
            Buffer::input(i64_bytes(&ids)),
            Buffer::output(
                unwritten(4 * t * hidden),
                Written::exact_f32(
                    &want,
                    Owner::Rows {
                        row_bytes: 4 * hidden,
                    },
                ),
            ),
        ],
        note: format!(
            "table {}{}",
            half.map_or("f32", HalfFormat::name),
            if in_order { " in order" } else { "" }
        ),
    }
}

/// `Embedding` cases.
pub fn embedding(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for &(vocab, hidden, t) in &[
        (1, 1, 1),
        (3, 2, 2),
        (5, 3, 37),
        (7, 4, 1),
        (2, 15, 2),
        (2, 16, 37),
        (9, 17, 3),
        (4, 63, 2),
        (4, 64, 5),
        (4, 65, 1),
        (3, 100, 37),
        (6, 2560, 2),
    ] {
        for half in [None, Some(HalfFormat::Bf16), Some(HalfFormat::F16)] {
            cases.push(embedding_case(rng, vocab, hidden, t, half, false));
            if half.is_some() {
                cases.push(embedding_case(rng, vocab, hidden, t, half, true));
            }
        }
    }
    for i in 0..240 {
        let vocab = rng.range(1, 40);
        let opts = [rng.range(1, 80), rng.range(1, 300), 2560];
        let hidden = rng.pick(&opts);
        let opts = [1, 2, 37, rng.range(1, 12)];
        let t = rng.pick(&opts);
        let formats = [None, Some(HalfFormat::Bf16), Some(HalfFormat::F16)];
        let half = formats[i % 3];
        cases.push(embedding_case(rng, vocab, hidden, t, half, i % 2 == 1));
    }
    cases
}

/// One case of a binary element-wise kernel (`Relu2Mul`, `SiluMul` or `Add`) on `[t, n]`; the output is in
/// place of operand `in_place` when given.
fn binary_case(
    op: OpKind,
    t: usize,
    n: usize,
    (a, b): (&[f32], &[f32]),
    in_place: Option<usize>,
) -> Case {
    let want = eval_f32(
        op,
        &[&tensor(vec![t, n], a), &tensor(vec![t, n], b)],
        &Attrs::new(),
        vec![t, n],
    );
    let kind = match op {
        OpKind::Relu2Mul => KernelKind::Relu2Mul(Relu2MulParams { n: n as u64 }),
        OpKind::SiluMul => KernelKind::SiluMul(SiluMulParams { n: n as u64 }),
        _ => KernelKind::Add(AddParams { n: n as u64 }),
    };
    let mut written = Written::exact_f32(&want, Owner::Rows { row_bytes: 4 * n });
    if op == OpKind::SiluMul {
        // The CUDA kernel's own f64 `exp` is not correctly rounded (bound on `KernelKind::SiluMul`).
        written = written.compared(Compare::Exact, Compare::Ulps(3));
    }
    let out = match in_place {
        Some(of) => Buffer::in_place(of, written),
        None => Buffer::output(unwritten(4 * t * n), written),
    };
    Case {
        kind,
        t,
        pos: 0,
        rows: t,
        buffers: vec![
            Buffer::input(f32_bytes(a)),
            Buffer::input(f32_bytes(b)),
            out,
        ],
        note: format!("in place of operand {in_place:?}"),
    }
}

/// The cases of a binary element-wise kernel; `in_place` lists the operands the output may be.
fn binary_cases(rng: &mut Rng, op: OpKind, in_place: &[usize]) -> Vec<Case> {
    let mut cases = Vec::new();
    let place = |rng: &mut Rng| {
        let i = rng.range(0, in_place.len());
        in_place.get(i).copied()
    };
    for &t in &[1usize, 2, 37] {
        for &n in &[1usize, 15, 63, 64, 65, 200, 256, 2560] {
            let (a, b) = (rows(rng, t, n), rows(rng, t, n));
            let p = place(rng);
            cases.push(binary_case(op, t, n, (&a, &b), p));
        }
    }
    for _ in 0..60 {
        let (t, n) = (rng.range(1, 8), rng.range(1, 300));
        let (a, b) = (rows(rng, t, n), rows(rng, t, n));
        let p = place(rng);
        cases.push(binary_case(op, t, n, (&a, &b), p));
    }
    // Every pair of special values: NaN (a negative one and a payload included), ±0, ±inf,
    // overflow and subnormal results.
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7fa0_0001),
        -0.0,
        0.0,
        f32::NEG_INFINITY,
        f32::INFINITY,
        -1.0,
        1e20,
        1e-20,
        f32::from_bits(1),
        3.0,
        3e38,
    ];
    let a: Vec<f32> = specials.iter().flat_map(|&x| [x; 13]).collect();
    let b: Vec<f32> = (0..13).flat_map(|_| specials).collect();
    cases.push(binary_case(op, 1, a.len(), (&a, &b), None));
    cases
}

/// `Relu2Mul` cases (the output may be the gate).
pub fn relu2_mul(rng: &mut Rng) -> Vec<Case> {
    binary_cases(rng, OpKind::Relu2Mul, &[0])
}

/// `SiluMul` cases (the output may be either operand): the shared shapes (T = 1, 2 and 37, awkward
/// n) and every pair of special values, the gate's NaN, ±inf and large |x| included.
pub fn silu_mul(rng: &mut Rng) -> Vec<Case> {
    binary_cases(rng, OpKind::SiluMul, &[0, 1])
}

/// `Add` cases (the output may be either operand).
pub fn add(rng: &mut Rng) -> Vec<Case> {
    binary_cases(rng, OpKind::Add, &[0, 1])
}

/// One `BiasAdd` case on `[t, n]`, the output in place of `x` when `in_place`.
fn bias_add_case(t: usize, n: usize, x: &[f32], bias: &[f32], in_place: bool) -> Case {
    let want = eval_f32(
        OpKind::Add,
        &[&tensor(vec![t, n], x), &tensor(vec![n], bias)],
        &Attrs::new(),
        vec![t, n],
    );
    let written = Written::exact_f32(&want, Owner::Rows { row_bytes: 4 * n });
    let out = if in_place {
        Buffer::in_place(0, written)
    } else {
        Buffer::output(unwritten(4 * t * n), written)
    };
    Case {
        kind: KernelKind::BiasAdd(BiasAddParams { n: n as u64 }),
        t,
        pos: 0,
        rows: t,
        buffers: vec![
            Buffer::input(f32_bytes(x)),
            Buffer::input(f32_bytes(bias)),
            out,
        ],
        note: format!("in place {in_place}"),
    }
}

/// `BiasAdd` cases: the shared shapes (T = 1, 2 and 37, n around the vector widths), random ones,
/// and every pair of special values (one bias row of specials under rows of each special).
pub fn bias_add(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for &t in &[1usize, 2, 37] {
        for &n in &[1usize, 4, 7, 8, 15, 63, 64, 65, 200, 2560] {
            let (x, b) = (rows(rng, t, n), rows(rng, 1, n));
            let in_place = rng.range(0, 2) == 0;
            cases.push(bias_add_case(t, n, &x, &b, in_place));
        }
    }
    for _ in 0..60 {
        let (t, n) = (rng.range(1, 8), rng.range(1, 300));
        let (x, b) = (rows(rng, t, n), rows(rng, 1, n));
        let in_place = rng.range(0, 2) == 0;
        cases.push(bias_add_case(t, n, &x, &b, in_place));
    }
    let specials = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7fa0_0001),
        -0.0,
        0.0,
        f32::NEG_INFINITY,
        f32::INFINITY,
        -1.0,
        1e20,
        1e-20,
        f32::from_bits(1),
        3.0,
        3e38,
    ];
    let x: Vec<f32> = specials.iter().flat_map(|&v| [v; 13]).collect();
    cases.push(bias_add_case(13, 13, &x, &specials, false));
    cases
}

/// One `Rope` case; `scaled` replaces theta's frequencies by each divided by a factor in [1, 9)
/// (an `inv_freq` attribute, as Llama 3's scaled rope gives).
fn rope_case(
    rng: &mut Rng,
    heads: usize,
    d: usize,
    t: usize,
    pos: usize,
    theta: f64,
    scaled: bool,
) -> Case {
    let width = heads * d;
    let context = pos + t + rng.range(0, 5);
    let x = rng.values(t * width);
    let mut attrs = Attrs::new()
        .with("head_dim", Attr::Int(d as i64))
        .with("theta", Attr::Float(theta));
    if scaled {
        let freqs = rope::default_inv_freq(theta, d)
            .into_iter()
            .map(|f| f64::from(f / (1.0 + 8.0 * rng.unit().abs())))
            .collect();
        attrs = attrs.with("inv_freq", Attr::Floats(freqs));
    }
    let want = eval_f32(
        OpKind::Rope,
        &[
            &tensor(vec![t, width], &x),
            &tensor_of(vec![], Data::I64(vec![pos as i64])),
        ],
        &attrs,
        vec![t, width],
    );
    let table = rope_table(context, &rope::inv_freq(&attrs));
    assert_eq!(table.len(), context * d);
    let in_place = rng.range(0, 2) == 0;
    let written = Written::exact_f32(
        &want,
        Owner::Rows {
            row_bytes: 4 * width,
        },
    );
    let out = if in_place {
        Buffer::in_place(0, written)
    } else {
        Buffer::output(unwritten(4 * t * width), written)
    };
    Case {
        kind: KernelKind::Rope(RopeParams {
            width: width as u64,
            head_dim: d as u64,
        }),
        t,
        pos,
        rows: t,
        buffers: vec![
            Buffer::input(f32_bytes(&x)),
            Buffer::input(f32_bytes(&table)),
            out,
        ],
        note: format!("theta {theta}, scaled {scaled}, context {context}, in place {in_place}"),
    }
}

/// `Rope` cases.
pub fn rope(rng: &mut Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for &(heads, d, t, pos) in &[
        (1, 2, 1, 0),
        (2, 4, 2, 0),
        (3, 6, 37, 0),
        (1, 8, 1, 5),
        (4, 10, 2, 100),
        (20, 128, 37, 0),
        (20, 128, 1, 4000),
        (5, 64, 37, 1000),
        (2, 32, 2, 3),
        (3, 18, 1, 77),
    ] {
        cases.push(rope_case(rng, heads, d, t, pos, 500000.0, false));
        cases.push(rope_case(rng, heads, d, t, pos, 10000.0, false));
        cases.push(rope_case(rng, heads, d, t, pos, 500000.0, true));
    }
    for _ in 0..120 {
        let opts = [
            2,
            4,
            6,
            8,
            10,
            12,
            18,
            32,
            34,
            64,
            128,
            2 * rng.range(1, 70),
        ];
        let d = rng.pick(&opts);
        let heads = rng.range(1, 20);
        let opts = [1, 2, 37, rng.range(1, 10)];
        let t = rng.pick(&opts);
        let opts = [0, rng.range(1, 50), rng.range(0, 5000)];
        let pos = rng.pick(&opts);
        let opts = [10000.0, 500000.0, 1.0 + f64::from(rng.unit().abs()) * 1e6];
        let theta = rng.pick(&opts);
        let scaled = rng.range(0, 3) == 0;
        cases.push(rope_case(rng, heads, d, t, pos, theta, scaled));
    }
    cases
}
