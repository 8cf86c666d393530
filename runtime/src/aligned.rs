//! `AlignedBytes`: a byte buffer whose start is 64-byte aligned, owned or borrowed from a read-only
//! file mapping. The backends build a program's weights in one (`push` pads each tensor to a
//! 64-byte boundary) and the executor adopts it as it is, so a compiled model's weights are never
//! held twice; a loaded artifact's weights can stay in the file's mapping.

use std::fmt;
use std::ops::Deref;

/// One 64-byte line, the unit of owned storage (so the storage is 64-byte aligned).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

enum Storage {
    /// Lines this buffer owns; bytes past `len` are zero.
    Owned(Vec<Line>),
    /// `len` bytes at `start` of a read-only mapping (`start` is 64-byte aligned in memory).
    Mapped { map: memmap2::Mmap, start: usize },
}

/// A 64-byte aligned byte buffer (see the module doc). Dereferences to its bytes.
pub struct AlignedBytes {
    storage: Storage,
    len: usize,
}

impl AlignedBytes {
    /// An empty buffer.
    pub fn new() -> AlignedBytes {
        AlignedBytes {
            storage: Storage::Owned(Vec::new()),
            len: 0,
        }
    }

    /// An empty buffer with room for `bytes` bytes before it reallocates. The room is reserved
    /// address space: pages not yet written take no memory.
    pub fn with_capacity(bytes: usize) -> AlignedBytes {
        AlignedBytes {
            storage: Storage::Owned(Vec::with_capacity(bytes.div_ceil(64))),
            len: 0,
        }
    }

    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            storage: Storage::Owned(vec![Line([0; 64]); len.div_ceil(64)]),
            len,
        }
    }

    /// A copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::new();
        a.push(bytes);
        a
    }

    /// `range` of `map` without a copy, if its start is 64-byte aligned in memory and the range
    /// lies in the mapping; `None` otherwise.
    pub fn from_mapped(map: memmap2::Mmap, range: std::ops::Range<usize>) -> Option<AlignedBytes> {
        let bytes = map.get(range.clone())?;
        if bytes.as_ptr().align_offset(64) != 0 {
            return None;
        }
        Some(AlignedBytes {
            storage: Storage::Mapped {
                map,
                start: range.start,
            },
            len: range.len(),
        })
    }

    /// Whether the bytes are borrowed from a file mapping.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    /// Appends `data` at the next 64-byte boundary (zero padding before it) and returns its offset.
    /// A mapped buffer is first copied into owned storage.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        self.push_with(data.len(), |dst| dst.copy_from_slice(data))
    }

    /// Appends `len` bytes written in place by `fill` (given them zeroed) at the next 64-byte
    /// boundary, and returns their offset: a large tensor is converted straight into the buffer,
    /// without a byte copy of it first.
    pub fn push_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> u64 {
        if let Storage::Mapped { .. } = self.storage {
            let owned = AlignedBytes::from_slice(self);
            *self = owned;
        }
        let offset = self.len.div_ceil(64) * 64;
        let end = offset + len;
        if let Storage::Owned(lines) = &mut self.storage {
            lines.resize(end.div_ceil(64), Line([0; 64]));
            // SAFETY: `lines` holds at least `end` initialized bytes (`Line` is plain bytes).
            let all = unsafe {
                std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), lines.len() * 64)
            };
            fill(&mut all[offset..end]);
        }
        self.len = end;
        offset as u64
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.storage {
            // SAFETY: `lines` holds `lines.len() * 64 >= len` initialized bytes.
            Storage::Owned(lines) => unsafe {
                std::slice::from_raw_parts(lines.as_ptr().cast::<u8>(), self.len)
            },
            Storage::Mapped { map, start } => map.get(*start..*start + self.len).unwrap_or(&[]),
        }
    }

    /// The bytes, writable; `None` for a mapped buffer.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        match &mut self.storage {
            // SAFETY: as in `as_slice`.
            Storage::Owned(lines) => Some(unsafe {
                std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), self.len)
            }),
            Storage::Mapped { .. } => None,
        }
    }
}

impl Default for AlignedBytes {
    fn default() -> AlignedBytes {
        AlignedBytes::new()
    }
}

impl Deref for AlignedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Clone for AlignedBytes {
    /// An owned copy (of a mapped buffer too).
    fn clone(&self) -> AlignedBytes {
        AlignedBytes::from_slice(self)
    }
}

impl fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AlignedBytes({} bytes{})",
            self.len,
            if self.is_mapped() { ", mapped" } else { "" }
        )
    }
}

impl PartialEq for AlignedBytes {
    fn eq(&self, other: &AlignedBytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl From<&[u8]> for AlignedBytes {
    fn from(bytes: &[u8]) -> AlignedBytes {
        AlignedBytes::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::AlignedBytes;

    #[test]
    fn push_aligns_every_tensor_and_keeps_the_bytes() {
        let mut a = AlignedBytes::with_capacity(10);
        assert_eq!(a.push(&[1, 2, 3]), 0);
        assert_eq!(a.push(&[4; 70]), 64);
        assert_eq!(a.push(&[]), 192);
        assert_eq!(a.push(&[5]), 192);
        assert_eq!(a.len(), 193);
        assert_eq!(a.as_ptr().align_offset(64), 0);
        assert_eq!(&a[..4], &[1, 2, 3, 0]);
        assert!(a[64..134].iter().all(|&b| b == 4));
        assert!(a[134..192].iter().all(|&b| b == 0));
        assert_eq!(a[192], 5);
        assert_eq!(a.clone(), a);
        assert_eq!(AlignedBytes::zeroed(5).as_slice(), &[0; 5]);
    }

    #[test]
    fn push_with_writes_in_place_after_zero_padding() {
        let mut a = AlignedBytes::new();
        a.push(&[9; 3]);
        let at = a.push_with(5, |dst| {
            assert_eq!(dst, &[0; 5], "the bytes handed out are zeroed");
            dst.copy_from_slice(&[1, 2, 3, 4, 5]);
        });
        assert_eq!(at, 64);
        assert_eq!(a.len(), 69);
        assert!(a[3..64].iter().all(|&b| b == 0));
        assert_eq!(&a[64..], &[1, 2, 3, 4, 5]);
    }
}
