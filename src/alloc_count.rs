//! A global allocator that counts heap allocations: the system's, which also counts while
//! `count_allocations` asks it to (`profile` around its decode steps). A program opts in with
//! `#[global_allocator] static A: bitnetc::alloc_count::CountingAllocator = CountingAllocator;`
//! (the `bitnetc` binary and the Python module do); without it nothing is counted, and
//! `count_allocations` says so (`None`) instead of reporting zero. Off, an allocation pays one
//! relaxed load of a flag that is written only when counting starts and stops.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The system allocator, counting while `COUNTING` is set.
pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

impl CountingAllocator {
    #[inline]
    fn count() {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call goes to the system allocator unchanged; this only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CountingAllocator::count();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        CountingAllocator::count();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CountingAllocator::count();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Counts the heap allocations (and reallocations) of every thread while `f` runs; `None` when
/// the process's global allocator is not `CountingAllocator` (a probe allocation went uncounted).
pub fn count_allocations<T>(f: impl FnOnce() -> T) -> (T, Option<u64>) {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let probe = std::hint::black_box(Vec::<u8>::with_capacity(1));
    drop(probe);
    let installed = ALLOCATIONS.load(Ordering::SeqCst) > before;
    let start = ALLOCATIONS.load(Ordering::SeqCst);
    let out = f();
    COUNTING.store(false, Ordering::SeqCst);
    let count = ALLOCATIONS.load(Ordering::SeqCst) - start;
    (out, installed.then_some(count))
}
