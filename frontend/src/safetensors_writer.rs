//! Writing safetensors files tensor by tensor (`bitnetc synth`, `bitnetc export`): the header is
//! computed from the names, dtypes and shapes alone, then each tensor's bytes are streamed in order,
//! so a large checkpoint never needs to be in memory. The byte count of every tensor is checked
//! against its dtype and shape as it is written.

use crate::error::FrontendError;
use std::io::Write;
use std::path::Path;

/// One tensor of a file being written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// The name in the file.
    pub name: String,
    /// The safetensors dtype: `U8`, `BF16`, `F16` or `F32`.
    pub dtype: &'static str,
    /// The shape, outermost first.
    pub shape: Vec<u64>,
}

impl TensorEntry {
    /// Bytes of the tensor's data.
    pub fn bytes(&self) -> u64 {
        let n = self.shape.iter().fold(1u64, |a, &d| a.saturating_mul(d));
        let width = match self.dtype {
            "U8" | "I8" | "BOOL" => 1,
            "BF16" | "F16" => 2,
            _ => 4,
        };
        n.saturating_mul(width)
    }
}

/// The header JSON (with `__metadata__` `format: pt`, padded with spaces to a multiple of 8 bytes)
/// and the data size. Tensors are laid out in the order given.
pub fn header(entries: &[TensorEntry]) -> (String, u64) {
    use std::fmt::Write as _;
    let mut h = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut offset = 0u64;
    for t in entries {
        let end = offset.saturating_add(t.bytes());
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        let _ = write!(
            h,
            ",{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            serde_json::Value::String(t.name.clone()),
            t.dtype,
            shape.join(",")
        );
        offset = end;
    }
    h.push('}');
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    (h, offset)
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Creates `path` (which must not exist) and writes `entries`: `data(i, w)` writes tensor `i`'s bytes
/// (little-endian, row-major). Every tensor must write exactly its size; the file is flushed to disk.
pub fn write_safetensors(
    path: &Path,
    entries: &[TensorEntry],
    mut data: impl FnMut(usize, &mut dyn Write) -> Result<(), FrontendError>,
) -> Result<(), FrontendError> {
    let io = |source| FrontendError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (head, _) = header(entries);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    let mut w = Counting {
        inner: std::io::BufWriter::with_capacity(8 << 20, file),
        count: 0,
    };
    w.write_all(&(head.len() as u64).to_le_bytes())
        .and_then(|()| w.write_all(head.as_bytes()))
        .map_err(io)?;
    for (i, t) in entries.iter().enumerate() {
        let before = w.count;
        data(i, &mut w)?;
        let wrote = w.count - before;
        if wrote != t.bytes() {
            return Err(FrontendError::format(
                path,
                format!(
                    "tensor \"{}\": wrote {wrote} bytes, but {} {:?} takes {}",
                    t.name,
                    t.dtype,
                    t.shape,
                    t.bytes()
                ),
            ));
        }
    }
    let file = w.inner.into_inner().map_err(|e| FrontendError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io)
}
