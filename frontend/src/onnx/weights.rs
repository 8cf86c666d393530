//! `OnnxWeights`: the weight store of an imported ONNX model. Initializers are read lazily from the
//! memory-mapped model file (`raw_data` or typed fields) or from external data files next to it;
//! tensors the importer computed (folded constants too large to print inline) are held in memory.
//!
//! External data is read only from files inside the model's folder: a `location` that is absolute,
//! has a `..` component or resolves (through links) outside the folder is rejected at import, and so
//! is an `offset`/`length` that does not fit in the file or does not match the tensor's size.

use super::proto::TensorProto;
use super::proto::tensor_proto::DataLocation;
use super::tensor_proto;
use super::wire::RawInitializer;
use bitnet_ir::weights::finish_load;
use bitnet_ir::{ElemType, Tensor, WeightError, WeightStore};
use memmap2::Mmap;
use prost::Message;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where the elements of one tensor are.
enum Source {
    /// In the model file: `raw_data` at `raw`, or typed fields inside `message`.
    File {
        meta: TensorProto,
        raw: Option<Range<usize>>,
        message: Range<usize>,
    },
    /// In an external data file, at `offset`, `length` bytes.
    External {
        meta: TensorProto,
        file: PathBuf,
        offset: usize,
        length: usize,
    },
    /// Computed by the importer.
    Memory(Tensor),
}

struct Entry {
    elem: ElemType,
    shape: Vec<usize>,
    source: Source,
}

/// The tensors of an imported ONNX model, by name (initializer names, and the ONNX value names of
/// constants the importer folded).
pub struct OnnxWeights {
    path: PathBuf,
    map: Mmap,
    entries: BTreeMap<String, Entry>,
}

impl OnnxWeights {
    pub(crate) fn new(path: &Path, map: Mmap) -> Self {
        OnnxWeights {
            path: path.to_path_buf(),
            map,
            entries: BTreeMap::new(),
        }
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of every tensor, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// True if the store has a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The element type and shape of tensor `name`.
    pub fn layout(&self, name: &str) -> Option<(ElemType, &[usize])> {
        self.entries.get(name).map(|e| (e.elem, e.shape.as_slice()))
    }

    /// Registers an initializer, checking its data's size (and, for external data, its file) now so
    /// that a bad model fails at import rather than at run time.
    pub(crate) fn add_initializer(&mut self, init: &RawInitializer) -> Result<(), String> {
        let meta = &init.meta;
        let name = meta.name.clone().unwrap_or_default();
        let (elem, shape, bytes) = tensor_proto::layout(meta)?;
        let external = meta.data_location == Some(DataLocation::External as i32);
        let source = if external {
            let (file, offset, length) = self.external(meta, bytes)?;
            Source::External {
                meta: meta.clone(),
                file,
                offset,
                length,
            }
        } else {
            match &init.raw {
                Some(r) if r.len() != bytes => {
                    return Err(format!(
                        "raw_data has {} bytes but {} {:?} needs {bytes}",
                        r.len(),
                        tensor_proto::type_name(meta.data_type.unwrap_or(0)),
                        meta.dims
                    ));
                }
                Some(_) => {}
                None => {
                    let numel = bytes / tensor_proto::elem_bytes(elem).max(1);
                    if init.typed_len != numel {
                        return Err(format!(
                            "{} has {} elements but {} {:?} needs {numel}",
                            tensor_proto::typed_field(elem),
                            init.typed_len,
                            tensor_proto::type_name(meta.data_type.unwrap_or(0)),
                            meta.dims
                        ));
                    }
                }
            }
            Source::File {
                meta: meta.clone(),
                raw: init.raw.clone(),
                message: init.message.clone(),
            }
        };
        if self.entries.contains_key(&name) {
            return Err("a second initializer has the same name".into());
        }
        self.entries.insert(
            name,
            Entry {
                elem,
                shape,
                source,
            },
        );
        Ok(())
    }

    /// Adds a tensor computed at import under `name` (which must be free).
    pub(crate) fn add_memory(&mut self, name: &str, t: Tensor) {
        self.entries.insert(
            name.to_string(),
            Entry {
                elem: t.elem(),
                shape: t.shape.clone(),
                source: Source::Memory(t),
            },
        );
    }

    /// Checks an external-data reference and returns (file, offset, length).
    fn external(
        &self,
        meta: &TensorProto,
        bytes: usize,
    ) -> Result<(PathBuf, usize, usize), String> {
        let (mut location, mut offset, mut length) = (None, 0usize, None);
        for kv in &meta.external_data {
            let value = kv.value.as_deref().unwrap_or("");
            let number = || {
                value
                    .parse::<usize>()
                    .map_err(|_| format!("external data {}: `{value}` is not a size", kv.key()))
            };
            match kv.key() {
                "location" => location = Some(value),
                "offset" => offset = number()?,
                "length" => length = Some(number()?),
                _ => {}
            }
        }
        let location = location.ok_or("external data without a `location`")?;
        check_location(location)?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let joined = dir.join(location);
        let real = joined
            .canonicalize()
            .map_err(|e| format!("external data file {}: {e}", joined.display()))?;
        let real_dir = dir
            .canonicalize()
            .map_err(|e| format!("model folder {}: {e}", dir.display()))?;
        if !real.starts_with(&real_dir) {
            return Err(format!(
                "external data location `{location}` resolves to {}, outside the model's folder",
                real.display()
            ));
        }
        let size = std::fs::metadata(&real)
            .map_err(|e| format!("external data file {}: {e}", real.display()))?
            .len();
        let size = usize::try_from(size).map_err(|_| "external data file too large")?;
        let length = match length {
            Some(l) => l,
            None => size.checked_sub(offset).ok_or_else(|| {
                format!(
                    "external data offset {offset} is past the end of `{location}` ({size} bytes)"
                )
            })?,
        };
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(format!(
                "external data offset {offset} + length {length} is past the end of `{location}` \
                 ({size} bytes)"
            ));
        }
        if length != bytes {
            return Err(format!(
                "external data length {length} does not match the tensor's size ({bytes} bytes)"
            ));
        }
        Ok((real, offset, length))
    }

