//! The weight-store interface: `nn.weight` ops name tensors; a store resolves the names.
//!
//! File-backed stores (safetensors, GGUF; memory-mapped) live in `bitnet-frontend`. This crate has
//! the trait, an empty store and an in-memory store for tests and small programs.

use crate::tensor::Tensor;
use crate::types::ElemType;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a weight could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WeightError {
    /// No tensor of that name.
    #[error("weight \"{name}\" is not in {store}")]
    Missing {
        /// The requested name.
        name: String,
        /// Which store was asked (a file name, or a description).
        store: String,
    },
    /// The tensor exists but does not have the declared shape.
    #[error("weight \"{name}\" in {store} has shape {found:?}, the IR declares {expected:?}")]
    Shape {
        /// The requested name.
        name: String,
        /// Which store.
        store: String,
        /// The shape in the store.
        found: Vec<usize>,
        /// The declared shape.
        expected: Vec<usize>,
    },
    /// The tensor exists but cannot be converted to the declared element type.
    #[error("weight \"{name}\" in {store}: {reason}")]
    Convert {
        /// The requested name.
        name: String,
        /// Which store.
        store: String,
        /// What went wrong.
        reason: String,
    },
    /// The store could not read the tensor (I/O, corrupt file).
    #[error("weight \"{name}\" in {store}: {reason}")]
    Read {
        /// The requested name.
        name: String,
        /// Which store.
        store: String,
        /// What went wrong.
        reason: String,
    },
}

/// Resolves weight names to tensors.
pub trait WeightStore {
    /// A short description for diagnostics (usually the file name).
    fn describe(&self) -> String;

    /// Loads tensor `name` as `elem` with `shape`, converting as `Tensor::convert_for_load` allows.
    fn load(&self, name: &str, elem: ElemType, shape: &[usize]) -> Result<Tensor, WeightError>;

    /// Calls `f` with tensor `name`'s element type and its stored bytes (little endian, in index
    /// order, exactly `shape`'s elements), when the store holds it so (a mapped file's F16 table):
    /// a caller that only re-lays the values out reads them where they are, with no copy and no
    /// widening. Returns whether it called `f`; never for a tensor the store transforms as it
    /// reads it (dequantizing, unpacking, permuting). The store may release the bytes' pages once
    /// `f` returns.
    fn visit_stored(&self, _name: &str, _f: &mut dyn FnMut(ElemType, &[u8])) -> bool {
        false
    }

    /// The file and byte offset where tensor `name`'s stored bytes (those `visit_stored` gives)
    /// lie, when the store reads it from a file as it is: a caller that keeps those bytes as they
    /// are can map the file's pages instead of copying them. `None` by default.
    fn stored_file(&self, _name: &str) -> Option<StoredFile> {
        None
    }
}

/// Where a tensor's stored bytes lie in a file (`WeightStore::stored_file`).
#[derive(Debug)]
pub struct StoredFile {
    /// The open file (its own handle, so the caller may keep it).
    pub file: std::fs::File,
    /// The element type the file stores it in (little endian, index order).
    pub elem: ElemType,
    /// The byte offset of the tensor's first byte in the file.
    pub offset: u64,
    /// The tensor's bytes.
    pub len: u64,
}

/// Checks the shape of a tensor a store read and converts it to the declared element type.
pub fn finish_load(
    store: &dyn WeightStore,
    name: &str,
    tensor: Tensor,
    elem: ElemType,
    shape: &[usize],
) -> Result<Tensor, WeightError> {
    if tensor.shape != shape {
        return Err(WeightError::Shape {
            name: name.to_string(),
            store: store.describe(),
            found: tensor.shape,
            expected: shape.to_vec(),
        });
    }
    tensor
        .convert_for_load(elem)
        .map_err(|reason| WeightError::Convert {
            name: name.to_string(),
            store: store.describe(),
            reason,
        })
}

/// A store with no tensors: every load fails with `Missing`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoWeights;

impl WeightStore for NoWeights {
    fn describe(&self) -> String {
        "the empty weight store (no --weights given)".into()
    }

    fn load(&self, name: &str, _elem: ElemType, _shape: &[usize]) -> Result<Tensor, WeightError> {
        Err(WeightError::Missing {
            name: name.to_string(),
            store: self.describe(),
        })
    }
}

/// A tensor made from other weights each time it is loaded: a derived form (a packed layout)
/// computed where it is needed, straight from its source, instead of held beside it from the pass
/// that derived it until the backend copies it. The function reads its sources from the store it
/// is given (the one the tensor is loaded through, so a source may itself be derived).
#[derive(Clone)]
pub struct LazyTensor(pub Arc<MakeTensor>);

/// How a `LazyTensor` is made, from the store it is loaded through.
pub type MakeTensor = dyn Fn(&dyn WeightStore) -> Result<Tensor, WeightError> + Send + Sync;

impl std::fmt::Debug for LazyTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LazyTensor(..)")
    }
}

/// Tensors held in memory, by name, and tensors made on loading (`LazyTensor`).
#[derive(Clone, Debug, Default)]
pub struct MemoryWeights {
    /// The tensors.
    pub tensors: BTreeMap<String, Tensor>,
    /// The tensors made when loaded, from the store they are loaded through.
    pub lazy: BTreeMap<String, LazyTensor>,
}

impl MemoryWeights {
    /// Whether `name` is held or made here.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.lazy.contains_key(name)
    }

    /// Loads `name` as `load` does, a lazy tensor made from the sources `via` holds (`via` is the
    /// store the caller loads through: this one, or an overlay of it on a model's weights).
    pub fn load_via(
        &self,
        via: &dyn WeightStore,
        name: &str,
        elem: ElemType,
        shape: &[usize],
    ) -> Result<Tensor, WeightError> {
        match self.lazy.get(name) {
            Some(make) => finish_load(via, name, (make.0)(via)?, elem, shape),
            None => load_from_map(via, &self.tensors, name, elem, shape),
        }
    }
}

impl WeightStore for MemoryWeights {
    fn describe(&self) -> String {
        "the in-memory weight store".into()
    }

    fn load(&self, name: &str, elem: ElemType, shape: &[usize]) -> Result<Tensor, WeightError> {
        self.load_via(self, name, elem, shape)
    }
}

/// `store`'s load from tensors it holds in a map (`MemoryWeights`, or a map another store borrows):
/// a missing name is `Missing`, the rest as `finish_load`.
pub fn load_from_map(
    store: &dyn WeightStore,
    tensors: &BTreeMap<String, Tensor>,
    name: &str,
    elem: ElemType,
    shape: &[usize],
) -> Result<Tensor, WeightError> {
    let t = tensors
        .get(name)
        .cloned()
        .ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            store: store.describe(),
        })?;
    finish_load(store, name, t, elem, shape)
}
