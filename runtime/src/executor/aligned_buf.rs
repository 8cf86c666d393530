//! `Aligned`: the executor's 64-byte aligned, zeroed buffers (the arena and the KV caches).

/// A 64-byte aligned, zeroed byte buffer. It comes from the allocator's zeroed memory, so pages
/// never written (the rows past the longest step so far, the cache past the longest context so
/// far) take no memory.
pub(super) struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl Aligned {
    pub(super) fn zeroed(len: u64) -> Aligned {
        let lines = usize::try_from(len.div_ceil(64)).unwrap_or(usize::MAX);
        let len = lines.saturating_mul(64);
        let ptr = match std::alloc::Layout::from_size_align(len.max(64), 64) {
            // SAFETY: the layout has a non-zero size.
            Ok(layout) => std::ptr::NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }),
            Err(_) => None,
        };
        match ptr {
            Some(ptr) => Aligned { ptr, len },
            None => std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(len.max(64), 64)
                    .unwrap_or(std::alloc::Layout::new::<u8>()),
            ),
        }
    }

    pub(super) fn ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is `len` initialized (zeroed) bytes this buffer owns.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        if let Ok(layout) = std::alloc::Layout::from_size_align(self.len.max(64), 64) {
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

// SAFETY: `Aligned` owns its allocation like a `Vec<u8>`.
unsafe impl Send for Aligned {}
