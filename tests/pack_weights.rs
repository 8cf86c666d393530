//! Property tests for `pack-weights` and its layouts.
//!
//! - Round trip: packing random ternary matrices (K often not a multiple of the block) with every
//!   provided layout and with random layouts (block, order, row sums) and unpacking gives the matrix
//!   back; the codes sit where an independent statement of each order says (I2_S: byte j % G of the
//!   block, shift 6 − 2·(j / G); low-first: byte j / 4, shift 2·(j % 4)); padding is code 1; row sums are
//!   the sums of the codes or of t.
//! - Eval equality: a random `bit.ternary_matmul` (with or without a residual) gives the same bytes
//!   before and after `pack-weights` with a random layout in the pass context.
//! - The real model: hf-tiny (packed) after `-O` and `pack-weights` in each provided layout gives the
//!   logits of `-O` alone, bit for bit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_ir::ops::ternary_matmul_packed::{PackOrder, RowSum};
use bitnet_ir::{Data, MemoryWeights, OpKind, Tensor, interp};
use bitnet_passes::pack_weights::{PackBlock, PackLayout};
use bitnet_passes::{DEFAULT_PIPELINE, Overlay, PassContext, PassManager, parse_pipeline};
use proptest::prelude::*;
use std::path::PathBuf;

fn layout() -> impl Strategy<Value = PackLayout> {
    let provided = prop::sample::select(PackLayout::ALL.to_vec());
    let custom = (
        prop_oneof![
            (1usize..65).prop_map(|b| PackBlock::Fixed(4 * b)),
            Just(PackBlock::Row)
        ],
        prop_oneof![Just(PackOrder::I2s), Just(PackOrder::LowFirst)],
        prop_oneof![
            Just(None),
            Just(Some(RowSum::Codes)),
            Just(Some(RowSum::Ternary))
        ],
    )
        .prop_map(|(block, order, rowsum)| PackLayout {
            name: "custom",
            block,
            order,
            rowsum,
        });
    prop_oneof![provided, custom]
}

fn ternary(n: usize, k: usize, seed: &[i8]) -> Vec<i8> {
    seed.iter().copied().cycle().take(n * k).collect()
}

/// The 2-bit code of element j of a row, read the way each order is documented (not through the
/// packer's own position function).
fn code_at(row: &[u8], j: usize, block: usize, order: PackOrder) -> u8 {
    let (b, jj) = (j / block, j % block);
    let g = block / 4;
    let (byte, shift) = match order {
        PackOrder::I2s => (b * g + jj % g, 6 - 2 * (jj / g)),
        PackOrder::LowFirst => (j / 4, 2 * (j % 4)),
    };
    (row[byte] >> shift) & 3
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pack_unpack_round_trips(
        layout in layout(), n in 1usize..6, k in 1usize..300,
        seed in prop::collection::vec(-1i8..=1, 1..97),
    ) {
        let t = ternary(n, k, &seed);
        let p = layout.pack(&t, n, k).unwrap();
        let block = match layout.block {
            PackBlock::Fixed(b) => b,
            PackBlock::Row => k.div_ceil(4) * 4,
        };
        prop_assert_eq!(p.block, block);
        let kp = k.div_ceil(block) * block;
        prop_assert_eq!(p.row_bytes, kp / 4);
        prop_assert_eq!(p.bytes.len(), n * kp / 4);
        prop_assert_eq!(layout.unpack(&p, n, k).unwrap(), t.clone());
        for (row, bytes) in t.chunks(k).zip(p.bytes.chunks(p.row_bytes)) {
            for j in 0..kp {
                let want = row.get(j).map_or(1, |&v| (v + 1) as u8);
                prop_assert_eq!(code_at(bytes, j, block, layout.order), want, "element {}", j);
            }
        }
        let sums: Option<Vec<i32>> = layout.rowsum.map(|kind| {
            t.chunks(k)
                .map(|row| row.iter().map(|&v| i32::from(v) + i32::from(kind == RowSum::Codes)).sum())
                .collect()
        });
        prop_assert_eq!(p.rowsum, sums);
    }

    #[test]
    fn packed_matmul_evaluates_like_the_unpacked_one(
        layout in layout(), t in 1usize..4, n in 1usize..6, k in 1usize..200, residual in any::<bool>(),
        seed in prop::collection::vec(-1i8..=1, 1..97), xq in prop::collection::vec(any::<i8>(), 1..97),
        xs in prop::collection::vec(1e-3f32..1e6, 1..4), gamma in 0.01f32..2.0,
        h in prop::collection::vec(-100f32..100.0, 1..17),
    ) {
        let (r_arg, r_op) = if residual {
            (format!(", %h: tensor<{t}x{n}xf32>"), ", %h")
        } else {
            (String::new(), "")
        };
        let src = format!(
            "func @main(%q: tensor<{t}x{k}xi8>, %s: tensor<{t}x1xf32>{r_arg}) -> (tensor<{t}x{n}xf32>) {{\n  %w = nn.weight {{name = \"w\"}} : tensor<{n}x{k}xternary>\n  %g = nn.weight {{name = \"g\"}} : tensor<1xf32>\n  %y = bit.ternary_matmul %q, %s, %w, %g{r_op} : tensor<{t}x{n}xf32>\n  return %y\n}}\n"
        );
        let mut store = MemoryWeights::default();
        store.tensors.insert("w".into(), Tensor::new(vec![n, k], Data::Ternary(ternary(n, k, &seed))).unwrap());
        store.tensors.insert("g".into(), Tensor::new(vec![1], Data::F32(vec![gamma])).unwrap());
        let mut inputs = vec![
            Tensor::new(vec![t, k], Data::I8(xq.iter().copied().cycle().take(t * k).collect())).unwrap(),
            Tensor::new(vec![t, 1], Data::F32(xs.iter().copied().cycle().take(t).collect())).unwrap(),
        ];
        if residual {
            inputs.push(Tensor::new(vec![t, n], Data::F32(h.iter().copied().cycle().take(t * n).collect())).unwrap());
        }
        let mut m = bitnet_ir::parse_and_verify(&src, "case.bir").unwrap();
        let before = interp::run(&m, "main", &inputs, &store).unwrap();
        let mut cx = PassContext::new(Some(&store));
        cx.pack_layout = layout;
        let mut pm = PassManager::new(parse_pipeline("pack-weights").unwrap());
        pm.verify_each = true;
        pm.run(&mut m, &mut cx).unwrap();
        let f = &m.functions[0];
        prop_assert_eq!(f.op_order().filter(|&o| f.op(o).kind == OpKind::TernaryMatmulPacked).count(), 1);
        prop_assert_eq!(f.op_order().filter(|&o| f.op(o).kind == OpKind::TernaryMatmul).count(), 0);
        let packed_name = format!("w#packed.{}", layout.name);
        let sums_name = format!("w#rowsum.{}", layout.name);
        prop_assert!(cx.derived.contains(&packed_name));
        prop_assert_eq!(cx.derived.contains(&sums_name), layout.rowsum.is_some());
        let weights = Overlay { derived: &cx.derived, base: Some(&store) };
        let after = interp::run(&m, "main", &inputs, &weights).unwrap();
        prop_assert!(before[0].data.to_le_bytes() == after[0].data.to_le_bytes());
    }
}

