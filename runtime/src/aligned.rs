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

/// `BITNETC_MAP_WEIGHTS=off` copies a model file's bytes into the weights buffer rather than
/// mapping the file's pages there (`AlignedBytes::push_file`): the compiled model then no longer
/// reads the file, so replacing the file in place (rather than by a rename) while a server runs
/// cannot change or fault its weights.
const MAP_WEIGHTS_ENV: &str = "BITNETC_MAP_WEIGHTS";

/// Whether the switch `var` is on: unset or anything but `off` or `0`.
fn switched_on(var: &str) -> bool {
    std::env::var(var).map_or(true, |v| !matches!(v.trim(), "off" | "0"))
}

/// Whether `push_file` may map files (`BITNETC_MAP_WEIGHTS`, read once).
fn map_weights_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WANTED.get_or_init(|| switched_on(MAP_WEIGHTS_ENV))
}

/// Whether large owned buffers ask for huge pages (`BITNETC_HUGE_PAGES`, read once).
fn huge_pages_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WANTED.get_or_init(|| switched_on(HUGE_PAGES_ENV))
}

/// The page size `AlignedBytes::push_file` places file bytes by: fixed, not the host's, so that
/// the layout is the same on every host; the file is mapped only where the host's pages are this
/// size.
const FILE_PAGE: usize = 4096;

