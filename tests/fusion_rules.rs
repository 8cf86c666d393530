//! Property tests: each fusion pass preserves the interpreter's result bit for bit.
//!
//! For each pattern (`fuse-norm-quant`, `fuse-relu2-mul`, `fuse-silu-mul`, `fuse-residual`) a case builds a small random
//! program around it (sizes, element types, broadcast shapes, operand order, epsilons and the number
//! of act_quants sharing a norm all vary), runs the reference interpreter before and after the pass,
//! requires the fusion to happen, and compares the results' bytes: the fused ops are defined to round
//! exactly as the unfused sequences do, so nothing may differ, not even the sign of a zero. Inputs mix
//! ordinary values with zeros of both signs, tiny and huge magnitudes (overflow to inf) and halves
//! (act_quant ties).
//!
//! On the real model: hf-tiny (packed) after `-O` has the fused shape the backends expect (counted
//! below) and gives the same logits, bit for bit, as the pipeline without the fusion passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_ir::{Data, ElemType, Module, OpKind, Tensor, interp, text};
use bitnet_passes::{DEFAULT_PIPELINE, PassContext, PassManager, parse_pipeline};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// A float input value: mostly ordinary, sometimes a zero, a tie, a tiny or a huge magnitude.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -4.0f32..4.0,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => (-300i32..300).prop_map(|i| i as f32 / 2.0),
        1 => -1e-30f32..1e-30,
        1 => -1e25f32..1e25,
    ]
}

fn elem_type() -> impl Strategy<Value = ElemType> {
    prop_oneof![
        3 => Just(ElemType::F32),
        1 => Just(ElemType::BF16),
        1 => Just(ElemType::F16),
    ]
}

fn tensor(shape: &[usize], elem: ElemType, values: &[f32]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = values.iter().copied().cycle().take(n).collect();
    Tensor::new(shape.to_vec(), Data::from_f32(elem, v)).unwrap()
}

fn count(m: &Module, kind: OpKind) -> usize {
    m.functions
        .iter()
        .map(|f| f.op_order().filter(|&o| f.op(o).kind == kind).count())
        .sum()
}

/// Runs `pass` on `src` and checks the fused program's results are byte-identical; returns the
/// module after the pass.
fn check(src: &str, pass: &str, inputs: &[Tensor]) -> Result<Module, TestCaseError> {
    let mut m = bitnet_ir::parse_and_verify(src, "case.bir")
        .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
    let store = bitnet_ir::NoWeights;
    let before = interp::run(&m, "main", inputs, &store)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
    let mut cx = PassContext::new(None);
    let mut pm = PassManager::new(parse_pipeline(pass).unwrap());
    pm.verify_each = true;
    pm.run(&mut m, &mut cx)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let after = interp::run(&m, "main", inputs, &store)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{}", text::print_module(&m))))?;
    prop_assert_eq!(before.len(), after.len());
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        prop_assert_eq!(b.ty(), a.ty());
        prop_assert!(
            b.data.to_le_bytes() == a.data.to_le_bytes(),
            "result {} differs after {}:\nbefore {:?}\nafter  {:?}\n{}\n{}",
            i,
            pass,
            b.data,
            a.data,
            src,
            text::print_module(&m)
        );
    }
    Ok(m)
}

