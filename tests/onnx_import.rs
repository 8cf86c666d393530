//! The ONNX importer on real exports and on broken files.
//!
//! - Every model in `tests/fixtures/onnx-models` (torch.onnx exports of BitLinear, the BitNet MLP and
//!   a decoder block; copied from `shared/fixtures/onnx`) is imported, verified, printed and parsed
//!   back, and run by the reference interpreter on `x.npy`; its output must match onnxruntime's
//!   `<model>.out.npy` to `max|ours - ref| / max|ref| <= 1e-5`.
//! - Every file in `tests/malformed/onnx` (made by `scripts/make_malformed_onnx.py`) must fail to
//!   import with an error that names the file and the node, initializer or field at fault.
//! - Models built here with the generated prost types check what the fixtures do not: typed data
//!   fields, valid external data, symbolic dimensions and constant folding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_frontend::npy;
use bitnet_frontend::onnx::proto::Message;
use bitnet_frontend::onnx::proto::{
    self, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    tensor_shape_proto, type_proto,
};
use bitnet_frontend::onnx::{ImportOptions, import_onnx, import_onnx_with};
use bitnet_ir::tensor::max_relative_error;
use bitnet_ir::{Data, Dim, OpKind, Tensor, interp, text};
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// Imports, verifies, round-trips through the text form and runs `path` on `inputs`.
fn run(path: &Path, inputs: &[Tensor]) -> Vec<Tensor> {
    let m = import_onnx(path).unwrap_or_else(|e| panic!("{e}"));
    let diags = bitnet_ir::verify::verify_module(&m.module);
    assert!(diags.is_empty(), "{}: {:?}", path.display(), diags);
    let printed = text::print_module(&m.module);
    let reparsed = bitnet_ir::parse_and_verify(&printed, "printed").unwrap_or_else(|e| {
        panic!(
            "{}: printed IR does not parse back: {e}\n{printed}",
            path.display()
        )
    });
    assert_eq!(text::print_module(&reparsed), printed);
    interp::run(&m.module, "main", inputs, &m.weights)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn fixture_models_match_onnxruntime() {
    let dir = root().join("tests/fixtures/onnx-models");
    let x = npy::read(&dir.join("x.npy")).unwrap();
    let models = files(&dir, "onnx");
    assert_eq!(models.len(), 17, "expected the 17 exported models");
    let mut failures = Vec::new();
    for path in &models {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let reference = npy::read(&dir.join(format!("{stem}.out.npy"))).unwrap();
        let out = run(path, std::slice::from_ref(&x));
        let err = max_relative_error(&out[0], &reference)
            .unwrap_or_else(|| panic!("{stem}: shape {:?} vs {:?}", out[0].shape, reference.shape));
        println!("{stem}: relative error {err:.3e}");
        if err > TOL {
            failures.push(format!("{stem}: {err:.3e}"));
        }
    }
    assert!(failures.is_empty(), "above {TOL:e}: {failures:?}");
}

/// Weight chains stay explicit: the TorchScript online export keeps `Abs(W)`, the reduction and the
/// rounding of the master weight, and the weight itself is an `nn.weight` named by its initializer.
#[test]
fn weight_chains_are_not_folded() {
    let path = root().join("tests/fixtures/onnx-models/bitlinear_online.ts.onnx");
    let m = import_onnx(&path).unwrap();
    let f = &m.module.functions[0];
    let count = |k: OpKind| f.ops.iter().filter(|o| o.kind == k).count();
    assert_eq!(count(OpKind::Abs), 2);
    assert_eq!(count(OpKind::Round), 2);
    assert_eq!(count(OpKind::MatMul), 1);
    let weights: Vec<&str> = f
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Weight)
        .filter_map(|o| o.attrs.str("name"))
        .collect();
    assert_eq!(weights.len(), 1, "{weights:?}");
    assert!(m.weights.contains(weights[0]));
}