#[test]
fn corrupt_packed_weights_are_run_time_errors() {
    let run = |bytes: &str, sums: &str, attrs: &str| {
        let src = format!(
            "func @main() -> (tensor<1x1xf32>) {{\n  %q = nn.constant {{value = [1, 2, 3, 4, 5]}} : tensor<1x5xi8>\n  %s = nn.constant {{value = [1.0]}} : tensor<1x1xf32>\n  %g = nn.constant {{value = [1.0]}} : tensor<1xf32>\n  %w = nn.constant {{value = [{bytes}]}} : tensor<1x2xu8>\n  %r = nn.constant {{value = [{sums}]}} : tensor<1xi32>\n  %y = bit.ternary_matmul_packed %q, %s, %w, %g, %r {{block = 8, k = 5, {attrs}}} : tensor<1x1xf32>\n  return %y\n}}\n"
        );
        let m = bitnet_ir::parse_and_verify(&src, "x.bir").unwrap();
        interp::run(&m, "main", &[], &bitnet_ir::NoWeights).map(|r| r[0].data.to_f32())
    };
    // Low-first, t = [1 0 -1 1 0] (codes 2 1 0 2 | 1, padding 1 1 1): bytes 0b10_00_01_10 = 134,
    // 0b01_01_01_01 = 85; code sum 6, t sum 1.
    assert_eq!(
        run("134, 85", "6", "order = \"low-first\", rowsum = \"codes\"").unwrap(),
        vec![1.0 - 3.0 + 4.0]
    );
    let code3 = run("135, 85", "6", "order = \"low-first\", rowsum = \"codes\"").unwrap_err();
    assert!(
        code3.to_string().contains("invalid code 3 at element 0"),
        "{code3}"
    );
    let padding = run("134, 81", "6", "order = \"low-first\", rowsum = \"codes\"").unwrap_err();
    assert!(
        padding
            .to_string()
            .contains("padding element 5 holds code 0"),
        "{padding}"
    );
    let sums = run(
        "134, 85",
        "1",
        "order = \"low-first\", rowsum = \"ternary\"",
    )
    .unwrap();
    assert_eq!(sums, vec![2.0]);
    let bad_sum = run("134, 85", "5", "order = \"low-first\", rowsum = \"codes\"").unwrap_err();
    assert!(bad_sum.to_string().contains("row sum"), "{bad_sum}");
}