fn ternary(t: &[i8], n: usize, k: usize) -> Tensor {
    let v: Vec<i8> = t.iter().copied().cycle().take(n * k).collect();
    Tensor::new(vec![n, k], Data::Ternary(v)).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn fuse_norm_quant_is_bit_identical(
        t in 1usize..4, k in 1usize..24, n in 1usize..5, elem in elem_type(), scalar_w in any::<bool>(),
        copies in 1usize..4, eps_norm in prop::sample::select(vec![1e-5, 1e-6, 0.0, 1.0]),
        eps in prop::sample::select(vec![1e-5, 1e-3, 0.5]),
        x in prop::collection::vec(value(), 1..64), w in prop::collection::vec(value(), 1..24),
        tw in prop::collection::vec(-1i8..=1, 1..64), gamma in 0.01f32..2.0,
    ) {
        let e = elem.name();
        let wdim = if scalar_w { 1 } else { k };
        let mut body = format!("  %n = nn.rms_norm %x, %w {{eps = {eps_norm:?}}} : tensor<{t}x{k}x{e}>\n");
        let mut rets = Vec::new();
        let mut types = Vec::new();
        for c in 0..copies {
            body += &format!(
                "  %q{c}, %s{c} = bit.act_quant %n {{eps = {eps:?}}} : tensor<{t}x{k}xi8>, tensor<{t}x1xf32>\n  %y{c} = bit.ternary_matmul %q{c}, %s{c}, %t, %g : tensor<{t}x{n}xf32>\n"
            );
            rets.extend([format!("%q{c}"), format!("%s{c}"), format!("%y{c}")]);
            types.extend([format!("tensor<{t}x{k}xi8>"), format!("tensor<{t}x1xf32>"), format!("tensor<{t}x{n}xf32>")]);
        }
        let src = format!(
            "func @main(%x: tensor<{t}x{k}x{e}>, %w: tensor<{wdim}x{e}>, %t: tensor<{n}x{k}xternary>, %g: tensor<1xf32>) -> ({}) {{\n{body}  return {}\n}}\n",
            types.join(", "),
            rets.join(", ")
        );
        let inputs = [
            tensor(&[t, k], elem, &x),
            tensor(&[wdim], elem, &w),
            ternary(&tw, n, k),
            tensor(&[1], ElemType::F32, &[gamma]),
        ];
        let m = check(&src, "fuse-norm-quant", &inputs)?;
        prop_assert_eq!(count(&m, OpKind::RmsNormQuant), 1);
        prop_assert_eq!(count(&m, OpKind::RmsNorm) + count(&m, OpKind::ActQuant), 0);
    }

    #[test]
    fn fuse_relu2_mul_is_bit_identical(
        t in 1usize..4, n in 1usize..12, elem in elem_type(),
        g_shape in 0u8..2, u_shape in 0u8..3, commuted in any::<bool>(),
        g in prop::collection::vec(value(), 1..48), u in prop::collection::vec(value(), 1..48),
    ) {
        let e = elem.name();
        // 0: [T, N], 1: [N], 2: [1].
        let shape = |s: u8| match s { 0 => vec![t, n], 1 => vec![n], _ => vec![1] };
        let dims = |s: &[usize]| s.iter().map(|d| format!("{d}x")).collect::<String>();
        let (gs, us) = (shape(g_shape), shape(u_shape));
        let out = if g_shape == 0 || u_shape == 0 { vec![t, n] } else { vec![n] };
        let (a, b) = if commuted { ("%u", "%r") } else { ("%r", "%u") };
        let src = format!(
            "func @main(%g: tensor<{}{e}>, %u: tensor<{}{e}>) -> (tensor<{}{e}>) {{\n  %r = nn.relu2 %g : tensor<{}{e}>\n  %h = nn.mul {a}, {b} : tensor<{}{e}>\n  return %h\n}}\n",
            dims(&gs), dims(&us), dims(&out), dims(&gs), dims(&out)
        );
        let m = check(&src, "fuse-relu2-mul", &[tensor(&gs, elem, &g), tensor(&us, elem, &u)])?;
        prop_assert_eq!(count(&m, OpKind::Relu2Mul), 1);
        prop_assert_eq!(count(&m, OpKind::Relu2) + count(&m, OpKind::Mul), 0);
    }

    #[test]
    fn fuse_silu_mul_is_bit_identical(
        t in 1usize..4, n in 1usize..12, commuted in any::<bool>(),
        g in prop::collection::vec(value(), 1..48), u in prop::collection::vec(value(), 1..48),
    ) {
        let (a, b) = if commuted { ("%u", "%s") } else { ("%s", "%u") };
        let ty = format!("tensor<{t}x{n}xf32>");
        let src = format!(
            "func @main(%g: {ty}, %u: {ty}) -> ({ty}) {{\n  %s = nn.silu %g : {ty}\n  %h = nn.mul {a}, {b} : {ty}\n  return %h\n}}\n"
        );
        let m = check(&src, "fuse-silu-mul", &[tensor(&[t, n], ElemType::F32, &g), tensor(&[t, n], ElemType::F32, &u)])?;
        prop_assert_eq!(count(&m, OpKind::SiluMul), 1);
        prop_assert_eq!(count(&m, OpKind::Silu) + count(&m, OpKind::Mul), 0);
    }

    #[test]
    fn fuse_residual_is_bit_identical(
        t in 1usize..4, k in 1usize..24, n in 1usize..8, commuted in any::<bool>(),
        xq in prop::collection::vec(any::<i8>(), 1..64), xs in prop::collection::vec(1e-3f32..1e7, 1..4),
        tw in prop::collection::vec(-1i8..=1, 1..64), gamma in prop_oneof![0.01f32..2.0, Just(1.0f32)],
        h in prop::collection::vec(value(), 1..32),
    ) {
        let (a, b) = if commuted { ("%y", "%h") } else { ("%h", "%y") };
        let src = format!(
            "func @main(%q: tensor<{t}x{k}xi8>, %s: tensor<{t}x1xf32>, %t: tensor<{n}x{k}xternary>, %g: tensor<f32>, %h: tensor<{t}x{n}xf32>) -> (tensor<{t}x{n}xf32>) {{\n  %y = bit.ternary_matmul %q, %s, %t, %g : tensor<{t}x{n}xf32>\n  %z = nn.add {a}, {b} : tensor<{t}x{n}xf32>\n  return %z\n}}\n"
        );
        let q: Vec<i8> = xq.iter().copied().cycle().take(t * k).collect();
        let inputs = [
            Tensor::new(vec![t, k], Data::I8(q)).unwrap(),
            tensor(&[t, 1], ElemType::F32, &xs),
            ternary(&tw, n, k),
            tensor(&[], ElemType::F32, &[gamma]),
            tensor(&[t, n], ElemType::F32, &h),
        ];
        let m = check(&src, "fuse-residual", &inputs)?;
        prop_assert_eq!(count(&m, OpKind::Add), 0);
        let f = &m.functions[0];
        prop_assert!(f.op_order().any(|o| f.op(o).kind == OpKind::TernaryMatmul && f.op(o).operands.len() == 5));
    }
}

