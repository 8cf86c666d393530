//! Properties of the ternary reference ops on random data: `bit.act_quant` (per-token absmax int8 with
//! the 1e-5 floor, round half to even) and `bit.ternary_matmul` (exact integer sums, both scales).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_ir::ops::act_quant::quantize_row;
use bitnet_ir::{Data, NoWeights, Tensor, interp, text};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn act_quant_rows_are_int8_with_the_absmax_at_127(row in prop::collection::vec(-1e4f32..1e4, 1..300)) {
        let mut q = vec![0i8; row.len()];
        let s = quantize_row(&row, 1e-5, false, &mut q);
        let m = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        prop_assert_eq!(s, 127.0 / m.max(1e-5));
        for (&x, &xq) in row.iter().zip(&q) {
            prop_assert!(xq >= -127, "{} quantized to -128", x);
            // Round half to even of x·s, computed in f32 exactly as the reference does.
            prop_assert_eq!(f32::from(xq), (x * s).round_ties_even().clamp(-128.0, 127.0));
            prop_assert!((f32::from(xq) - x * s).abs() <= 0.5);
        }
        if m >= 1e-5 {
            let at = row.iter().position(|v| v.abs() == m).unwrap();
            prop_assert_eq!(q[at].unsigned_abs(), 127);
        }
    }

    #[test]
    fn act_quant_floors_tiny_rows(row in prop::collection::vec(-1e-6f32..1e-6, 1..50)) {
        let mut q = vec![0i8; row.len()];
        let s = quantize_row(&row, 1e-5, false, &mut q);
        prop_assert_eq!(s, 127.0 / 1e-5);
        prop_assert!(q.iter().all(|v| v.abs() <= 13));
    }

    #[test]
    fn ternary_matmul_is_the_exact_integer_product_scaled(
        t in 1usize..4, k in 1usize..70, n in 1usize..6, seed in any::<u64>(), gamma in 1e-3f32..1.0,
    ) {
        // A small deterministic generator keeps the case description short.
        let mut state = seed | 1;
        let mut next = || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
        let xq: Vec<i64> = (0..t * k).map(|_| (next() % 255) as i64 - 127).collect();
        let w: Vec<i64> = (0..n * k).map(|_| (next() % 3) as i64 - 1).collect();
        let xs: Vec<f32> = (0..t).map(|_| 1.0 + (next() % 1000) as f32 / 7.0).collect();
        let src = format!(
            "func @main() -> (tensor<{t}x{n}xf32>) {{\n  %xq = nn.constant {{value = {xq:?}}} : tensor<{t}x{k}xi8>\n  %xs = nn.constant {{value = {xsf:?}}} : tensor<{t}x1xf32>\n  %w = nn.constant {{value = {w:?}}} : tensor<{n}x{k}xternary>\n  %g = nn.constant {{value = [{g:?}]}} : tensor<f32>\n  %y = bit.ternary_matmul %xq, %xs, %w, %g : tensor<{t}x{n}xf32>\n  return %y\n}}\n",
            xsf = xs.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), g = f64::from(gamma),
        );
        let m = text::parse(&src, "p.bir").unwrap();
        let y = interp::run(&m, "main", &[], &NoWeights).unwrap_or_else(|e| panic!("{e}\n{src}"));
        let Tensor { data: Data::F32(y), .. } = &y[0] else { panic!("not f32") };
        for r in 0..t {
            for c in 0..n {
                let acc: i64 = (0..k).map(|i| xq[r * k + i] * w[c * k + i]).sum();
                prop_assert_eq!(y[r * n + c], acc as i32 as f32 / xs[r] * gamma);
            }
        }
    }
}