/// The malformed files, and what each error must mention besides the file name.
const MALFORMED: &[(&str, &[&str])] = &[
    ("empty.onnx", &["empty"]),
    ("garbage.onnx", &["protobuf"]),
    ("truncated.onnx", &["truncated"]),
    ("no_graph.onnx", &["no graph"]),
    ("opset12.onnx", &["opset 12", "13"]),
    (
        "unknown_ops.onnx",
        &[
            "unsupported ONNX op(s)",
            "Conv (node 1 'conv0')",
            "FooBar (node 2 'foo', node 3 'foo2')",
            "com.example.Custom",
        ],
    ),
    (
        "raw_size_mismatch.onnx",
        &["initializer 'w'", "raw_data has 10 bytes", "needs 24"],
    ),
    (
        "typed_count_mismatch.onnx",
        &["initializer 'w'", "float_data has 3 elements", "needs 4"],
    ),
    ("external_dotdot.onnx", &["initializer 'w'", "`..`"]),
    (
        "external_absolute.onnx",
        &["initializer 'w'", "absolute path"],
    ),
    (
        "external_out_of_range.onnx",
        &["initializer 'w'", "past the end", "weights.bin"],
    ),
    (
        "external_length_mismatch.onnx",
        &["initializer 'w'", "length 8", "24 bytes"],
    ),
    (
        "external_missing_file.onnx",
        &["initializer 'w'", "missing.bin"],
    ),
    ("string_initializer.onnx", &["initializer 's'", "STRING"]),
    (
        "undefined_input.onnx",
        &["node 0 'add0' (Add)", "'nowhere'"],
    ),
    (
        "dynamic_reshape_shape.onnx",
        &["node 0 'reshape0' (Reshape)", "shape input", "graph input"],
    ),
    (
        "negative_dims.onnx",
        &["initializer 'w'", "negative dimension"],
    ),
];

#[test]
fn malformed_models_fail_clearly() {
    let dir = root().join("tests/malformed/onnx");
    let on_disk: Vec<String> = files(&dir, "onnx")
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    let listed: Vec<&str> = MALFORMED.iter().map(|(f, _)| *f).collect();
    for f in &on_disk {
        assert!(
            listed.contains(&f.as_str()),
            "{f} has no expectation in MALFORMED"
        );
    }
    assert!(on_disk.len() >= 8);
    for (file, needles) in MALFORMED {
        let path = dir.join(file);
        let msg = match import_onnx(&path) {
            Ok(_) => panic!("{file}: imported without error"),
            Err(e) => e.to_string(),
        };
        println!("{file}: {msg}");
        assert!(
            msg.contains(file),
            "{file}: the error does not name the file: {msg}"
        );
        for n in *needles {
            assert!(msg.contains(n), "{file}: the error lacks `{n}`: {msg}");
        }
    }
}

// ---- models built here ----------------------------------------------------------------------

fn value_info(
    name: &str,
    elem: proto::tensor_proto::DataType,
    dims: &[Result<i64, &str>],
) -> ValueInfoProto {
    use tensor_shape_proto::dimension::Value;
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Ok(v) => Value::DimValue(*v),
                Err(p) => Value::DimParam(p.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        i: Some(v),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        ..Default::default()
    }
}

fn model(graph: GraphProto, opset: i64) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn tensor_proto(name: &str, elem: proto::tensor_proto::DataType, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(elem as i32),
        dims: dims.to_vec(),
        ..Default::default()
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bitnetc-onnx-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, m: &ModelProto) {
    std::fs::write(path, m.encode_to_vec()).unwrap();
}