fn hf_packed() -> (PathBuf, Vec<i64>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/packed");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let ids = r["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    (dir, ids)
}

/// The imported model after `pipeline`, and its logits on `tokens`.
fn optimized(pipeline: &str, dir: &std::path::Path, tokens: &[i64]) -> (bitnetc::Model, Tensor) {
    let opts = bitnetc::OpenOptions {
        context: Some(tokens.len() as u64),
        ..Default::default()
    };
    let mut m = opts.open(dir).unwrap();
    let opt = bitnetc::optimize(&mut m, &bitnetc::OptimizeOptions::passes(pipeline)).unwrap();
    let weights = bitnet_passes::Overlay {
        derived: &opt.derived,
        base: Some(m.weights.as_ref()),
    };
    let logits = bitnetc::prompt_logits(&m.module, &weights, tokens).unwrap();
    (m, logits)
}

#[test]
fn hf_tiny_after_o_is_fused_and_bit_identical() {
    let (dir, tokens) = hf_packed();
    let (_, unfused) = optimized("canonicalize,lower-bitlinear,canonicalize", &dir, &tokens);
    let (m, fused) = optimized(DEFAULT_PIPELINE, &dir, &tokens);
    assert!(
        unfused.data.to_le_bytes() == fused.data.to_le_bytes(),
        "fusion changed the logits"
    );
    let module = &m.module;
    // 4 layers: input, attn_sub, post_attention and ffn_sub norms each fused with their act_quant.
    assert_eq!(count(module, OpKind::RmsNormQuant), 16);
    assert_eq!(count(module, OpKind::ActQuant), 0, "every act_quant fused");
    assert_eq!(count(module, OpKind::RmsNorm), 1, "only the final norm");
    assert_eq!(count(module, OpKind::Relu2Mul), 4);
    assert_eq!(count(module, OpKind::Relu2), 0);
    assert_eq!(count(module, OpKind::TernaryMatmul), 28);
    let f = &module.functions[0];
    let matmuls: Vec<_> = f
        .op_order()
        .filter(|&o| f.op(o).kind == OpKind::TernaryMatmul)
        .map(|o| f.op(o))
        .collect();
    // o_proj and down_proj of each layer add the residual stream in their epilogue.
    assert_eq!(
        matmuls.iter().filter(|op| op.operands.len() == 5).count(),
        8
    );
    assert_eq!(count(module, OpKind::Add), 0);
    // Each projection input is quantized once: q/k/v share one source, gate/up another.
    let sources: BTreeSet<_> = matmuls.iter().map(|op| op.operands[0]).collect();
    assert_eq!(sources.len(), 16);
    for &src in &sources {
        let def = f.op(f.def_op(src).unwrap());
        assert_eq!(def.kind, OpKind::RmsNormQuant);
    }
    let mut sharing: Vec<usize> = sources
        .iter()
        .map(|s| matmuls.iter().filter(|op| op.operands[0] == *s).count())
        .collect();
    sharing.sort_unstable();
    assert_eq!(sharing, [[1; 8].as_slice(), &[2; 4], &[3; 4]].concat());
}

#[test]
fn fusion_passes_leave_unfused_ir_alone() {
    // Nothing to fuse: every pass reports no change and the text is unchanged.
    let src = "func @main(%x: tensor<2x4xf32>, %w: tensor<4xf32>) -> (tensor<2x4xf32>, tensor<2x4xi8>) {\n  %n = nn.rms_norm %x, %w {eps = 1e-5} : tensor<2x4xf32>\n  %q, %s = bit.act_quant %n {eps = 1e-5} : tensor<2x4xi8>, tensor<2x1xf32>\n  return %n, %q\n}\n";
    let mut m = bitnet_ir::parse_and_verify(src, "x.bir").unwrap();
    let printed = text::print_module(&m);
    let mut cx = PassContext::new(None);
    let pm = PassManager::new(
        parse_pipeline("fuse-norm-quant,fuse-relu2-mul,fuse-silu-mul,fuse-residual").unwrap(),
    );
    let runs = pm.run(&mut m, &mut cx).unwrap();
    assert!(runs.iter().all(|r| !r.changed));
    assert_eq!(text::print_module(&m), printed);
}
