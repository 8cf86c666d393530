//! A weight store over one `.safetensors` file, memory-mapped: the header is parsed and validated once
//! at open (every tensor's byte range inside the file and matching its shape), and a tensor's bytes are
//! read (and converted to the declared element type) only when an op asks for it.

use crate::error::FrontendError;
use bitnet_ir::weights::finish_load;
use bitnet_ir::{Data, ElemType, Tensor, WeightError, WeightStore};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What the header says about one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct StTensorInfo {
    /// The element type, or `None` for a dtype bitnetc does not read (named in `dtype`).
    pub elem: Option<ElemType>,
    /// The dtype as safetensors names it (`BF16`, `U8`…).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// The byte range of the data in the file.
    range: Range<usize>,
}

/// Tensors of one safetensors file.
pub struct SafetensorsStore {
    path: PathBuf,
    /// The open file, whose handle `stored_file` lends.
    file: std::fs::File,
    map: Mmap,
    tensors: BTreeMap<String, StTensorInfo>,
}

/// The bytes of one element of a safetensors dtype name, for the ones a header can declare.
fn dtype_bytes(name: &str) -> Option<u64> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Reads the JSON header of a safetensors file (`bytes`) and returns what is wrong with the first
/// tensor, in data order, whose shape × dtype does not match the length of its `data_offsets`
/// (an element count that overflows included); `None` when the header cannot be read that far or
/// every tensor fits (the caller then reports the crate's own error).
fn misfit_tensor(bytes: &[u8]) -> Option<String> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = usize::try_from(len).ok()?.checked_add(8)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..end)?).ok()?;
    let mut entries: Vec<(u64, &String, &serde_json::Value)> = header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .map(|(name, v)| {
            let start = v["data_offsets"][0].as_u64().unwrap_or(0);
            (start, name, v)
        })
        .collect();
    entries.sort_by_key(|(start, name, _)| (*start, name.as_str()));
    for (_, name, v) in entries {
        let dtype = v["dtype"].as_str()?;
        let shape: Vec<u64> = v["shape"]
            .as_array()?
            .iter()
            .map(serde_json::Value::as_u64)
            .collect::<Option<_>>()?;
        let (start, stop) = (
            v["data_offsets"][0].as_u64()?,
            v["data_offsets"][1].as_u64()?,
        );
        let held = stop.checked_sub(start);
        let needed = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype_bytes(dtype)?));
        match (needed, held) {
            (Some(n), Some(h)) if n == h => {}
            (None, _) => {
                return Some(format!(
                    "tensor \"{name}\": shape {shape:?} of {dtype} has more bytes than a 64-bit size holds"
                ));
            }
            (Some(n), _) => {
                return Some(format!(
                    "tensor \"{name}\": shape {shape:?} of {dtype} needs {n} bytes, its data_offsets [{start}, {stop}] hold {}",
                    held.map_or_else(|| "a negative length".into(), |h| h.to_string())
                ));
            }
        }
    }
    None
}

fn elem_of(dtype: Dtype) -> Option<ElemType> {
    Some(match dtype {
        Dtype::F32 => ElemType::F32,
        Dtype::F64 => ElemType::F64,
        Dtype::F16 => ElemType::F16,
        Dtype::BF16 => ElemType::BF16,
        Dtype::I8 => ElemType::I8,
        Dtype::I16 => ElemType::I16,
        Dtype::I32 => ElemType::I32,
        Dtype::I64 => ElemType::I64,
        Dtype::U8 => ElemType::U8,
        Dtype::U16 => ElemType::U16,
        Dtype::U32 => ElemType::U32,
        Dtype::U64 => ElemType::U64,
        Dtype::BOOL => ElemType::Bool,
        _ => return None,
    })
}

