//! `AlignedBytes`: a byte buffer whose start is 64-byte aligned, owned or borrowed from a read-only
//! file mapping. The backends build a program's weights in one (`push` pads each tensor to a
//! 64-byte boundary) and the executor adopts it as it is, so a compiled model's weights are never
//! held twice; a loaded artifact's weights can stay in the file's mapping. Owned bytes live in an
//! anonymous mapping (zeroed by the kernel, huge pages asked for when large).

use std::fmt;
use std::ops::Deref;

/// Buffers at least this large ask for transparent huge pages (`MADV_HUGEPAGE`): a model's
/// weights, streamed once per token, then cross no 4 KiB page boundary every 4 KiB, where the
/// hardware prefetchers stop and the TLB misses. The price is paid once, when the pages are first
/// written: the kernel zeroes 2 MiB at a time (docs/performance.md has both sides measured).
const HUGE_PAGES_FROM: usize = 4 << 20;

/// `BITNETC_HUGE_PAGES=off` keeps owned buffers on 4 KiB pages (a faster compile, a slower decode).
const HUGE_PAGES_ENV: &str = "BITNETC_HUGE_PAGES";

/// Whether large owned buffers ask for huge pages (read once; anything but `off` or `0`: yes).
fn huge_pages_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WANTED.get_or_init(|| {
        std::env::var(HUGE_PAGES_ENV).map_or(true, |v| !matches!(v.trim(), "off" | "0"))
    })
}

enum Storage {
    /// An anonymous mapping this buffer owns (`None` while empty), whose pages the kernel supplies
    /// zeroed on first touch; bytes past `len` are zero.
    Owned(Option<memmap2::MmapMut>),
    /// `len` bytes at `start` of a read-only mapping (`start` is 64-byte aligned in memory).
    Mapped { map: memmap2::Mmap, start: usize },
}

/// A 64-byte aligned byte buffer (see the module doc). Dereferences to its bytes.
pub struct AlignedBytes {
    storage: Storage,
    len: usize,
}

/// `bytes` (at least one) of zeroed, page-aligned memory: an anonymous mapping, advised to use huge
/// pages when large. Running out of address space or memory ends the process as a failed
/// allocation does (`handle_alloc_error`), as the `Vec` this replaced did.
fn anonymous(bytes: usize) -> memmap2::MmapMut {
    let bytes = bytes.max(1);
    match memmap2::MmapMut::map_anon(bytes) {
        Ok(map) => {
            #[cfg(target_os = "linux")]
            if bytes >= HUGE_PAGES_FROM && huge_pages_wanted() {
                // Only advice: without huge pages the buffer works the same, a little slower.
                let _ = map.advise(memmap2::Advice::HugePage);
            }
            map
        }
        Err(_) => std::alloc::handle_alloc_error(
            std::alloc::Layout::from_size_align(bytes, 64)
                .unwrap_or(std::alloc::Layout::new::<[u8; 64]>()),
        ),
    }
}

impl AlignedBytes {
    /// An empty buffer.
    pub fn new() -> AlignedBytes {
        AlignedBytes {
            storage: Storage::Owned(None),
            len: 0,
        }
    }

    /// An empty buffer with room for `bytes` bytes before it reallocates. The room is reserved
    /// address space: pages not yet written take no memory.
    pub fn with_capacity(bytes: usize) -> AlignedBytes {
        AlignedBytes {
            storage: Storage::Owned((bytes > 0).then(|| anonymous(bytes))),
            len: 0,
        }
    }

    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            storage: Storage::Owned((len > 0).then(|| anonymous(len))),
            len,
        }
    }

    /// A copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::with_capacity(bytes.len());
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
        let offset = self.len.div_ceil(64) * 64;
        let end = offset + len;
        let capacity = match &self.storage {
            Storage::Owned(map) => map.as_ref().map_or(0, |m| m.len()),
            Storage::Mapped { .. } => 0,
        };
        if end > capacity {
            // Grow (or leave the file's mapping): a new mapping, at least twice the old one, with
            // the bytes so far copied in; the rest of it is zero.
            let mut map = anonymous(end.max(capacity.saturating_mul(2)));
            map[..self.len].copy_from_slice(self.as_slice());
            self.storage = Storage::Owned(Some(map));
        }
        match &mut self.storage {
            Storage::Owned(Some(map)) => fill(&mut map[offset..end]),
            // Nothing to write: `end` is 0.
            _ => fill(&mut []),
        }
        self.len = end;
        offset as u64
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.storage {
            Storage::Owned(map) => map.as_ref().map_or(&[], |m| &m[..self.len]),
            Storage::Mapped { map, start } => map.get(*start..*start + self.len).unwrap_or(&[]),
        }
    }

    /// The bytes, writable; `None` for a mapped buffer.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        match &mut self.storage {
            Storage::Owned(map) => Some(map.as_mut().map_or(&mut [], |m| &mut m[..self.len])),
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

    #[test]
    fn growing_past_the_capacity_keeps_the_bytes_and_zeroes_the_rest() {
        let mut a = AlignedBytes::with_capacity(64);
        a.push(&[7; 64]);
        // Past the capacity, then past the size that asks for huge pages.
        let at = a.push_with(5 << 20, |dst| {
            assert!(dst.iter().all(|&b| b == 0));
            dst[0] = 1;
        });
        assert_eq!(at, 64);
        assert!(a[..64].iter().all(|&b| b == 7));
        assert_eq!(a[64], 1);
        assert!(a[65..].iter().all(|&b| b == 0));
        assert_eq!(a.as_ptr().align_offset(64), 0);
        let mut empty = AlignedBytes::new();
        assert_eq!(empty.push(&[]), 0);
        assert!(empty.is_empty());
        assert_eq!(empty.as_mut_slice(), Some(&mut [][..]));
    }
}
