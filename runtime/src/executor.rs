//! The executor: owns the arena and the KV cache (allocated once), resolves every launch's buffers to
//! addresses at load time, and runs the launch plan for one step, splitting each launch's rows across a
//! persistent thread pool. A step allocates nothing.

use crate::error::RuntimeError;
use crate::program::{BufRef, KernelFn, Program, Region};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A 64-byte aligned, zeroed byte buffer.
struct Aligned {
    lines: Vec<Line>,
    len: usize,
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

impl Aligned {
    fn zeroed(len: u64) -> Aligned {
        let n = usize::try_from(len.div_ceil(64)).unwrap_or(usize::MAX);
        Aligned {
            lines: vec![Line([0; 64]); n],
            len: n * 64,
        }
    }

    fn from_bytes(bytes: &[u8]) -> Aligned {
        let mut a = Aligned::zeroed(bytes.len() as u64);
        a.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
        a
    }

    fn ptr(&mut self) -> *mut u8 {
        self.lines.as_mut_ptr().cast::<u8>()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `lines` is `len` contiguous initialized bytes (`Line` is plain bytes, repr(C)).
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<u8>(), self.len) }
    }
}

/// One unit of parallel work: a kernel call over a row range. Plain data, copied to the workers.
#[derive(Clone, Copy)]
struct Job {
    kernel: KernelFn,
    bufs: *const *mut u8,
    scalars: *const i64,
    rows: i64,
}

// SAFETY: the pointers in a job point into buffers the executor owns and keeps alive, unmoved, until
// every worker has finished the job (the caller waits); each worker writes only its own rows.
unsafe impl Send for Job {}

/// How many times a waiting thread polls before it sleeps: launches come back to back during a step,
/// so the next one usually arrives within microseconds and parking costs far more than spinning.
const SPINS: u32 = 20_000;

struct Pool {
    /// The current job; written by the caller under the lock, read by workers after `generation` moves.
    job: Mutex<Option<Job>>,
    /// Bumped (under `job`'s lock) for every new job.
    generation: AtomicU64,
    /// Workers still running the current job.
    pending: AtomicUsize,
    shutdown: AtomicBool,
    start: Condvar,
    done_lock: Mutex<()>,
    done: Condvar,
    workers: usize,
}