    /// Reads tensor `name` in its stored element type.
    pub fn read(&self, name: &str) -> Result<Tensor, WeightError> {
        let entry = self.entries.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            store: self.describe(),
        })?;
        let fail = |reason: String| WeightError::Read {
            name: name.to_string(),
            store: self.describe(),
            reason,
        };
        match &entry.source {
            Source::Memory(t) => Ok(t.clone()),
            Source::File { meta, raw, message } => match raw {
                Some(r) => match self.map.get(r.clone()) {
                    Some(bytes) => tensor_proto::decode(meta, Some(bytes)),
                    None => Err("raw_data lies outside the file".into()),
                },
                None => self
                    .map
                    .get(message.clone())
                    .ok_or_else(|| "the tensor lies outside the file".to_string())
                    .and_then(|b| TensorProto::decode(b).map_err(|e| e.to_string()))
                    .and_then(|full| tensor_proto::decode(&full, None)),
            }
            .map_err(fail),
            Source::External {
                meta,
                file,
                offset,
                length,
            } => {
                if *length == 0 {
                    return tensor_proto::decode(meta, Some(&[])).map_err(fail);
                }
                let f = std::fs::File::open(file)
                    .map_err(|e| fail(format!("{}: {e}", file.display())))?;
                // SAFETY: read-only map of a file this process does not modify; see SafetensorsStore.
                let map = unsafe { Mmap::map(&f) }
                    .map_err(|e| fail(format!("{}: {e}", file.display())))?;
                let bytes = map
                    .get(*offset..offset + length)
                    .ok_or_else(|| fail(format!("{} is shorter than at import", file.display())))?;
                tensor_proto::decode(meta, Some(bytes)).map_err(fail)
            }
        }
    }
}

/// Rejects external-data locations that could leave the model's folder.
fn check_location(location: &str) -> Result<(), String> {
    let b = location.as_bytes();
    let drive = b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic();
    if location.is_empty() {
        return Err("external data location is empty".into());
    }
    if location.starts_with(['/', '\\']) || drive || Path::new(location).is_absolute() {
        return Err(format!(
            "external data location `{location}` is an absolute path; only files inside the model's \
             folder are read"
        ));
    }
    if location.split(['/', '\\']).any(|c| c == "..") {
        return Err(format!(
            "external data location `{location}` has a `..` component; only files inside the \
             model's folder are read"
        ));
    }
    Ok(())
}

impl WeightStore for OnnxWeights {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&self, name: &str, elem: ElemType, shape: &[usize]) -> Result<Tensor, WeightError> {
        let t = self.read(name)?;
        finish_load(self, name, t, elem, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::check_location;

    #[test]
    fn locations_that_leave_the_folder_are_rejected() {
        assert!(check_location("w.bin").is_ok());
        assert!(check_location("data/w.bin").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../w.bin",
            "a/../../w.bin",
            "a\\..\\w",
            "C:\\w.bin",
            "\\\\srv\\w",
        ] {
            assert!(check_location(bad).is_err(), "{bad}");
        }
    }
}
