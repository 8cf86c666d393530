//! The executor's persistent thread pool: `threads − 1` workers plus the calling thread run each
//! launch's rows, claimed in chunks, and spin briefly between launches. A timed job (a profiled
//! step's) adds each thread's time on its rows to that thread's busy count.

use crate::program::KernelFn;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// One unit of parallel work: a kernel call over a row range. Plain data, copied to the workers.
#[derive(Clone, Copy)]
pub(super) struct Job {
    pub(super) kernel: KernelFn,
    pub(super) bufs: *const *mut u8,
    pub(super) scalars: *const i64,
    pub(super) rows: i64,
    /// Rows a thread claims together (`Launch::row_group`; `run` takes 0 or less as 1): every chunk
    /// but the last is a multiple of it.
    pub(super) group: i64,
}

// SAFETY: the pointers in a job point into buffers the executor owns and keeps alive, unmoved, until
// every row of the job is computed (the caller waits); each thread writes only the rows it claimed.
unsafe impl Send for Job {}

/// How many times a waiting thread polls before it sleeps (workers) or yields (the caller): launches
/// come back to back during a step, so the next one usually arrives within microseconds and parking
/// costs far more than spinning.
const SPINS: u32 = 20_000;

/// The claim word's row once a job is over: no row is left to claim in that generation.
const EXHAUSTED: u64 = 0xffff_ffff;

/// Chunks per thread a split launch is cut into: threads claim chunks until none is left, so a thread
/// that the OS preempts delays the launch by at most the chunk it holds.
const CHUNKS_PER_THREAD: i64 = 4;

/// The current job, published by the caller and read by the workers. The fields are atomics so
/// that a worker reading a job the caller is replacing reads no torn value: it then fails to claim
/// (the claim word names another generation) and discards what it read.
struct Pool {
    kernel: AtomicUsize,
    bufs: AtomicPtr<*mut u8>,
    scalars: AtomicPtr<i64>,
    rows: AtomicI64,
    chunk: AtomicI64,
    /// The generation of the current job (high 32 bits) and the next unclaimed row (low 32 bits).
    claim: AtomicU64,
    /// Rows of the current job computed so far.
    finished: AtomicI64,
    /// Workers asleep (or about to sleep) on `start`.
    sleepers: AtomicUsize,
    shutdown: AtomicBool,
    /// Whether the current job is timed (`ThreadPool::run`'s `timed`).
    timed: AtomicBool,
    /// Per thread (the calling thread first), nanoseconds spent on timed jobs' rows.
    busy: Box<[AtomicU64]>,
    lock: Mutex<()>,
    start: Condvar,
    workers: usize,
}

impl Pool {
    /// Claims the next chunk of the job of generation `generation`: its row range, or `None` when
    /// no row is left or the job is no longer current.
    ///
    /// `rows` and `chunk` are read after the claim word: a thread that reads a newer job's values
    /// synchronizes with the caller's stores, which follow its `EXHAUSTED` mark of this
    /// generation, so its compare-exchange then fails; a claim that succeeds used this job's values.
    fn claim(&self, generation: u64) -> Option<(i64, i64)> {
        let mut cur = self.claim.load(Ordering::Acquire);
        loop {
            let row = (cur & 0xffff_ffff) as i64;
            if cur >> 32 != generation {
                return None;
            }
            let rows = self.rows.load(Ordering::Acquire);
            if row >= rows {
                return None;
            }
            let chunk = self.chunk.load(Ordering::Acquire).max(1);
            let end = (row + chunk).min(rows);
            match self.claim.compare_exchange_weak(
                cur,
                (generation << 32) | end as u64,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some((row, end)),
                Err(now) => cur = now,
            }
        }
    }

    /// Runs claimed chunks of the job of `generation` until none is left; thread `me` adds the
    /// time to its busy count when the job is timed.
    fn work(&self, generation: u64, me: usize) {
        let kernel = self.kernel.load(Ordering::Acquire);
        let bufs = self.bufs.load(Ordering::Acquire);
        let scalars = self.scalars.load(Ordering::Acquire);
        // Read after the job's other fields, so it is this job's flag when a claim succeeds.
        let start = self.timed.load(Ordering::Acquire).then(Instant::now);
        let mut claimed = false;
        while let Some((b, e)) = self.claim(generation) {
            claimed = true;
            // The claim succeeded for `generation`, so the job read above is that generation's
            // (the caller publishes the next job only after every claimed row is finished).
            // SAFETY: `kernel` was stored from a `KernelFn` (see `ThreadPool::run`).
            let f = unsafe { std::mem::transmute::<usize, KernelFn>(kernel) };
            // SAFETY: see `Job`; rows `b..e` are this thread's alone.
            unsafe { f(bufs, scalars, b, e) };
            self.finished.fetch_add(e - b, Ordering::AcqRel);
        }
        if let Some(start) = start.filter(|_| claimed) {
            self.add_busy(me, start);
        }
    }

