//! Sharded Hugging Face checkpoints: tests/fixtures/hf-tiny/packed split at test time into two
//! safetensors shards (written by the `safetensors` crate, not by bitnetc) with a
//! `model.safetensors.index.json` must import to the same model and give bitwise the same logits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_frontend::SafetensorsStore;
use bitnet_frontend::import_model;
use bitnet_frontend::model::{ImportOptions, ImportedModel};
use bitnet_ir::Data;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn packed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/packed")
}

fn dtype(d: &Data) -> Dtype {
    match d {
        Data::BF16(_) => Dtype::BF16,
        Data::F16(_) => Dtype::F16,
        Data::F32(_) => Dtype::F32,
        Data::U8(_) => Dtype::U8,
        other => panic!("unexpected dtype in the fixture: {:?}", other.elem()),
    }
}

/// A tensor as a shard will hold it: name, dtype, shape, little-endian bytes.
type Stored = (String, Dtype, Vec<usize>, Vec<u8>);

/// Writes a copy of `src` (a single-file checkpoint) into `dst` with its tensors in two shards: the
/// embedding and layers 0–1 in the first, the rest in the second.
fn shard(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let store = SafetensorsStore::open(&src.join("model.safetensors")).unwrap();
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut groups: [Vec<Stored>; 2] = [Vec::new(), Vec::new()];
    let mut weight_map = BTreeMap::new();
    let mut total = 0;
    for name in store.names() {
        let t = store.read(&name).unwrap();
        let first = name.starts_with("model.embed_tokens")
            || name.starts_with("model.layers.0.")
            || name.starts_with("model.layers.1.");
        let g = usize::from(!first);
        let bytes = t.data.to_le_bytes();
        total += bytes.len();
        weight_map.insert(name.clone(), names[g]);
        groups[g].push((name, dtype(&t.data), t.shape.clone(), bytes));
    }
    for (g, tensors) in groups.iter().enumerate() {
        assert!(!tensors.is_empty());
        let views = tensors.iter().map(|(name, dt, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(*dt, shape.clone(), bytes).unwrap(),
            )
        });
        safetensors::serialize_to_file(views, None, &dst.join(names[g])).unwrap();
    }
    let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    std::fs::write(
        dst.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
}

fn import(dir: &Path, context: usize) -> ImportedModel {
    let opts = ImportOptions {
        context: Some(context as u64),
        ..Default::default()
    };
    import_model(dir, &opts).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_sharded_checkpoint_gives_bitwise_the_same_logits() {
    let dir = std::env::temp_dir().join(format!("bitnetc-hf-sharded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    shard(&packed(), &dir);
    assert!(!dir.join("model.safetensors").exists());

    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(packed().join("reference.json")).unwrap())
            .unwrap();
    let tokens: Vec<i64> = r["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let single = import(&packed(), tokens.len());
    let sharded = import(&dir, tokens.len());

    let (a, b) = (&single.summary, &sharded.summary);
    assert_eq!(a.parameters, b.parameters);
    assert_eq!(a.bytes_by_dtype(), b.bytes_by_dtype());
    let names = |s: &bitnet_frontend::model::ModelSummary| {
        let mut v: Vec<String> = s.tensors.iter().map(|t| t.name.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(names(a), names(b));
    assert_eq!(
        bitnet_ir::text::print_module(&single.module),
        bitnet_ir::text::print_module(&sharded.module)
    );

    let x = bitnetc::prompt_logits(&single.module, single.weights.as_ref(), &tokens).unwrap();
    let y = bitnetc::prompt_logits(&sharded.module, sharded.weights.as_ref(), &tokens).unwrap();
    assert_eq!(x.shape, vec![1, tokens.len(), 1000]);
    assert_eq!(x.shape, y.shape);
    let bits = |t: &bitnet_ir::Tensor| -> Vec<u32> {
        t.data.to_f32().iter().map(|v| v.to_bits()).collect()
    };
    assert!(bits(&x) == bits(&y), "the sharded logits differ");
    std::fs::remove_dir_all(&dir).unwrap();
}