/// A weight in each typed data field (`float_data`, `int32_data` with i8, i32 and f16 bits,
/// `int64_data`, `double_data`, `uint64_data` with u32 and u64) is read back exactly, from the store
/// and through `nn.weight` when `@main` (which returns it) runs: 20 elements each, so they are
/// weights read lazily from the file, not literals.
#[test]
fn typed_data_fields_are_read() {
    use proto::tensor_proto::DataType as D;
    let dir = temp_dir("typed");
    let vals: Vec<i64> = (0..20).map(|i| i * 3 - 7).collect();
    let ints: Vec<i32> = vals.iter().map(|&v| v as i32).collect();
    type Fill<'a> = Box<dyn Fn(&mut TensorProto) + 'a>;
    let cases: Vec<(D, &str, Fill)> = vec![
        (
            D::Float,
            "f32",
            Box::new(|t| t.float_data = vals.iter().map(|&v| v as f32).collect()),
        ),
        (D::Int64, "i64", Box::new(|t| t.int64_data = vals.clone())),
        (D::Int8, "i8", Box::new(|t| t.int32_data = ints.clone())),
        (D::Int32, "i32", Box::new(|t| t.int32_data = ints.clone())),
        (
            D::Float16,
            "f16",
            Box::new(|t| {
                t.int32_data = vals
                    .iter()
                    .map(|&v| i32::from(half::f16::from_f32(v as f32).to_bits()))
                    .collect()
            }),
        ),
        (
            D::Double,
            "f64",
            Box::new(|t| t.double_data = vals.iter().map(|&v| v as f64).collect()),
        ),
        (
            D::Uint64,
            "u64",
            Box::new(|t| t.uint64_data = vals.iter().map(|&v| v as u64).collect()),
        ),
        (
            D::Uint32,
            "u32",
            Box::new(|t| t.uint64_data = vals.iter().map(|&v| u64::from(v as u32)).collect()),
        ),
    ];
    for (dt, ir, fill) in cases {
        let mut w = tensor_proto("w", dt, &[20]);
        fill(&mut w);
        let g = GraphProto {
            node: vec![node("Identity", &["w"], &["y"], vec![])],
            output: vec![value_info("y", dt, &[Ok(20)])],
            initializer: vec![w],
            ..Default::default()
        };
        let path = dir.join(format!("typed_{}.onnx", dt.as_str_name()));
        write(&path, &model(g, 17));
        let m = import_onnx(&path).unwrap_or_else(|e| panic!("{e}"));
        let w = m.weights.read("w").unwrap();
        assert_eq!(w.elem().name(), ir);
        let expected: Vec<i64> = match dt {
            D::Uint32 => vals.iter().map(|&v| i64::from(v as u32)).collect(),
            _ => vals.clone(),
        };
        assert_eq!(w.data.to_i64(), expected, "{dt:?}");
        let y = interp::run(&m.module, "main", &[], &m.weights).unwrap();
        assert_eq!(y[0], w, "{dt:?}");
    }
}

/// External data inside the model's folder is read, at the right offset.
#[test]
fn external_data_is_read() {
    use proto::tensor_proto::DataType as D;
    let dir = temp_dir("external");
    let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
    let mut bytes = vec![0xAAu8; 16];
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/w.bin"), &bytes).unwrap();
    let mut w = tensor_proto("w", D::Float, &[4, 6]);
    w.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
    w.external_data = [
        ("location", "data/w.bin"),
        ("offset", "16"),
        ("length", "96"),
    ]
    .iter()
    .map(|(k, v)| StringStringEntryProto {
        key: Some(k.to_string()),
        value: Some(v.to_string()),
    })
    .collect();
    let g = GraphProto {
        node: vec![node("MatMul", &["x", "w"], &["y"], vec![])],
        input: vec![value_info("x", D::Float, &[Err("batch"), Ok(4)])],
        output: vec![value_info("y", D::Float, &[Err("batch"), Ok(6)])],
        initializer: vec![w],
        ..Default::default()
    };
    let path = dir.join("ext.onnx");
    write(&path, &model(g, 18));
    let m = import_onnx(&path).unwrap_or_else(|e| panic!("{e}"));
    let f = &m.module.functions[0];
    assert_eq!(f.symbols.len(), 1);
    assert_eq!(f.symbols[0].name, "BATCH");
    assert_eq!(f.symbols[0].max, 4096);
    assert_eq!(f.ty(f.args[0]).dims[0], Dim::Sym("BATCH".into()));
    let x = Tensor::from_f32(vec![2, 4], vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]).unwrap();
    let y = interp::run(&m.module, "main", &[x], &m.weights).unwrap();
    let mut expected = values[..6].to_vec();
    expected.extend(&values[18..24]);
    assert_eq!(y[0].data.to_f32(), expected);
}