impl SafetensorsStore {
    /// Opens and maps `path`, checking that its header parses and every tensor lies inside the file.
    pub fn open(path: &Path) -> Result<Self, FrontendError> {
        let io = |source| FrontendError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and this process never writes the file. Another process
        // truncating it while mapped could fault on access; that is the usual mmap contract, and
        // every read below is bounds-checked against the length validated here.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        // `deserialize` validates the header: offsets in order, inside the buffer, sizes = shape × dtype.
        let st = SafeTensors::deserialize(&map).map_err(|e| {
            // Two of the crate's messages do not say what is wrong with a file of this size.
            let declared = map.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
            let hint = match (&e, declared) {
                (SafeTensorError::InvalidHeaderLength, Some(n)) => format!(
                    " (the header length field says {n} bytes, the file has {})",
                    map.len()
                ),
                (SafeTensorError::MetadataIncompleteBuffer, _) => format!(
                    " (the tensors' data offsets do not end at the end of the file, {} bytes: truncated or padded?)",
                    map.len()
                ),
                _ => String::new(),
            };
            // The crate's size and offset errors may name the tensor after the wrong one: name the
            // first tensor whose declared shape does not fit its data offsets, when one does not.
            if let Some(wrong) = misfit_tensor(&map) {
                return FrontendError::format(path, format!("not a valid safetensors file: {wrong}"));
            }
            FrontendError::format(path, format!("not a valid safetensors file: {e}{hint}"))
        })?;
        let header_len = map
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| FrontendError::format(path, "truncated header"))?;
        let data_start = usize::try_from(header_len)
            .ok()
            .and_then(|n| n.checked_add(8))
            .ok_or_else(|| FrontendError::format(path, "header length overflows"))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let start = view.data().as_ptr() as usize - map.as_ptr() as usize;
            let info = StTensorInfo {
                elem: elem_of(view.dtype()),
                dtype: format!("{:?}", view.dtype()),
                shape: view.shape().to_vec(),
                range: start..start + view.data().len(),
            };
            if info.range.start < data_start {
                return Err(FrontendError::format(
                    path,
                    format!("tensor \"{name}\" overlaps the header"),
                ));
            }
            tensors.insert(name, info);
        }
        Ok(SafetensorsStore {
            path: path.to_path_buf(),
            file,
            map,
            tensors,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's header entry, by name (sorted).
    pub fn tensors(&self) -> &BTreeMap<String, StTensorInfo> {
        &self.tensors
    }

    /// The header entry of `name`.
    pub fn info(&self, name: &str) -> Option<&StTensorInfo> {
        self.tensors.get(name)
    }

    /// The names of the tensors in the file, sorted.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// Reads tensor `name` as stored (no conversion), then drops this process's pages of its bytes
    /// (`mapped::release`).
    pub fn read(&self, name: &str) -> Result<Tensor, WeightError> {
        let read_err = |reason: String| WeightError::Read {
            name: name.to_string(),
            store: self.describe(),
            reason,
        };
        let info = self.tensors.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            store: self.describe(),
        })?;
        let elem = info
            .elem
            .ok_or_else(|| read_err(format!("dtype {} is not supported", info.dtype)))?;
        let bytes = self
            .map
            .get(info.range.clone())
            .ok_or_else(|| read_err("data outside the file".into()))?;
        let data = Data::from_le_bytes(elem, bytes)
            .ok_or_else(|| read_err("the data is not a whole number of elements".into()))?;
        // The bytes are copied: this process's pages of them can go (`mapped::release`).
        crate::mapped::release(&self.map, info.range.clone());
        Tensor::new(info.shape.clone(), data)
            .ok_or_else(|| read_err("the data size does not match the shape".into()))
    }
}

impl WeightStore for SafetensorsStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn visit_stored(&self, name: &str, f: &mut dyn FnMut(ElemType, &[u8])) -> bool {
        let Some(info) = self.tensors.get(name) else {
            return false;
        };
        let (Some(elem), Some(bytes)) = (info.elem, self.map.get(info.range.clone())) else {
            return false;
        };
        let whole = info
            .shape
            .iter()
            .try_fold(elem.bits().div_ceil(8) as usize, |acc, &d| {
                acc.checked_mul(d)
            });
        if whole != Some(bytes.len()) {
            return false;
        }
        f(elem, bytes);
        crate::mapped::release(&self.map, info.range.clone());
        true
    }

    /// A dtype the store reads as it is: the file and the tensor's data offset (the header and
    /// the offsets were checked at `open`).
    fn stored_file(&self, name: &str) -> Option<bitnet_ir::StoredFile> {
        let info = self.tensors.get(name)?;
        let elem = info.elem?;
        self.map.get(info.range.clone())?;
        Some(bitnet_ir::StoredFile {
            file: self.file.try_clone().ok()?,
            elem,
            offset: info.range.start as u64,
            len: info.range.len() as u64,
        })
    }

    fn load(&self, name: &str, elem: ElemType, shape: &[usize]) -> Result<Tensor, WeightError> {
        let t = self.read(name)?;
        finish_load(self, name, t, elem, shape)
    }
}
