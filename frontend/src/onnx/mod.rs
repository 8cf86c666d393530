//! The ONNX importer: a `.onnx` file (opset 13 or newer) becomes a module with one function `@main`
//! in the `nn.*` dialect, and a lazy weight store over the file.
//!
//! - Graph inputs (other than initializers) are the arguments, in order; a `dim_param` becomes an IR
//!   symbol (uppercased, with the bound from `ImportOptions`). Graph outputs are the results.
//! - Initializers with at most `literal_max` elements are constants known at import (printed as
//!   `nn.constant` where a run-time op uses them); larger ones are `nn.weight {name = <initializer>}`,
//!   read from the file only when the function runs (`OnnxWeights`).
//! - Nodes whose operands are all known at import are folded with the IR ops' own `eval`; shape-like
//!   inputs (Reshape/Expand shapes, Slice bounds, axes, ConstantOfShape) must be known at import.
//! - The model's math is kept as written: no pattern is rewritten here (BitLinear lowering is a pass).
//!
//! The protobuf types are generated at build time from the vendored `onnx.proto` of onnx 1.23.2
//! (`build.rs`, protox and prost-build: no `protoc` needed). The file is memory-mapped and split
//! with a small wire-format reader so that initializer data is never copied at import.

mod convert;
mod graph;
mod math_ops;
mod node;
pub mod proto;
mod shape_ops;
mod tensor_proto;
mod values;
mod weights;
mod wire;

pub use graph::MIN_OPSET;
pub use weights::OnnxWeights;

use crate::error::FrontendError;
use bitnet_ir::{Module, Tensor};
use memmap2::Mmap;
use prost::Message;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// How to import a model.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The upper bound of every symbol made from a `dim_param` (default 4096).
    pub symbol_max: u64,
    /// Bounds for particular symbols, by ONNX `dim_param` or IR symbol name.
    pub symbol_bounds: BTreeMap<String, u64>,
    /// Graph inputs to treat as constants with these values (they are not arguments then): for
    /// models that feed a shape, axes or slice bounds as an input.
    pub freeze_inputs: BTreeMap<String, Tensor>,
    /// Constants with at most this many elements are printed inline as `nn.constant`; larger ones
    /// go to the weight store (default 16).
    pub literal_max: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            symbol_max: 4096,
            symbol_bounds: BTreeMap::new(),
            freeze_inputs: BTreeMap::new(),
            literal_max: 16,
        }
    }
}

/// An imported model.
pub struct OnnxModel {
    /// One function, `@main`.
    pub module: Module,
    /// The initializers and folded constants its `nn.weight` ops name.
    pub weights: OnnxWeights,
    /// The ONNX names of `@main`'s arguments, in order.
    pub inputs: Vec<String>,
    /// The ONNX names of `@main`'s results, in order.
    pub outputs: Vec<String>,
}

fn map_file(path: &Path) -> Result<Mmap, FrontendError> {
    let io = |source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(FrontendError::format(
            path,
            "the file is empty, not an ONNX model",
        ));
    }
    // SAFETY: the map is read-only and this process does not modify the file. A concurrent writer
    // could change the bytes under us, which gives wrong weights or a decode error, not memory
    // unsafety: the bytes are only copied out of the map.
    unsafe { Mmap::map(&file) }.map_err(io)
}

/// Imports `path` with the default options.
pub fn import_onnx(path: &Path) -> Result<OnnxModel, FrontendError> {
    import_onnx_with(path, &ImportOptions::default())
}

/// Imports `path`.
pub fn import_onnx_with(path: &Path, opts: &ImportOptions) -> Result<OnnxModel, FrontendError> {
    let map = map_file(path)?;
    graph::import(path, map, opts).map_err(|m| FrontendError::format(path, m))
}

/// The graph inputs of `path` that feed an input the IR needs at compile time (a Reshape shape,
/// Slice bounds, axes…): import such a model with these inputs in `ImportOptions::freeze_inputs`.
pub fn constant_inputs(path: &Path) -> Result<Vec<String>, FrontendError> {
    let map = map_file(path)?;
    let split = wire::split_model(&map).map_err(|m| FrontendError::format(path, m))?;
    let graph = split.model.graph.unwrap_or_default();
    let inits: HashSet<&str> = split.initializers.iter().map(|i| i.meta.name()).collect();
    let mut needed: HashSet<&str> = HashSet::new();
    for n in &graph.node {
        for &slot in convert::constant_slots(n.op_type()) {
            if let Some(name) = n.input.get(slot) {
                needed.insert(name);
            }
        }
    }
    Ok(graph
        .input
        .iter()
        .map(|vi| vi.name())
        .filter(|n| needed.contains(n) && !inits.contains(n))
        .map(str::to_string)
        .collect())
}

/// Reads a serialized `TensorProto` (the `input_0.pb` files of ONNX's backend tests).
pub fn read_tensor_pb(path: &Path) -> Result<Tensor, FrontendError> {
    let bytes = std::fs::read(path).map_err(|source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let t = proto::TensorProto::decode(bytes.as_slice())
        .map_err(|e| FrontendError::format(path, format!("not a TensorProto: {e}")))?;
    if t.data_location == Some(proto::tensor_proto::DataLocation::External as i32) {
        return Err(FrontendError::format(
            path,
            "external data is not supported here",
        ));
    }
    tensor_proto::decode(&t, t.raw_data.as_deref()).map_err(|m| FrontendError::format(path, m))
}

/// The name a `TensorProto` file gives its tensor (empty if none).
pub fn tensor_pb_name(path: &Path) -> Result<String, FrontendError> {
    let bytes = std::fs::read(path).map_err(|source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let t = proto::TensorProto::decode(bytes.as_slice())
        .map_err(|e| FrontendError::format(path, format!("not a TensorProto: {e}")))?;
    Ok(t.name().to_string())
}