/// A persistent pool: `threads − 1` workers plus the calling thread. Threads spin briefly between
/// launches and sleep on a condition variable when idle.
struct ThreadPool {
    shared: Arc<Pool>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

fn slice(rows: i64, parts: usize, i: usize) -> (i64, i64) {
    let chunk = (rows + parts as i64 - 1) / parts as i64;
    let begin = (chunk * i as i64).min(rows);
    (begin, (begin + chunk).min(rows))
}

impl ThreadPool {
    fn new(threads: usize) -> ThreadPool {
        let workers = threads.max(1) - 1;
        let shared = Arc::new(Pool {
            job: Mutex::new(None),
            generation: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            start: Condvar::new(),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
            workers,
        });
        let handles = (0..workers)
            .map(|w| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || worker(&shared, w + 1))
            })
            .collect();
        ThreadPool { shared, handles }
    }

    /// Runs `job` over its rows on every thread and waits for all of them.
    fn run(&self, job: Job) {
        let parts = self.shared.workers + 1;
        // Small launches (one row per token at decode) are not worth splitting.
        if parts == 1 || job.rows < 16 * parts as i64 {
            // SAFETY: see `Job`; the caller guarantees the kernel matches its buffers.
            unsafe { (job.kernel)(job.bufs, job.scalars, 0, job.rows) };
            return;
        }
        self.shared
            .pending
            .store(self.shared.workers, Ordering::SeqCst);
        {
            let mut slot = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(job);
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.start.notify_all();
        let (b, e) = slice(job.rows, parts, 0);
        // SAFETY: see `Job`.
        unsafe { (job.kernel)(job.bufs, job.scalars, b, e) };
        let mut spins = 0;
        while self.shared.pending.load(Ordering::Acquire) > 0 {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let guard = self
                .shared
                .done_lock
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if self.shared.pending.load(Ordering::Acquire) > 0 {
                let _unused = self
                    .shared
                    .done
                    .wait(guard)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

fn worker(shared: &Pool, index: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for the next job: spin, then sleep.
        let mut spins = 0;
        while shared.generation.load(Ordering::Acquire) == seen
            && !shared.shutdown.load(Ordering::Acquire)
        {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let slot = shared.job.lock().unwrap_or_else(|e| e.into_inner());
            if shared.generation.load(Ordering::Acquire) == seen
                && !shared.shutdown.load(Ordering::Acquire)
            {
                let _unused = shared.start.wait(slot).unwrap_or_else(|e| e.into_inner());
            }
        }
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        let job = {
            let slot = shared.job.lock().unwrap_or_else(|e| e.into_inner());
            seen = shared.generation.load(Ordering::Acquire);
            *slot
        };
        if let Some(job) = job {
            let (b, e) = slice(job.rows, shared.workers + 1, index);
            if b < e {
                // SAFETY: see `Job`.
                unsafe { (job.kernel)(job.bufs, job.scalars, b, e) };
            }
        }
        if shared.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _guard = shared.done_lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.done.notify_all();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let _slot = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::SeqCst);
        }
        self.shared.start.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Runs a `Program`: one call of `forward` is one prefill or decode step.
pub struct Executor {
    program: Program,
    arena: Aligned,
    kv: Aligned,
    /// Kept alive: launches point into it.
    _weights: Aligned,
    /// Per launch, its buffer addresses (resolved once).
    addresses: Vec<Vec<*mut u8>>,
    scalars: [i64; 2],
    pool: ThreadPool,
}

impl Executor {
    /// Prepares `program` to run on `threads` threads (at least 1): allocates the arena and the KV
    /// cache, copies the weights to aligned memory, and checks every buffer of every launch.
    pub fn new(mut program: Program, threads: usize) -> Result<Executor, RuntimeError> {
        let mut arena = Aligned::zeroed(program.arena_bytes);
        let mut kv = Aligned::zeroed(program.kv_bytes);
        let mut weights = Aligned::from_bytes(&program.weights);
        let sizes = [
            program.arena_bytes,
            program.weights.len() as u64,
            program.kv_bytes,
        ];
        // The aligned copy is the one the kernels read; do not keep a second one.
        program.weights = Vec::new();
        let mut addresses = Vec::with_capacity(program.launches.len());
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
                    Region::Weights => (weights.ptr(), sizes[1]),
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
        Ok(Executor {
            program,
            arena,
            kv,
            _weights: weights,
            addresses,
            scalars: [0; 2],
            pool: ThreadPool::new(threads),
        })
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Bytes of weights the program reads (rounded up to whole 64-byte lines).
    pub fn weight_bytes(&self) -> u64 {
        self._weights.len as u64
    }

    /// Clears the KV cache (a new conversation).
    pub fn reset(&mut self) {
        self.kv.bytes_mut().fill(0);
    }

    /// Runs `tokens` at positions `pos..pos+T` and returns the logits, `T × vocab` values.
    pub fn forward(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        let t = tokens.len();
        if t == 0 {
            return Err(RuntimeError::Empty);
        }
        let vocab = self.program.vocab;
        if pos
            .checked_add(t as u64)
            .is_none_or(|end| end > self.program.context)
        {
            return Err(RuntimeError::ContextOverflow {
                pos,
                tokens: t,
                context: self.program.context,
            });
        }
        if let Some((index, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, id)| **id < 0 || **id as u64 >= vocab)
        {
            return Err(RuntimeError::BadToken { id, index, vocab });
        }
        let tok = self.program.tokens.offset as usize;
        for (i, id) in tokens.iter().enumerate() {
            let at = tok + i * 8;
            self.arena.bytes_mut()[at..at + 8].copy_from_slice(&id.to_le_bytes());
        }
        self.scalars = [t as i64, pos as i64];
        let scalars = self.scalars.as_ptr();
        for (l, ptrs) in self.program.launches.iter().zip(&self.addresses) {
            let Some(&(_, kernel)) = self.program.kernels.get(l.kernel) else {
                continue;
            };
            let rows = l.rows.count(t as u64) as i64;
            self.pool.run(Job {
                kernel,
                bufs: ptrs.as_ptr(),
                scalars,
                rows,
            });
        }
        let start = self.program.logits.offset as usize;
        let n = t * vocab as usize;
        let bytes = &self.arena.bytes()[start..start + n * 4];
        // SAFETY: the logits buffer is 4-byte aligned (arena offsets are 64-byte aligned) and holds
        // `n` f32 values written by the last launches.
        Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), n) })
    }
}

impl Executor {
    /// Runs `tokens` at positions `pos..pos+T` like `forward` and returns the logits of the last
    /// token only (`vocab` values): what generation needs after a prefill or a decode step.
    pub fn forward_last(&mut self, tokens: &[i64], pos: u64) -> Result<&[f32], RuntimeError> {
        let vocab = self.program.vocab as usize;
        let all = self.forward(tokens, pos)?;
        let start = all.len().saturating_sub(vocab);
        Ok(&all[start..])
    }
}

/// `BufRef` for an arena offset (a convenience for backends and tests).
pub fn arena(offset: u64, bytes: u64) -> BufRef {
    BufRef {
        region: Region::Arena,
        offset,
        bytes,
    }
}
