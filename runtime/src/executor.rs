//! The executor: owns the arena and the KV cache (allocated once) and shares the program's code and
//! weights (adopted, not copied), resolves every launch's buffers to addresses at load time, and runs
//! the launch plan for one step, splitting each launch's rows across a persistent thread pool. A step
//! allocates nothing.
//!
//! `Executor::sibling` makes another executor over the same code, weights and thread pool with an
//! arena and KV cache of its own: N conversations on one compiled model cost N arenas and caches,
//! not N copies of the weights. Siblings' steps take turns on the shared pool.
//!
//! `forward_last` runs the launches marked `Launch::last_token` (the final norm and the lm_head) for
//! the last token only, through a second set of addresses resolved per step into storage allocated
//! at load time. An opt-in profile (`set_profiling`) sums the wall time of every launch, as the
//! calling thread sees it (its own rows plus the wait for the workers); off, it costs one branch per
//! launch.

use crate::AlignedBytes;
use crate::error::RuntimeError;
use crate::program::{BufRef, KernelFn, Program, Region};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// A 64-byte aligned, zeroed byte buffer. It comes from the allocator's zeroed memory, so pages
/// never written (the rows past the longest step so far, the cache past the longest context so
/// far) take no memory.
struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl Aligned {
    fn zeroed(len: u64) -> Aligned {
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

    fn ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is `len` initialized (zeroed) bytes this buffer owns.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn bytes(&self) -> &[u8] {
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

/// One unit of parallel work: a kernel call over a row range. Plain data, copied to the workers.
#[derive(Clone, Copy)]
struct Job {
    kernel: KernelFn,
    bufs: *const *mut u8,
    scalars: *const i64,
    rows: i64,
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

    /// Runs claimed chunks of the job of `generation` until none is left.
    fn work(&self, generation: u64) {
        let kernel = self.kernel.load(Ordering::Acquire);
        let bufs = self.bufs.load(Ordering::Acquire);
        let scalars = self.scalars.load(Ordering::Acquire);
        while let Some((b, e)) = self.claim(generation) {
            // The claim succeeded for `generation`, so the job read above is that generation's
            // (the caller publishes the next job only after every claimed row is finished).
            // SAFETY: `kernel` was stored from a `KernelFn` (see `ThreadPool::run`).
            let f = unsafe { std::mem::transmute::<usize, KernelFn>(kernel) };
            // SAFETY: see `Job`; rows `b..e` are this thread's alone.
            unsafe { f(bufs, scalars, b, e) };
            self.finished.fetch_add(e - b, Ordering::AcqRel);
        }
    }
}

/// A persistent pool: `threads − 1` workers plus the calling thread. Threads spin briefly between
/// launches and sleep on a condition variable when idle.
struct ThreadPool {
    shared: Arc<Pool>,
    handles: Vec<std::thread::JoinHandle<()>>,
    generation: u64,
}

impl ThreadPool {
    fn new(threads: usize) -> ThreadPool {
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
            lock: Mutex::new(()),
            start: Condvar::new(),
            workers,
        });
        let handles = (0..workers)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || worker(&shared))
            })
            .collect();
        ThreadPool {
            shared,
            handles,
            generation: 0,
        }
    }

    /// Runs `job` over its rows on every thread and waits for all of them.
    fn run(&mut self, job: Job) {
        let parts = self.shared.workers as i64 + 1;
        // Launches of a row or two (one token at decode) are not worth splitting.
        if parts == 1 || job.rows < 2 * parts || job.rows > i64::from(i32::MAX) {
            // SAFETY: see `Job`; the caller guarantees the kernel matches its buffers.
            unsafe { (job.kernel)(job.bufs, job.scalars, 0, job.rows) };
            return;
        }
        // Chunks of whole 16-row groups when there are many rows (a 64-byte line of f32 outputs
        // is then written by one thread).
        let mut chunk = (job.rows + parts * CHUNKS_PER_THREAD - 1) / (parts * CHUNKS_PER_THREAD);
        if job.rows >= 64 * parts * CHUNKS_PER_THREAD {
            chunk = (chunk + 15) / 16 * 16;
        }
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
        s.claim.store(generation << 32, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.start.notify_all();
        }
        s.work(generation);
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

fn worker(shared: &Pool) {
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
        shared.work(generation);
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

/// What an executor shares with its siblings: the program (code, launches, sizes), its weights and
/// the thread pool, all used read only except the pool, which one step at a time holds.
struct Shared {
    program: Program,
    /// Kept alive: launches point into it (read only).
    weights: AlignedBytes,
    pool: Mutex<ThreadPool>,
}

/// Runs a `Program`: one call of `forward` is one prefill or decode step.
pub struct Executor {
    shared: Arc<Shared>,
    arena: Aligned,
    kv: Aligned,
    /// Per launch, its buffer addresses (resolved once).
    addresses: Vec<Vec<*mut u8>>,
    /// Per launch with `last_token` strides, the addresses of the last token's rows (rewritten by
    /// each `forward_last`; empty for the other launches).
    last_addresses: Vec<Vec<*mut u8>>,
    scalars: [i64; 2],
    /// `[1, pos of the last token]`, for the launches `forward_last` runs for the last token only.
    last_scalars: [i64; 2],
    /// The launch profile, when on.
    profile: Option<StepProfile>,
}

// SAFETY: the raw addresses point into the heap allocations of `arena` and `kv`, which this
// executor owns and which do not move when it does, and into the shared weights, kept alive by
// `shared` and only read. Nothing is tied to the thread that made the executor; the pool is behind
// a mutex.
unsafe impl Send for Executor {}

/// Where the time of the profiled steps went (`Executor::set_profiling`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepProfile {
    /// Steps run since profiling was switched on.
    pub steps: u64,
    /// Per launch (in `Program::launches` order), nanoseconds summed over those steps.
    pub launch_ns: Vec<u64>,
}

/// Every launch's buffer addresses in `arena`, the weights and `kv`, and the addresses the
/// `last_token` launches start from, after checking every buffer against its region.
type Addresses = (Vec<Vec<*mut u8>>, Vec<Vec<*mut u8>>);

/// Checks every buffer of every launch and resolves it to an address (see `Addresses`).
fn resolve(
    program: &Program,
    weights: &AlignedBytes,
    arena: &mut Aligned,
    kv: &mut Aligned,
) -> Result<Addresses, RuntimeError> {
    let sizes = [program.arena_bytes, weights.len() as u64, program.kv_bytes];
    // Kernels only read weights (their `KernelKind` contracts), so a read-only mapping is fine.
    let weights_ptr = weights.as_ptr().cast_mut();
    let mut addresses = Vec::with_capacity(program.launches.len());
    let mut last_addresses = Vec::with_capacity(program.launches.len());
    for (li, l) in program.launches.iter().enumerate() {
        if l.kernel >= program.kernels.len() {
            return Err(RuntimeError::BadKernel {
                launch: li,
                label: l.label.clone(),
                kernel: l.kernel,
                count: program.kernels.len(),
            });
        }
        let mut ptrs = Vec::with_capacity(l.bufs.len());
        for (bi, b) in l.bufs.iter().enumerate() {
            let (base, size) = match b.region {
                Region::Arena => (arena.ptr(), sizes[0]),
                Region::Weights => (weights_ptr, sizes[1]),
                Region::Kv => (kv.ptr(), sizes[2]),
            };
            if b.offset.checked_add(b.bytes).is_none_or(|end| end > size) {
                return Err(RuntimeError::BadBuffer {
                    launch: li,
                    label: l.label.clone(),
                    index: bi,
                    region: b.region,
                    offset: b.offset,
                    bytes: b.bytes,
                    size,
                });
            }
            // SAFETY: offset + bytes is within the region (checked above).
            ptrs.push(unsafe { base.add(b.offset as usize) });
        }
        addresses.push(ptrs);
        last_addresses.push(match &l.last_token {
            None => Vec::new(),
            Some(strides) => {
                check_strides(li, l, strides, program.context)?;
                addresses.last().cloned().unwrap_or_default()
            }
        });
    }
    for b in [program.tokens, program.logits] {
        if b.region != Region::Arena || b.offset + b.bytes > sizes[0] {
            return Err(RuntimeError::BadBuffer {
                launch: 0,
                label: "program inputs/outputs".into(),
                index: 0,
                region: b.region,
                offset: b.offset,
                bytes: b.bytes,
                size: sizes[0],
            });
        }
    }
    Ok((addresses, last_addresses))
}

impl Executor {
    /// Prepares `program` to run on `threads` threads (at least 1): allocates the arena and the KV
    /// cache, adopts the weights (already 64-byte aligned; not copied), and checks every buffer of
    /// every launch.
    pub fn new(mut program: Program, threads: usize) -> Result<Executor, RuntimeError> {
        let weights = std::mem::take(&mut program.weights);
        let shared = Arc::new(Shared {
            program,
            weights,
            pool: Mutex::new(ThreadPool::new(threads)),
        });
        Executor::over(shared)
    }

    /// An executor over the program of `shared` with a new (zeroed) arena and KV cache.
    fn over(shared: Arc<Shared>) -> Result<Executor, RuntimeError> {
        let mut arena = Aligned::zeroed(shared.program.arena_bytes);
        let mut kv = Aligned::zeroed(shared.program.kv_bytes);
        let (addresses, last_addresses) =
            resolve(&shared.program, &shared.weights, &mut arena, &mut kv)?;
        Ok(Executor {
            shared,
            arena,
            kv,
            addresses,
            last_addresses,
            scalars: [0; 2],
            last_scalars: [0; 2],
            profile: None,
        })
    }

    /// Another executor over the same program: the same code, weights and thread pool (shared, not
    /// copied), with an arena and KV cache of its own, so it holds a conversation of its own. A
    /// step of one sibling computes exactly what it would alone: siblings share only what they
    /// read. Their steps take turns on the pool (a step waits while a sibling's runs); it
    /// allocates the arena and the cache (zeroed pages, taken from the system as they are used).
    pub fn sibling(&self) -> Result<Executor, RuntimeError> {
        Executor::over(Arc::clone(&self.shared))
    }

    /// Switches the launch profile on (counters zeroed; allocated here, not per step) or off.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| StepProfile {
            steps: 0,
            launch_ns: vec![0; self.shared.program.launches.len()],
        });
    }

    /// The launch profile since profiling was switched on, if it is on.
    pub fn profile(&self) -> Option<&StepProfile> {
        self.profile.as_ref()
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.shared.program
    }

    /// Bytes of weights the program reads (rounded up to whole 64-byte lines).
    pub fn weight_bytes(&self) -> u64 {
        (self.shared.weights.len() as u64).div_ceil(64) * 64
    }

    /// Clears the KV cache (a new conversation).
    pub fn reset(&mut self) {
        self.kv.bytes_mut().fill(0);
    }

    /// Runs `tokens` at positions `pos..pos+T` and returns the logits, `T × vocab` values.
    pub fn forward(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        self.step(tokens, pos, false)?;
        let vocab = self.shared.program.vocab as usize;
        Ok(self.logits(0, tokens.len() * vocab))
    }

    /// Runs `tokens` at positions `pos..pos+T` like `forward` and returns the logits of the last
    /// token only (`vocab` values): what generation needs after a prefill or a decode step. The
    /// launches marked `last_token` (the final norm and the lm_head) run for that token alone; the
    /// values are those of the last row of `forward`, bit for bit.
    pub fn forward_last(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        self.step(tokens, pos, true)?;
        let vocab = self.shared.program.vocab as usize;
        Ok(self.logits(tokens.len().saturating_sub(1) * vocab, vocab))
    }

    /// `n` logits starting at element `first` of the logits buffer (within it: `forward` checked T).
    fn logits(&self, first: usize, n: usize) -> &[f32] {
        let start = self.shared.program.logits.offset as usize + first * 4;
        let bytes = &self.arena.bytes()[start..start + n * 4];
        // SAFETY: the logits buffer is 4-byte aligned (arena offsets are 64-byte aligned) and holds
        // f32 values written by the last launches.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), n) }
    }

    /// Runs one step; with `last_only`, the `last_token` launches run for the last token alone.
    fn step(&mut self, tokens: &[i64], pos: u64, last_only: bool) -> Result<(), RuntimeError> {
        let program = &self.shared.program;
        let t = tokens.len();
        if t == 0 {
            return Err(RuntimeError::Empty);
        }
        let vocab = program.vocab;
        if pos
            .checked_add(t as u64)
            .is_none_or(|end| end > program.context)
        {
            return Err(RuntimeError::ContextOverflow {
                pos,
                tokens: t,
                context: program.context,
            });
        }
        if let Some((index, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, id)| **id < 0 || **id as u64 >= vocab)
        {
            return Err(RuntimeError::BadToken { id, index, vocab });
        }
        let tok = program.tokens.offset as usize;
        for (i, id) in tokens.iter().enumerate() {
            let at = tok + i * 8;
            self.arena.bytes_mut()[at..at + 8].copy_from_slice(&id.to_le_bytes());
        }
        self.scalars = [t as i64, pos as i64];
        self.last_scalars = [1, (pos + t as u64 - 1) as i64];
        let scalars = self.scalars.as_ptr();
        let last_scalars = self.last_scalars.as_ptr();
        let skip = (t - 1) as u64;
        // A kernel cannot unwind, so a poisoned lock only means a caller panicked between launches.
        let mut pool = self.shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (l, ptrs)) in program.launches.iter().zip(&self.addresses).enumerate() {
            let Some(&(_, kernel)) = program.kernels.get(l.kernel) else {
                continue;
            };
            let job = match (&l.last_token, self.last_addresses.get_mut(i)) {
                (Some(strides), Some(last)) if last_only => {
                    for ((a, &p), &stride) in last.iter_mut().zip(ptrs).zip(strides) {
                        // SAFETY: (T − 1)·stride + stride ≤ the buffer's bytes (`check_strides`,
                        // T ≤ context), so the address stays within the buffer.
                        *a = unsafe { p.add((skip * stride) as usize) };
                    }
                    Job {
                        kernel,
                        bufs: last.as_ptr(),
                        scalars: last_scalars,
                        rows: l.rows.count(1) as i64,
                    }
                }
                _ => Job {
                    kernel,
                    bufs: ptrs.as_ptr(),
                    scalars,
                    rows: l.rows.count(t as u64) as i64,
                },
            };
            match &mut self.profile {
                None => pool.run(job),
                Some(profile) => {
                    let start = Instant::now();
                    pool.run(job);
                    if let Some(ns) = profile.launch_ns.get_mut(i) {
                        *ns += start.elapsed().as_nanos() as u64;
                    }
                }
            }
        }
        if let Some(profile) = &mut self.profile {
            profile.steps += 1;
        }
        Ok(())
    }
}

