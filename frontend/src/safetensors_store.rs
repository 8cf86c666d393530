//! A weight store over one `.safetensors` file, memory-mapped: the header is parsed at open, and a
//! tensor's bytes are read (and converted to the declared element type) only when an op asks for it.

use crate::error::FrontendError;
use bitnet_ir::weights::finish_load;
use bitnet_ir::{Data, ElemType, Tensor, WeightError, WeightStore};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

/// Tensors of one safetensors file.
pub struct SafetensorsStore {
    path: PathBuf,
    map: Mmap,
}

impl SafetensorsStore {
    /// Opens and maps `path`, checking that its header parses and every tensor lies inside the file.
    pub fn open(path: &Path) -> Result<Self, FrontendError> {
        let file = std::fs::File::open(path).map_err(|source| FrontendError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only; the file is not modified by this process. A concurrent writer
        // could change the bytes under us, which would give wrong weights but not memory unsafety in
        // this code, which only copies bytes out of the map.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| FrontendError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        SafeTensors::deserialize(&map).map_err(|e| {
            FrontendError::format(path, format!("not a valid safetensors file: {e}"))
        })?;
        Ok(SafetensorsStore {
            path: path.to_path_buf(),
            map,
        })
    }

    /// The names of the tensors in the file, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match SafeTensors::deserialize(&self.map) {
            Ok(st) => st.names().into_iter().map(str::to_string).collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    fn read(&self, name: &str) -> Result<Tensor, WeightError> {
        let read_err = |reason: String| WeightError::Read {
            name: name.to_string(),
            store: self.describe(),
            reason,
        };
        let st = SafeTensors::deserialize(&self.map).map_err(|e| read_err(e.to_string()))?;
        let view = st.tensor(name).map_err(|_| WeightError::Missing {
            name: name.to_string(),
            store: self.describe(),
        })?;
        let elem = match view.dtype() {
            Dtype::F32 => ElemType::F32,
            Dtype::F64 => ElemType::F64,
            Dtype::I16 => ElemType::I16,
            Dtype::U16 => ElemType::U16,
            Dtype::U32 => ElemType::U32,
            Dtype::U64 => ElemType::U64,
            Dtype::F16 => ElemType::F16,
            Dtype::BF16 => ElemType::BF16,
            Dtype::I8 => ElemType::I8,
            Dtype::U8 => ElemType::U8,
            Dtype::I32 => ElemType::I32,
            Dtype::I64 => ElemType::I64,
            Dtype::BOOL => ElemType::Bool,
            other => return Err(read_err(format!("dtype {other:?} is not supported"))),
        };
        let data = Data::from_le_bytes(elem, view.data())
            .ok_or_else(|| read_err("the data is not a whole number of elements".into()))?;
        Tensor::new(view.shape().to_vec(), data)
            .ok_or_else(|| read_err("the data size does not match the shape".into()))
    }
}

impl WeightStore for SafetensorsStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&self, name: &str, elem: ElemType, shape: &[usize]) -> Result<Tensor, WeightError> {
        let t = self.read(name)?;
        finish_load(self, name, t, elem, shape)
    }
}