/// Maps `file` from `file_offset` over `pages` (page-aligned, a whole number of `FILE_PAGE`
/// pages, inside an anonymous mapping this process owns) copy-on-write, readable and writable;
/// whether it did. On failure `pages` are anonymous zeroed memory again, as before.
#[cfg(unix)]
fn map_file_over(pages: &mut [u8], file: &std::fs::File, file_offset: u64) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: `sysconf` only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let (Ok(offset), true) = (libc::off_t::try_from(file_offset), page == FILE_PAGE as i64) else {
        return false;
    };
    if !map_weights_wanted() {
        return false;
    }
    let at = pages.as_mut_ptr().cast::<libc::c_void>();
    if !(at as usize).is_multiple_of(FILE_PAGE)
        || !pages.len().is_multiple_of(FILE_PAGE)
        || !file_offset.is_multiple_of(FILE_PAGE as u64)
    {
        return false;
    }
    // SAFETY: `pages` is page-aligned memory inside an anonymous mapping this buffer owns and
    // borrows mutably here, so nothing else refers to it; `MAP_FIXED` replaces exactly those
    // pages with a private (copy-on-write) mapping of the file, readable and writable like the
    // memory it replaces, which the owning mapping's `munmap` unmaps with the rest. The caller got
    // `file_offset` from a store that checked the bytes lie inside the file. As with every map of
    // a file here, another process truncating the file would fault a later read of its pages.
    let mapped = unsafe {
        libc::mmap(
            at,
            pages.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            file.as_raw_fd(),
            offset,
        )
    };
    if mapped == at {
        return true;
    }
    // A failed `MAP_FIXED` may have unmapped the range: put anonymous zeroed memory back.
    // SAFETY: the same range of the same owned mapping as above.
    let restored = unsafe {
        libc::mmap(
            at,
            pages.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if restored != at {
        std::alloc::handle_alloc_error(
            std::alloc::Layout::from_size_align(pages.len(), FILE_PAGE)
                .unwrap_or(std::alloc::Layout::new::<[u8; 64]>()),
        );
    }
    false
}

/// Without `mmap`: never mapped.
#[cfg(not(unix))]
fn map_file_over(_pages: &mut [u8], _file: &std::fs::File, _file_offset: u64) -> bool {
    false
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
        self.reserve_to(end);
        match &mut self.storage {
            Storage::Owned(Some(map)) => fill(&mut map[offset..end]),
            // Nothing to write: `end` is 0.
            _ => fill(&mut []),
        }
        self.len = end;
        offset as u64
    }

    /// Appends `len` bytes that are `file`'s from byte `offset` on, and returns their offset in
    /// the buffer. They start a fresh 4 KiB page of the buffer, at `offset`'s place within its
    /// page when that is 64-byte aligned (otherwise they are placed as `push_with` places them),
    /// so that the file's pages can back them: on Unix with 4 KiB pages, the file is mapped there
    /// copy-on-write (a table read a few rows at a time then takes memory only for the pages read,
    /// and appending it writes none of it); otherwise, or if mapping fails, `fill` writes the same
    /// bytes (given them zeroed). Either way the buffer's bytes are the same: the parts of the
    /// first and last page outside them are zero. The placement depends only on `offset`, `len`
    /// and what was appended before, so a buffer written out is the same on every host. A later
    /// change to the file in place shows through pages not yet written, as with any mapping of
    /// it (`BITNETC_MAP_WEIGHTS=off` copies instead).
    pub fn push_file(
        &mut self,
        len: usize,
        file: &std::fs::File,
        offset: u64,
        fill: impl FnOnce(&mut [u8]),
    ) -> u64 {
        let within = (offset % FILE_PAGE as u64) as usize;
        if len == 0 || !within.is_multiple_of(64) {
            return self.push_with(len, fill);
        }
        let page_start = self.len.div_ceil(FILE_PAGE) * FILE_PAGE;
        let start = page_start + within;
        let end = start + len;
        let page_end = end.div_ceil(FILE_PAGE) * FILE_PAGE;
        self.reserve_to(page_end);
        let Storage::Owned(Some(map)) = &mut self.storage else {
            // `reserve_to` made owned storage of at least `page_end` > 0 bytes.
            return self.push_with(len, fill);
        };
        let pages = &mut map[page_start..page_end];
        if map_file_over(pages, file, offset - within as u64) {
            // The file's bytes around the tensor on its first and last page: zero, as `fill`'s
            // buffer would have them (writing them copies those two pages).
            pages[..within].fill(0);
            pages[within + len..].fill(0);
        } else {
            fill(&mut pages[within..within + len]);
        }
        self.len = end;
        start as u64
    }

    /// Makes the storage owned and at least `end` bytes long: a new mapping, at least twice the
    /// old one, with the bytes so far copied in (the rest of it zero), when it is shorter.
    fn reserve_to(&mut self, end: usize) {
        let capacity = match &self.storage {
            Storage::Owned(map) => map.as_ref().map_or(0, |m| m.len()),
            Storage::Mapped { .. } => 0,
        };
        if end > capacity {
            let mut map = anonymous(end.max(capacity.saturating_mul(2)));
            map[..self.len].copy_from_slice(self.as_slice());
            self.storage = Storage::Owned(Some(map));
        }
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

    /// A file's bytes land at their offset within a 4 KiB page, zeros around them; on Linux with
    /// 4 KiB pages they are mapped (`fill` is not called). Writing to them, or after them on
    /// their last page, changes the buffer and never the file; growing keeps them.
    #[test]
    fn push_file_places_a_files_bytes_at_their_page_offset() {
        let path = std::env::temp_dir().join(format!("bitnetc-push-file-{}", std::process::id()));
        let data: Vec<u8> = (0..3 * 4096 + 700)
            .map(|i: usize| (i * 7 + 3) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut a = AlignedBytes::with_capacity(1 << 16);
        a.push(&[9; 100]);
        let (off, len) = (4096 + 128, 2 * 4096 + 300);
        let mut filled = false;
        let at = a.push_file(len, &file, off as u64, |dst| {
            filled = true;
            dst.copy_from_slice(&data[off..off + len]);
        }) as usize;
        assert_eq!(
            at,
            4096 + 128,
            "a fresh page, at the file offset's place in its page"
        );
        assert_eq!(&a[at..at + len], &data[off..off + len]);
        assert!(a[100..at].iter().all(|&b| b == 0));
        // SAFETY: `sysconf` only reads a system constant.
        #[cfg(target_os = "linux")]
        if unsafe { libc::sysconf(libc::_SC_PAGESIZE) } == 4096 {
            assert!(!filled, "the file's pages are mapped, not copied");
        }
        let next = a.push(&[5; 10]) as usize;
        assert_eq!(next, (at + len).div_ceil(64) * 64);
        assert!(a[at + len..next].iter().all(|&b| b == 0));
        assert_eq!(&a[next..next + 10], &[5; 10]);
        a.as_mut_slice().unwrap()[at] ^= 0xff;
        assert_eq!(a[at], data[off] ^ 0xff);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "the file is never written"
        );
        // An offset not 64-byte aligned within its page: placed as `push_with` places bytes.
        let end = a.len();
        let odd = a.push_file(10, &file, 33, |dst| dst.copy_from_slice(&data[33..43])) as usize;
        assert_eq!(odd, end.div_ceil(64) * 64);
        assert_eq!(&a[odd..odd + 10], &data[33..43]);
        // Growing copies the mapped bytes with the rest.
        let before = a.as_slice()[..odd + 10].to_vec();
        a.push_with(1 << 20, |dst| dst[0] = 1);
        assert_eq!(&a[..odd + 10], &before[..]);
        let cloned = a.clone();
        assert_eq!(&cloned[at + 1..at + len], &data[off + 1..off + len]);
        drop(file);
        std::fs::remove_file(&path).unwrap();
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
