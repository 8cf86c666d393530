//! The memory plan on real graphs: the hf-tiny checkpoints and the full 2B-4T shape (built from its
//! configuration, no weights needed). The arena must be within 1.1 × the lower bound (the most bytes
//! live at once), no two buffers live at the same time may overlap, the plan must be deterministic,
//! and on 2B-4T every one of the 30 × 7 projections must be lowered first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_frontend::decoder::{
    Activation, DecoderConfig, DecoderSpec, LayerWeights, Linear, emit,
};
use bitnet_frontend::import_model;
use bitnet_frontend::model::ImportOptions;
use bitnet_ir::{Module, OpKind};
use bitnet_passes::plan_memory::{MemoryPlan, find_overlap};
use bitnet_passes::{DEFAULT_PIPELINE, PassContext, PassManager, parse_pipeline};
use std::path::PathBuf;

fn plan(
    module: &mut Module,
    weights: Option<&dyn bitnet_ir::WeightStore>,
) -> (MemoryPlan, Vec<String>) {
    let mut cx = PassContext::new(weights);
    let mut pm =
        PassManager::new(parse_pipeline(&format!("{DEFAULT_PIPELINE},plan-memory")).unwrap());
    pm.verify_each = true;
    pm.run(module, &mut cx).unwrap_or_else(|e| panic!("{e}"));
    (cx.plans.pop().unwrap(), cx.notes)
}

fn check(p: &MemoryPlan, what: &str) {
    let ratio = p.arena_bytes as f64 / p.lower_bound as f64;
    println!(
        "{what}: arena {} B, lower bound {} B ({ratio:.3}×), naive {} B, KV cache {} B",
        p.arena_bytes, p.lower_bound, p.naive_bytes, p.kv_bytes
    );
    assert!(
        ratio <= 1.1,
        "{what}: arena is {ratio:.3} × the lower bound"
    );
    assert!(
        p.arena_bytes < p.naive_bytes,
        "{what}: the plan saves nothing"
    );
    assert_eq!(find_overlap(p), None, "{what}: live buffers overlap");
}

#[test]
fn hf_tiny_plans_are_tight_disjoint_and_deterministic() {
    for form in ["online", "packed", "packed_bitlinear"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hf-tiny")
            .join(form);
        for context in [None, Some(40)] {
            let mut m = import_model(
                &dir,
                &ImportOptions {
                    context,
                    ..Default::default()
                },
            )
            .unwrap();
            let (p, _) = plan(&mut m.module, Some(m.weights.as_ref()));
            check(&p, &format!("hf-tiny/{form} context {context:?}"));
            let mut again = import_model(
                &dir,
                &ImportOptions {
                    context,
                    ..Default::default()
                },
            )
            .unwrap();
            let (q, _) = plan(&mut again.module, Some(again.weights.as_ref()));
            assert_eq!(p, q, "the plan is not deterministic");
        }
    }
}

/// The IR of microsoft/bitnet-b1.58-2B-4T's shape (formats.md §1.1), with packed ternary weights.
fn bitnet_2b4t(context: u64) -> Module {
    let config = DecoderConfig {
        vocab: 128256,
        hidden: 2560,
        intermediate: 6912,
        layers: 30,
        heads: 20,
        kv_heads: 5,
        head_dim: 128,
        rms_eps: 1e-5,
        rope_theta: 500000.0,
        rope_inv_freq: None,
        context,
        activation: Activation::Relu2,
        sub_norms: true,
        act_quant: true,
    };
    let lin = |l: u64, n: &str| Linear::TernaryScaleMul {
        weight: format!("model.layers.{l}.{n}.weight"),
        scale: format!("model.layers.{l}.{n}.weight_scale"),
    };
    let layers = (0..30)
        .map(|l| LayerWeights {
            input_norm: format!("model.layers.{l}.input_layernorm.weight"),
            q: lin(l, "self_attn.q_proj"),
            k: lin(l, "self_attn.k_proj"),
            v: lin(l, "self_attn.v_proj"),
            o: lin(l, "self_attn.o_proj"),
            bias: Default::default(),
            attn_sub_norm: Some(format!("model.layers.{l}.self_attn.attn_sub_norm.weight")),
            post_norm: format!("model.layers.{l}.post_attention_layernorm.weight"),
            gate: lin(l, "mlp.gate_proj"),
            up: lin(l, "mlp.up_proj"),
            down: lin(l, "mlp.down_proj"),
            ffn_sub_norm: Some(format!("model.layers.{l}.mlp.ffn_sub_norm.weight")),
        })
        .collect();
    let spec = DecoderSpec {
        config,
        embed: "model.embed_tokens.weight".into(),
        layers,
        final_norm: "model.norm.weight".into(),
        lm_head: "model.embed_tokens.weight".into(),
    };
    emit(&spec).unwrap()
}

#[test]
fn bitnet_2b4t_lowers_every_projection_and_plans_tightly() {
    for context in [4096, 128] {
        let mut m = bitnet_2b4t(context);
        let (p, notes) = plan(&mut m, None);
        let f = &m.functions[0];
        let lowered = f
            .op_order()
            .filter(|&o| f.op(o).kind == OpKind::TernaryMatmul)
            .count();
        let full = f
            .op_order()
            .filter(|&o| f.op(o).kind == OpKind::MatMul)
            .count();
        for n in notes
            .iter()
            .filter(|n| n.contains("lowered") || n.contains("plan-memory"))
        {
            println!("2b4t context {context}: {n}");
        }
        assert_eq!(lowered, 30 * 7, "every projection of 2B-4T is lowered");
        assert_eq!(full, 1, "only the lm_head stays full precision");
        check(&p, &format!("2b4t context {context}"));
        assert_eq!(
            p.kv_bytes,
            30 * 2 * context * 640 * 4,
            "KV cache: layers × (K, V) × context × kv width × f32"
        );
    }
}
