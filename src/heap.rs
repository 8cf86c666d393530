//! How the C library's allocator treats the memory a program frees: `keep_freed_memory` asks
//! glibc's malloc to keep freed blocks for reuse instead of handing them back to the kernel.
//!
//! A training step allocates and frees the same few hundred buffers, some of hundreds of KiB, for
//! every window. By default glibc serves such blocks with fresh mappings or returns the top of its
//! heap to the kernel when they are freed, so every step faults in and zeroes its pages again (a
//! profile of `bitnetc train`: about 14 % of the time in page faults, zeroing and `malloc`). With
//! blocks up to 256 MiB taken from the heap and up to 1 GiB of free heap kept, the same run is
//! 1.1–1.2× faster and its peak RSS does not grow (docs/training.md). Elsewhere, a no-op.

/// Keeps freed memory for reuse (see the module doc). Call it before other threads start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets two of glibc's allocation thresholds; it is called from the
        // main thread before the command starts any other.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}