    /// Adds the time since `start` to thread `me`'s busy count.
    fn add_busy(&self, me: usize, start: Instant) {
        if let Some(b) = self.busy.get(me) {
            b.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

/// A persistent pool: `threads − 1` workers plus the calling thread. Threads spin briefly between
/// launches and sleep on a condition variable when idle.
pub(super) struct ThreadPool {
    shared: Arc<Pool>,
    handles: Vec<std::thread::JoinHandle<()>>,
    generation: u64,
}

impl ThreadPool {
    pub(super) fn new(threads: usize) -> ThreadPool {
        let workers = threads.max(1) - 1;
        let shared = Arc::new(Pool {
            kernel: AtomicUsize::new(0),
            bufs: AtomicPtr::new(std::ptr::null_mut()),
            scalars: AtomicPtr::new(std::ptr::null_mut()),
            rows: AtomicI64::new(0),
            chunk: AtomicI64::new(1),
            claim: AtomicU64::new(0),
            finished: AtomicI64::new(0),
            sleepers: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            timed: AtomicBool::new(false),
            busy: (0..=workers).map(|_| AtomicU64::new(0)).collect(),
            lock: Mutex::new(()),
            start: Condvar::new(),
            workers,
        });
        let handles = (0..workers)
            .map(|w| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || worker(&shared, w + 1))
            })
            .collect();
        ThreadPool {
            shared,
            handles,
            generation: 0,
        }
    }

    /// Threads, the calling one included.
    pub(super) fn threads(&self) -> usize {
        self.shared.workers + 1
    }

    /// Zeroes every thread's busy count.
    pub(super) fn reset_busy(&mut self) {
        for b in self.shared.busy.iter() {
            b.store(0, Ordering::Relaxed);
        }
    }

    /// Copies each thread's busy nanoseconds (since `reset_busy`) into `out`.
    pub(super) fn read_busy(&self, out: &mut [u64]) {
        for (o, b) in out.iter_mut().zip(self.shared.busy.iter()) {
            *o = b.load(Ordering::Relaxed);
        }
    }

    /// Runs `job` over its rows on every thread and waits for all of them. When `timed`, each
    /// thread adds the time it spent on the job's rows to its busy count.
    pub(super) fn run(&mut self, job: Job, timed: bool) {
        let parts = self.shared.workers as i64 + 1;
        let group = job.group.max(1);
        // Launches of a row or two (one token at decode), or of one group, are not worth splitting.
        if parts == 1 || job.rows < 2 * parts || job.rows <= group || job.rows > i64::from(i32::MAX)
        {
            let start = timed.then(Instant::now);
            // SAFETY: see `Job`; the caller guarantees the kernel matches its buffers.
            unsafe { (job.kernel)(job.bufs, job.scalars, 0, job.rows) };
            if let Some(start) = start {
                self.shared.add_busy(0, start);
            }
            return;
        }
        // Chunks of whole 16-row groups when there are many rows (a 64-byte line of f32 outputs
        // is then written by one thread).
        let mut chunk = (job.rows + parts * CHUNKS_PER_THREAD - 1) / (parts * CHUNKS_PER_THREAD);
        if job.rows >= 64 * parts * CHUNKS_PER_THREAD {
            chunk = (chunk + 15) / 16 * 16;
        }
        // Whole row groups (`Job::group`).
        chunk = (chunk + group - 1) / group * group;
        let s = &*self.shared;
        // Close the previous job before its fields change (see `Pool::claim`).
        s.claim
            .store((self.generation << 32) | EXHAUSTED, Ordering::SeqCst);
        self.generation = (self.generation + 1) & 0xffff_ffff;
        let generation = self.generation;
        s.kernel.store(job.kernel as usize, Ordering::Release);
        s.bufs.store(job.bufs.cast_mut(), Ordering::Release);
        s.scalars.store(job.scalars.cast_mut(), Ordering::Release);
        s.rows.store(job.rows, Ordering::Release);
        s.chunk.store(chunk, Ordering::Release);
        s.finished.store(0, Ordering::Release);
        s.timed.store(timed, Ordering::Release);
        s.claim.store(generation << 32, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.start.notify_all();
        }
        s.work(generation, 0);
        // Wait for the chunks other threads hold; yield the core if they take long (on a machine
        // with more threads than cores, a preempted worker needs it).
        let mut spins = 0;
        while s.finished.load(Ordering::Acquire) < job.rows {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn worker(shared: &Pool, me: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for the next job: spin, then sleep.
        let mut spins = 0;
        let generation = loop {
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            let g = shared.claim.load(Ordering::Acquire) >> 32;
            if g != seen {
                break g;
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            shared.sleepers.fetch_add(1, Ordering::SeqCst);
            {
                let guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
                if shared.claim.load(Ordering::SeqCst) >> 32 == seen
                    && !shared.shutdown.load(Ordering::SeqCst)
                {
                    let _unused = shared.start.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
            }
            shared.sleepers.fetch_sub(1, Ordering::SeqCst);
            spins = 0;
        };
        seen = generation;
        shared.work(generation, me);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::SeqCst);
        }
        self.shared.start.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::{Job, ThreadPool};

    /// Adds 1 to `counts[r]` (u32) for every row r of the call: a row computed twice or never shows.
    unsafe extern "C" fn count_rows(bufs: *const *mut u8, _: *const i64, begin: i64, end: i64) {
        // SAFETY: the test passes one buffer of at least `end` u32, and rows are disjoint per call.
        unsafe {
            let counts = (*bufs).cast::<u32>();
            for r in begin..end {
                *counts.add(r as usize) += 1;
            }
        }
    }

    /// Every row of every launch runs exactly once, for launch sizes around the split thresholds
    /// and chunk roundings, back to back (the workers spin) and after pauses (they sleep).
    #[test]
    fn every_row_runs_once() {
        for threads in [1, 2, 3, 5] {
            let mut pool = ThreadPool::new(threads);
            let scalars = [1i64, 0];
            for i in 0..3000usize {
                let rows = [0, 1, 2, 3, 7, 16, 63, 64, 65, 511, 512, 513, 6912, 128_256][i % 14];
                let mut counts = vec![0u32; rows];
                let ptrs = [counts.as_mut_ptr().cast::<u8>()];
                let job = Job {
                    kernel: count_rows,
                    bufs: ptrs.as_ptr(),
                    scalars: scalars.as_ptr(),
                    rows: rows as i64,
                    group: 1,
                };
                pool.run(job, i % 3 == 0);
                assert!(
                    counts.iter().all(|&c| c == 1),
                    "{threads} threads, launch {i} of {rows} rows: {:?}",
                    counts.iter().position(|&c| c != 1)
                );
                if i % 500 == 499 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }

    /// Counts the calls (an `AtomicU32` in buffer 1) whose rows do not start at a multiple of the
    /// group `scalars[0]` or end at one or at the launch's end `scalars[1]`, and the rows as
    /// `count_rows` does.
    unsafe extern "C" fn check_groups(bufs: *const *mut u8, s: *const i64, begin: i64, end: i64) {
        // SAFETY: the test passes the row counts and one AtomicU32, and [group, rows].
        unsafe {
            let (group, rows) = (*s, *s.add(1));
            if begin % group != 0 || (end % group != 0 && end != rows) {
                (*(*bufs.add(1)).cast::<std::sync::atomic::AtomicU32>())
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            count_rows(bufs, s, begin, end);
        }
    }

    /// A launch with a row group is split into runs of whole groups only (attention's query heads
    /// of one KV head), and every row still runs once; a group of 0 splits as 1 does.
    #[test]
    fn row_groups_are_never_split() {
        for threads in [2, 3] {
            let mut pool = ThreadPool::new(threads);
            for (i, (rows, group)) in [
                (20, 4),
                (21, 4),
                (12, 3),
                (4, 4),
                (3, 4),
                (6400, 5),
                (20, 1),
                (20, 0),
            ]
            .into_iter()
            .cycle()
            .take(700)
            .enumerate()
            {
                let mut counts = vec![0u32; rows];
                let split = std::sync::atomic::AtomicU32::new(0);
                let ptrs = [
                    counts.as_mut_ptr().cast::<u8>(),
                    (&raw const split).cast_mut().cast(),
                ];
                // A group of 0 (a manifest may say so) is taken as 1.
                let scalars = [group.max(1) as i64, rows as i64];
                let job = Job {
                    kernel: check_groups,
                    bufs: ptrs.as_ptr(),
                    scalars: scalars.as_ptr(),
                    rows: rows as i64,
                    group: group as i64,
                };
                pool.run(job, i % 2 == 0);
                assert!(counts.iter().all(|&c| c == 1), "{rows} rows by {group}");
                assert_eq!(
                    split.into_inner(),
                    0,
                    "{rows} rows by {group}: a group was split"
                );
            }
        }
    }
}