/// Checks that launch `li`'s `last_token` strides name every buffer and that `context` rows of each
/// stride fit in its buffer (so the last token's row does, for any T ≤ context).
fn check_strides(
    li: usize,
    l: &crate::program::Launch,
    strides: &[u64],
    context: u64,
) -> Result<(), RuntimeError> {
    if strides.len() != l.bufs.len() {
        return Err(RuntimeError::BadStrides {
            launch: li,
            label: l.label.clone(),
            detail: format!("{} strides for {} buffers", strides.len(), l.bufs.len()),
        });
    }
    for (bi, (b, &stride)) in l.bufs.iter().zip(strides).enumerate() {
        if stride.checked_mul(context).is_none_or(|end| end > b.bytes) {
            return Err(RuntimeError::BadStrides {
                launch: li,
                label: l.label.clone(),
                detail: format!(
                    "buffer {bi}: {context} rows of {stride} bytes exceed its {} bytes",
                    b.bytes
                ),
            });
        }
    }
    Ok(())
}

/// `BufRef` for an arena offset (a convenience for backends and tests).
pub fn arena(offset: u64, bytes: u64) -> BufRef {
    BufRef {
        region: Region::Arena,
        offset,
        bytes,
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
                pool.run(Job {
                    kernel: count_rows,
                    bufs: ptrs.as_ptr(),
                    scalars: scalars.as_ptr(),
                    rows: rows as i64,
                });
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
}