/// A location inside the folder that links to a file outside it is rejected too.
#[cfg(unix)]
#[test]
fn external_data_through_a_link_out_of_the_folder_is_rejected() {
    use proto::tensor_proto::DataType as D;
    let outside = temp_dir("outside");
    std::fs::write(outside.join("secret.bin"), [0u8; 24]).unwrap();
    let dir = temp_dir("link");
    let link = dir.join("w.bin");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(outside.join("secret.bin"), &link).unwrap();
    let mut w = tensor_proto("w", D::Float, &[6]);
    w.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
    w.external_data = vec![StringStringEntryProto {
        key: Some("location".into()),
        value: Some("w.bin".into()),
    }];
    let g = GraphProto {
        node: vec![node("Identity", &["w"], &["y"], vec![])],
        output: vec![value_info("y", D::Float, &[Ok(6)])],
        initializer: vec![w],
        ..Default::default()
    };
    let path = dir.join("link.onnx");
    write(&path, &model(g, 18));
    let msg = import_onnx(&path)
        .err()
        .expect("imported through a link")
        .to_string();
    assert!(
        msg.contains("initializer 'w'") && msg.contains("outside the model's folder"),
        "{msg}"
    );
}

/// Shape arithmetic on static shapes folds away: `Reshape(x, Concat(Shape(x)[0:1], [-1]))` becomes
/// one `nn.reshape`, and the symbol bound comes from the options.
#[test]
fn shape_arithmetic_folds_and_bounds_apply() {
    use proto::tensor_proto::DataType as D;
    let dir = temp_dir("fold");
    let mut minus_one = tensor_proto("minus_one", D::Int64, &[1]);
    minus_one.int64_data = vec![-1];
    let mut starts = tensor_proto("starts", D::Int64, &[1]);
    starts.int64_data = vec![0];
    let mut ends = tensor_proto("ends", D::Int64, &[1]);
    ends.int64_data = vec![1];
    let g = GraphProto {
        node: vec![
            node("Shape", &["x"], &["s"], vec![]),
            node("Slice", &["s", "starts", "ends"], &["s0"], vec![]),
            node(
                "Concat",
                &["s0", "minus_one"],
                &["target"],
                vec![int_attr("axis", 0)],
            ),
            node("Reshape", &["x", "target"], &["y"], vec![]),
        ],
        input: vec![value_info("x", D::Float, &[Ok(2), Ok(3), Ok(4)])],
        output: vec![value_info("y", D::Float, &[Ok(2), Ok(12)])],
        initializer: vec![minus_one, starts, ends],
        ..Default::default()
    };
    let path = dir.join("fold.onnx");
    write(&path, &model(g, 18));
    let m = import_onnx(&path).unwrap_or_else(|e| panic!("{e}"));
    let f = &m.module.functions[0];
    let kinds: Vec<OpKind> = f.ops.iter().map(|o| o.kind).collect();
    assert_eq!(kinds, vec![OpKind::Reshape]);
    let x = Tensor::from_f32(vec![2, 3, 4], (0..24).map(|i| i as f32).collect()).unwrap();
    let y = interp::run(&m.module, "main", std::slice::from_ref(&x), &m.weights).unwrap();
    assert_eq!(y[0].shape, vec![2, 12]);
    assert_eq!(y[0].data, x.data);

    // A symbolic batch with a custom bound.
    let g = GraphProto {
        node: vec![node("Relu", &["x"], &["y"], vec![])],
        input: vec![value_info("x", D::Float, &[Err("seq len"), Ok(3)])],
        output: vec![value_info("y", D::Float, &[Err("seq len"), Ok(3)])],
        ..Default::default()
    };
    let path = dir.join("sym.onnx");
    write(&path, &model(g, 18));
    let mut opts = ImportOptions::default();
    opts.symbol_bounds.insert("seq len".into(), 77);
    let m = import_onnx_with(&path, &opts).unwrap();
    let f = &m.module.functions[0];
    assert_eq!(
        (f.symbols[0].name.as_str(), f.symbols[0].max),
        ("SEQ_LEN", 77)
    );
    let x = Tensor::new(vec![78, 3], Data::F32(vec![0.0; 234])).unwrap();
    assert!(interp::run(&m.module, "main", &[x], &m.weights).is_err());
}
