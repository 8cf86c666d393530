//! Dropping this process's pages of a read-only file map once a tensor's bytes have been read: the
//! GGUF and safetensors readers both do it, so a model compiled tensor by tensor does not keep the
//! whole file resident on top of what it made of it.

use memmap2::Mmap;
use std::ops::Range;

/// Drops this process's pages of `range` of `map` (nothing happens if the range is outside the map,
/// off Unix, or on failure). The kernel keeps them in its page cache, and a later read through any
/// slice of the map faults them in again with the same bytes.
pub(crate) fn release(map: &Mmap, range: Range<usize>) {
    #[cfg(unix)]
    if range.start <= range.end && range.end <= map.len() {
        // SAFETY: every map passed here is read-only and file-backed (the readers' `open`), so
        // `MADV_DONTNEED` only drops this process's copies of pages whose contents stay in the
        // file: a later access, through any slice still borrowed from the map, faults them in again
        // with the same bytes (the file's, as `open`'s SAFETY notes say). The range is inside the
        // map (checked above); memmap2 widens it to whole pages, which neighbours then refault.
        let _ = unsafe {
            map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                range.start,
                range.end - range.start,
            )
        };
    }
    #[cfg(not(unix))]
    let _ = (map, range);
}
