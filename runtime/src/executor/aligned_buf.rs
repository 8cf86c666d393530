//! `Aligned`: the executor's 64-byte aligned, zeroed buffers (the arena and the KV caches).

use crate::error::RuntimeError;

/// A page-aligned (so 64-byte aligned), zeroed byte buffer: an anonymous memory mapping, whose
/// pages the kernel supplies zeroed on first touch, so pages never written (the rows past the
/// longest step so far, the cache past the longest context so far) take no memory. (The global
/// allocator's `alloc_zeroed` with a 64-byte alignment writes every byte, which made a 2B model's
/// whole prefill arena and 4k-token KV cache resident at load.)
pub(super) struct Aligned {
    map: memmap2::MmapMut,
    len: usize,
}

impl Aligned {
    /// `len` zeroed bytes (rounded up to whole 64-byte lines) for the `what` of an executor.
    pub(super) fn zeroed(len: u64, what: &'static str) -> Result<Aligned, RuntimeError> {
        let too_big = |reason: String| RuntimeError::OutOfMemory {
            what,
            bytes: len,
            reason,
        };
        let len = usize::try_from(len.div_ceil(64).saturating_mul(64))
            .map_err(|_| too_big("beyond the address space".into()))?;
        // A mapping cannot be empty: an empty buffer maps one line it never uses.
        let map = memmap2::MmapMut::map_anon(len.max(64)).map_err(|e| too_big(e.to_string()))?;
        Ok(Aligned { map, len })
    }

    pub(super) fn ptr(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::Aligned;

    #[test]
    fn zeroed_buffers_are_zero_line_aligned_and_writable() {
        let mut a = Aligned::zeroed(100, "arena").unwrap();
        assert_eq!(a.bytes().len(), 128);
        assert!(a.bytes().iter().all(|&b| b == 0));
        assert_eq!(a.ptr().align_offset(64), 0);
        a.bytes_mut()[127] = 7;
        assert_eq!(a.bytes()[127], 7);
        // An empty buffer (a program without KV cache) is fine too.
        assert!(Aligned::zeroed(0, "KV cache").unwrap().bytes().is_empty());
    }

    #[test]
    fn a_buffer_beyond_the_address_space_is_an_error_naming_it() {
        let err = match Aligned::zeroed(u64::MAX, "KV cache") {
            Ok(_) => panic!("mapped u64::MAX bytes"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("KV cache"), "{err}");
    }
}