#[test]
fn hf_tiny_packed_in_every_layout_matches_o() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/packed");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let tokens: Vec<i64> = r["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let opts = bitnet_frontend::model::ImportOptions {
        context: Some(tokens.len() as u64),
        ..Default::default()
    };
    let logits = |layout: Option<PackLayout>| {
        let mut m = bitnet_frontend::import_model(&dir, &opts).unwrap();
        let mut pipeline = DEFAULT_PIPELINE.to_string();
        if layout.is_some() {
            pipeline.push_str(",pack-weights,canonicalize");
        }
        let pm = PassManager::new(parse_pipeline(&pipeline).unwrap());
        let mut cx = PassContext::new(Some(m.weights.as_ref()));
        if let Some(l) = layout {
            cx.pack_layout = l;
        }
        pm.run(&mut m.module, &mut cx).unwrap();
        let f = &m.module.functions[0];
        let packed = f
            .op_order()
            .filter(|&o| f.op(o).kind == OpKind::TernaryMatmulPacked)
            .count();
        assert_eq!(packed, if layout.is_some() { 28 } else { 0 });
        let weights = Overlay {
            derived: &cx.derived,
            base: Some(m.weights.as_ref()),
        };
        bitnetc::prompt_logits(&m.module, &weights, &tokens)
            .unwrap()
            .data
            .to_le_bytes()
    };
    let reference = logits(None);
    for layout in PackLayout::ALL {
        assert!(
            logits(Some(layout)) == reference,
            "{}: packed logits differ",
            layout.name
        );
    }
}

#[test]
fn opt_packs_with_the_default_or_the_named_layout() {
    let dir = std::env::temp_dir().join(format!("bitnetc-pack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mm.bir");
    std::fs::write(
        &file,
        "func @main(%q: tensor<1x5xi8>, %s: tensor<1x1xf32>) -> (tensor<1x2xf32>) {\n  %w = nn.constant {value = [1, 0, -1, 1, 0, -1, -1, 0, 0, 1]} : tensor<2x5xternary>\n  %g = nn.constant {value = [0.5]} : tensor<1xf32>\n  %y = bit.ternary_matmul %q, %s, %w, %g : tensor<1x2xf32>\n  return %y\n}\n",
    )
    .unwrap();
    let opt = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bitnetc"))
            .args(["opt", file.to_str().unwrap(), "-p", "pack-weights"])
            .args(extra)
            .output()
            .unwrap()
    };
    let default = opt(&[]);
    let out = String::from_utf8_lossy(&default.stdout);
    assert!(default.status.success());
    assert!(
        out.contains("{block = 128, k = 5, order = \"i2s\"}") && out.contains("tensor<2x32xu8>"),
        "{out}"
    );
    let named = opt(&["--pack-layout", "low-first-row"]);
    let out = String::from_utf8_lossy(&named.stdout);
    assert!(
        out.contains("{block = 8, k = 5, order = \"low-first\", rowsum = \"codes\"}")
            && out.contains("tensor<2x2xu8>")
            && out.contains("tensor<2xi32>"),
        "{out}"
    );
    let unknown = opt(&["--pack-layout", "tq2"]);
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("unknown pack layout \"tq2\"; known: i2s-128, low-first-row, i2s-32"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A weight large enough to be packed by several threads (≥ 2²⁰ values, rows not a multiple of
/// the thread count) packs to the bytes and row sums each row packed alone gives, in every
/// provided layout; a value outside {-1, 0, 1} anywhere (the last one here) is refused.
#[test]
fn large_weights_pack_as_their_rows_do() {
    use bitnet_ir::ops::ternary_matmul_packed::{pack_row, row_sum};
    let (n, k) = (1031usize, 1030usize);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let t: Vec<i8> = (0..n * k)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 3) as i8 - 1
        })
        .collect();
    for layout in PackLayout::ALL {
        let packed = layout.pack(&t, n, k).unwrap();
        let (block, row_bytes) = layout.row_bytes(k).unwrap();
        assert_eq!(packed.row_bytes, row_bytes);
        let mut want = vec![0u8; n * row_bytes];
        for (row, out) in t.chunks(k).zip(want.chunks_mut(row_bytes)) {
            pack_row(row, block, layout.order, out);
        }
        assert!(packed.bytes == want, "{}", layout.name);
        let sums = layout.rowsum.map(|kind| {
            t.chunks(k)
                .map(|row| row_sum(row, kind))
                .collect::<Vec<_>>()
        });
        assert_eq!(packed.rowsum, sums, "{}", layout.name);
        let mut bad = t.clone();
        *bad.last_mut().unwrap() = 2;
        assert!(layout.pack(&bad, n, k).is_err(), "{}", layout.name);
        bad[n * k - 1] = -2;
        assert!(layout.pack(&bad, n, k).is_err(), "{}", layout.name);
    }
}
