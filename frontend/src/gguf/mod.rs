//! A GGUF reader (llama.cpp / ggml model files, versions 2 and 3), memory-mapped: the header is parsed
//! and checked at `open`, tensors are decoded when asked for.
//!
//! - Layout: formats.md §4.1. Every count, length, dimension and offset is checked against the file
//!   before use or allocation; every tensor lies, aligned, inside the file and overlaps no other.
//! - Types: F32, F16, BF16, F64, I8..I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (`blocks`), the K-quants Q2_K,
//!   Q3_K, Q4_K, Q5_K, Q6_K (`kquants`), TQ1_0, TQ2_0 and I2_S decode (`dequantize`, and `ternary`
//!   for the ternary ones). Other known ggml types (the IQ* codebooks, MXFP4, NVFP4, Q1_0) can be
//!   listed and their bytes read, but not decoded. Ids 36–39 collide with the BitNet fork: see `ggml_type`.
//! - Shapes: GGUF stores dims innermost first (`ne0` = the contiguous axis), so a PyTorch `[out, in]`
//!   weight is `[in, out]` here; `GgufTensorInfo::shape` gives the PyTorch order (dims reversed), and
//!   the flattened element order is the same in both.
//!
//! ## I2_S byte layout
//!
//! bitnet.cpp has three I2_S layouts (formats.md §4.5): x86 `ACT_PARALLEL` (128-element blocks, the
//! default), ARM NEON (64-element blocks) and x86 without `ACT_PARALLEL` ("1x4", 4-row groups). Nothing
//! in a file tells them apart: the type id (36), `general.file_type` (40) and the byte size
//! (`ne0·ne1/4 + 32`) are the same, `quantize_i2_s` writes only codes and the f32 scale (no marker in
//! the 32-byte trailer), the converters (`utils/convert-hf-to-gguf-bitnet.py`, `llama-quantize`) add
//! no key for it, and every byte is a valid code group in all three layouts (they are permutations of
//! the same codes), so the bytes cannot tell either. This reader therefore assumes the x86
//! `ACT_PARALLEL` layout: the one the python converter writes, the one `dequantize_row_i2_s` reads,
//! and the one the official `ggml-model-i2_s.gguf` uses (bitnet.cpp issues #585/#598: the same file
//! is correct on x86 and garbled by the 64-block ARM kernels). It rejects what cannot be that layout:
//! `ne0` not a multiple of 128, or a code 3 anywhere. An ARM- or 1x4-quantized file with `ne0 % 128
//! == 0` decodes without error to permuted weights; only a comparison with reference weights can
//! catch that.

pub mod blocks;
mod decode;
pub mod ggml_type;
mod header;
mod import;
pub mod kquants;
mod metadata;
pub mod tokenizer;
pub mod value;

pub use decode::TernaryScale;
pub(crate) use decode::float_ternary;
pub use ggml_type::GgmlType;
pub use import::{GgufWeights, import_gguf};
pub use tokenizer::GgufTokenizer;
pub use value::{GgufArray, GgufValue, GgufValueType};

use crate::error::FrontendError;
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One tensor's entry in the header, checked at open: its bytes lie inside the file.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` = ne0, the contiguous axis.
    pub dims: Vec<usize>,
    /// The element type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: usize,
    /// Offset of the data from the start of the file.
    pub start: usize,
    /// Bytes of data.
    pub n_bytes: usize,
    /// Element count.
    pub numel: usize,
}

impl GgufTensorInfo {
    /// The shape in PyTorch order (outermost first): `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// Where a file's bytes live.
enum Bytes {
    /// A read-only map of the file, and the file (whose handle `stored_file` lends).
    Map(Mmap, std::fs::File),
    Owned(Vec<u8>),
}

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    alignment: u64,
    data_start: usize,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    index: BTreeMap<String, usize>,
}

impl GgufFile {
    /// Opens and maps `path`, parsing and checking the whole header.
    pub fn open(path: &Path) -> Result<GgufFile, FrontendError> {
        let io = |source| FrontendError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len == 0 {
            return Err(FrontendError::format(
                path,
                "the file is empty, not a GGUF file",
            ));
        }
        // SAFETY: the map is read-only and this process does not modify the file. A concurrent writer
        // could change the bytes under us, which gives wrong weights but no memory unsafety here: the
        // code only copies bytes out of the map, and every range is checked against the map's length.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        GgufFile::new(path, Bytes::Map(map, file))
    }

    /// Parses a GGUF file held in memory; `path` only names it in messages.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<GgufFile, FrontendError> {
        GgufFile::new(path, Bytes::Owned(bytes))
    }

    fn new(path: &Path, bytes: Bytes) -> Result<GgufFile, FrontendError> {
        let slice = match &bytes {
            Bytes::Map(m, _) => &m[..],
            Bytes::Owned(v) => &v[..],
        };
        let h = header::parse(slice).map_err(|m| FrontendError::format(path, m))?;
        let index = h
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            bytes,
            version: h.version,
            alignment: h.alignment,
            data_start: h.data_start,
            metadata: h.metadata,
            tensors: h.tensors,
            index,
        })
    }

    fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Map(m, _) => m,
            Bytes::Owned(v) => v,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The file offset where the data section starts.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&GgufTensorInfo, FrontendError> {
        self.index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .ok_or_else(|| self.err(format!("no tensor named '{name}'")))
    }

    /// The raw bytes of a tensor (empty if `info` does not describe a range of this file).
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        info.start
            .checked_add(info.n_bytes)
            .and_then(|end| self.bytes().get(info.start..end))
            .unwrap_or(&[])
    }

    /// The file and the offset of `info`'s bytes in it (`WeightStore::stored_file`), which hold
    /// elements of `elem`, for a mapped file; `None` for one held in memory or a range outside
    /// the file.
    pub fn stored_file(
        &self,
        info: &GgufTensorInfo,
        elem: bitnet_ir::ElemType,
    ) -> Option<bitnet_ir::StoredFile> {
        let Bytes::Map(map, file) = &self.bytes else {
            return None;
        };
        map.get(info.start..info.start.checked_add(info.n_bytes)?)?;
        Some(bitnet_ir::StoredFile {
            file: file.try_clone().ok()?,
            elem,
            offset: info.start as u64,
            len: info.n_bytes as u64,
        })
    }

    /// Drops this process's pages of tensor `name`'s bytes, once they have been read (a mapped
    /// file only; nothing happens otherwise or on failure). The kernel keeps them in its page
    /// cache and a later read maps them again, so a model compiled tensor by tensor does not keep
    /// the whole file in its resident memory on top of what it made of it.
    pub fn release(&self, name: &str) {
        if let (Bytes::Map(map, _), Ok(info)) = (&self.bytes, self.tensor_info(name))
            && let Some(end) = info.start.checked_add(info.n_bytes)
        {
            crate::mapped::release(map, info.start..end);
        }
    }

    /// A format error about this file.
    fn err(&self, message: impl Into<String>) -> FrontendError {
        FrontendError::format(&self.path, message)
    }
}
