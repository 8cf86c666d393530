//! A step of the CPU runtime allocates nothing on the heap: a counting global allocator watches
//! `Executor::forward` after the program is prepared (prefill and decode steps).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_frontend::import_model;
use bitnet_frontend::model::ImportOptions;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn forward_steps_do_not_allocate() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-tiny/packed");
    for threads in [1, 2] {
        let mut exec = bitnetc::compile_cpu(
            &mut import_model(&dir, &ImportOptions { context: Some(32) }).unwrap(),
            threads,
        )
        .unwrap();
        let prompt = [1i64, 17, 256, 999, 3];
        exec.forward(&prompt, 0).unwrap(); // Warm up (first touches of the thread pool).
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let mut next = 5i64;
        exec.forward(&prompt, 0).unwrap();
        for pos in 5..20 {
            let logits = exec.forward(&[next], pos).unwrap();
            next = (logits
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |a, (i, &x)| if x > a.1 { (i, x) } else { a })
                .0) as i64;
        }
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        assert_eq!(
            after - before,
            0,
            "{threads} thread(s): {} heap allocations during 16 steps",
            after - before
        );
    }
}
