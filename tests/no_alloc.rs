//! A step of the CPU runtime allocates nothing on the heap: a counting global allocator watches
//! `Executor::forward` and `Executor::forward_last` after the program is prepared (prefill and decode
//! steps), with the launch profile off and on (its event buffers filling up and overflowing), for
//! every lm_head dtype.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitnet_runtime::executor::ProfileOptions;
use bitnetc::backends::cpu::HeadDtype;
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
    let heads = [HeadDtype::Auto, HeadDtype::F16, HeadDtype::I8];
    for (threads, last, profile, head) in [
        (1, false, false, heads[0]),
        (2, false, false, heads[0]),
        (2, true, false, heads[1]),
        (2, true, true, heads[2]),
        (1, true, true, heads[0]),
    ] {
        let options = bitnetc::CpuOptions {
            threads,
            head,
            ..bitnetc::CpuOptions::default()
        };
        let mut exec = bitnetc::compile_cpu(
            &mut bitnetc::OpenOptions {
                context: Some(32),
                ..Default::default()
            }
            .open(&dir)
            .unwrap(),
            &options,
        )
        .unwrap();
        if profile {
            // Event buffers with room for a few steps only: later events are counted as dropped,
            // never pushed past the capacity (which would reallocate).
            let launches = exec.program().launches.len();
            exec.start_profile(&ProfileOptions {
                launch_events: launches * 4,
                step_events: 4,
                plant: None,
            });
        }
        let prompt = [1i64, 17, 256, 999, 3];
        exec.forward(&prompt, 0).unwrap(); // Warm up (first touches of the thread pool).
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let mut next = 5i64;
        exec.forward(&prompt, 0).unwrap();
        exec.forward_last(&prompt, 0).unwrap();
        for pos in 5..20 {
            let logits = if last {
                exec.forward_last(&[next], pos).unwrap()
            } else {
                exec.forward(&[next], pos).unwrap()
            };
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
            "{threads} thread(s), forward_last {last}, profile {profile}, {head:?}: {} heap \
             allocations during 17 steps",
            after - before
        );
        if let Some(p) = exec.profile() {
            assert_eq!(p.steps, 18, "{threads} thread(s): the warm-up and 17 steps");
            assert_eq!(p.launches.len(), exec.program().launches.len() * 4);
            assert!(p.dropped > 0 && p.busy_ns.len() == threads, "{p:?}");
        }
    }
}
