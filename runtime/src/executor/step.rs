//! One step of the launch plan over one or several sequences (see the module doc of `executor`):
//! the feeds' tokens are checked and written as consecutive rows; each launch then runs once over
//! all rows, or, when it depends on the sequence (`Launch::per_sequence`, or it touches the KV
//! cache), once per feed over that feed's rows with its T, pos and KV slot; the `last_token`
//! launches run for the rows whose logits are asked for.

use super::pool::Job;
use super::{Executor, SeqFeed};
use crate::error::RuntimeError;
use crate::program::{Launch, Region};
use std::time::Instant;

/// Which rows' logits a step computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Logits {
    /// Every token's (`forward`; one feed).
    Every,
    /// Each feed's last token's.
    Last,
}

/// How the `last_token` launches run in a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TailRun {
    /// Over every row, like every other launch; the logits start at row 0 (and, when only some
    /// rows are wanted, are moved to the front after the step).
    AllRows,
    /// For the one feed's last row alone, through addresses advanced to it; its logits are at
    /// that row.
    LastRow,
    /// Each feed's last row is gathered to the front of the tail's input first; the tail runs
    /// over one row per feed, whose logits are at rows `0..feeds`.
    Gathered,
}

impl Executor {
    /// Checks `feeds` and runs one step over them (see the module doc); returns the row of the
    /// logits buffer where the asked-for logits start.
    pub(super) fn step(
        &mut self,
        feeds: &[SeqFeed<'_>],
        logits: Logits,
    ) -> Result<usize, RuntimeError> {
        let total = self.check_feeds(feeds)?;
        let shared = std::sync::Arc::clone(&self.shared);
        let program = &shared.program;
        self.rows.clear();
        let tok = program.tokens.offset as usize;
        let mut row = 0usize;
        for feed in feeds {
            for id in feed.tokens {
                let at = tok + row * 8;
                self.arena.bytes_mut()[at..at + 8].copy_from_slice(&id.to_le_bytes());
                row += 1;
            }
            self.rows.push((row - feed.tokens.len(), row - 1));
        }
        let single = feeds.len() == 1;
        let tail_run = match (logits, &shared.tail) {
            (Logits::Every, _) => TailRun::AllRows,
            (Logits::Last, _) if single => TailRun::LastRow,
            (Logits::Last, _) if feeds.iter().all(|f| f.tokens.len() == 1) => TailRun::AllRows,
            (Logits::Last, Some(_)) => TailRun::Gathered,
            (Logits::Last, None) => TailRun::AllRows,
        };
        let pos0 = feeds.first().map_or(0, |f| f.pos);
        self.scalars = [total as i64, if single { pos0 as i64 } else { 0 }];
        let step_start = self.profile.is_some().then(Instant::now);
        // A kernel cannot unwind, so a poisoned lock only means a caller panicked between launches.
        let mut pool = shared.pool.lock().unwrap_or_else(|e| e.into_inner());
        for (i, l) in program.launches.iter().enumerate() {
            let Some(&(_, kernel)) = program.kernels.get(l.kernel) else {
                continue;
            };
            let start = self.profile.is_some().then(Instant::now);
            let timed = start.is_some();
            if shared.per_sequence.get(i).copied().unwrap_or(false) {
                for (f, feed) in feeds.iter().enumerate() {
                    let job = self.sequence_job(i, l, kernel, feed, f);
                    pool.run(job, timed);
                }
            } else if l.last_token.is_some() && tail_run != TailRun::AllRows {
                let job = match tail_run {
                    TailRun::LastRow => self.last_row_job(i, l, kernel, total),
                    _ => {
                        if shared.tail.as_ref().is_some_and(|t| t.start == i) {
                            self.gather_last_rows(shared.tail.as_ref());
                        }
                        self.seq_scalars = [feeds.len() as i64, 0];
                        Job {
                            kernel,
                            bufs: self
                                .addresses
                                .get(i)
                                .map_or(std::ptr::null(), |a| a.as_ptr()),
                            scalars: self.seq_scalars.as_ptr(),
                            rows: l.rows.count(feeds.len() as u64) as i64,
                            group: row_group(l),
                        }
                    }
                };
                pool.run(job, timed);
            } else {
                let job = Job {
                    kernel,
                    bufs: self
                        .addresses
                        .get(i)
                        .map_or(std::ptr::null(), |a| a.as_ptr()),
                    scalars: self.scalars.as_ptr(),
                    rows: l.rows.count(total as u64) as i64,
                    group: row_group(l),
                };
                pool.run(job, timed);
            }
            if let (Some(start), Some(profile)) = (start, &mut self.profile) {
                profile.launch(i, start);
            }
        }
        if let (Some(start), Some(profile)) = (step_start, &mut self.profile) {
            pool.read_busy(&mut profile.data.busy_ns);
            profile.step(start, total, feeds.len());
        }
        drop(pool);
        Ok(match (logits, tail_run) {
            (Logits::Every, _) | (_, TailRun::Gathered) => 0,
            (_, TailRun::LastRow) => total - 1,
            (Logits::Last, TailRun::AllRows) => {
                self.front_logit_rows();
                0
            }
        })
    }

    /// Checks the feeds of a step: at least one, each with tokens inside the vocabulary, in a
    /// slot of its own, within the context; several only for a batchable program, and at most
    /// `context` tokens in all. Returns the number of tokens.
    fn check_feeds(&self, feeds: &[SeqFeed<'_>]) -> Result<usize, RuntimeError> {
        let program = &self.shared.program;
        if feeds.len() > 1 && !program.batchable {
            return Err(RuntimeError::NotBatchable { feeds: feeds.len() });
        }
        let mut total = 0usize;
        for (f, feed) in feeds.iter().enumerate() {
            let t = feed.tokens.len();
            if t == 0 {
                return Err(RuntimeError::Empty);
            }
            if feed.slot >= self.slots {
                return Err(RuntimeError::BadSlot {
                    slot: feed.slot,
                    slots: self.slots,
                });
            }
            if feeds[..f].iter().any(|g| g.slot == feed.slot) {
                return Err(RuntimeError::DuplicateSlot { slot: feed.slot });
            }
            if feed
                .pos
                .checked_add(t as u64)
                .is_none_or(|end| end > program.context)
            {
                return Err(RuntimeError::ContextOverflow {
                    pos: feed.pos,
                    tokens: t,
                    context: program.context,
                });
            }
            let vocab = program.vocab;
            if let Some((index, &id)) = feed
                .tokens
                .iter()
                .enumerate()
                .find(|(_, id)| **id < 0 || **id as u64 >= vocab)
            {
                return Err(RuntimeError::BadToken { id, index, vocab });
            }
            total += t;
        }
        if feeds.is_empty() {
            return Err(RuntimeError::Empty);
        }
        if total as u64 > program.context {
            return Err(RuntimeError::BatchOverflow {
                tokens: total,
                context: program.context,
            });
        }
        Ok(total)
    }

    /// Launch `i` for feed `f` alone: its rows, T and pos, its KV slot.
    fn sequence_job(
        &mut self,
        i: usize,
        l: &Launch,
        kernel: crate::program::KernelFn,
        feed: &SeqFeed<'_>,
        f: usize,
    ) -> Job {
        let first_row = self.rows.get(f).map_or(0, |r| r.0);
        let kv_offset = feed.slot * self.kv_stride;
        self.seq_addresses.clear();
        let ptrs = self.addresses.get(i).map(Vec::as_slice).unwrap_or_default();
        for (bi, (b, &p)) in l.bufs.iter().zip(ptrs).enumerate() {
            let stride = l
                .per_sequence
                .as_ref()
                .and_then(|s| s.get(bi))
                .copied()
                .unwrap_or(0) as usize;
            let advance = match b.region {
                Region::Kv => kv_offset,
                Region::Arena => first_row * stride,
                Region::Weights => 0,
            };
            // SAFETY: a KV buffer moves to the same offset in slot `feed.slot` (below `slots`,
            // checked); an arena buffer to the row its feed starts at, whose rows fit the buffer
            // (`check_strides`, and all feeds' rows together are at most `context`); a launch with
            // no strides runs only in a step of one feed (`check_feeds`), whose rows start at 0.
            self.seq_addresses.push(unsafe { p.add(advance) });
        }
        self.seq_scalars = [feed.tokens.len() as i64, feed.pos as i64];
        Job {
            kernel,
            bufs: self.seq_addresses.as_ptr(),
            scalars: self.seq_scalars.as_ptr(),
            rows: l.rows.count(feed.tokens.len() as u64) as i64,
            group: row_group(l),
        }
    }

    /// Launch `i` (a `last_token` one) for the last of the step's `total` rows alone.
    fn last_row_job(
        &mut self,
        i: usize,
        l: &Launch,
        kernel: crate::program::KernelFn,
        total: usize,
    ) -> Job {
        let skip = (total - 1) as u64;
        let (Some(last), Some(ptrs), Some(strides)) = (
            self.last_addresses.get_mut(i),
            self.addresses.get(i),
            l.last_token.as_ref(),
        ) else {
            return Job {
                kernel,
                bufs: std::ptr::null(),
                scalars: self.scalars.as_ptr(),
                rows: 0,
                group: 1,
            };
        };
        for ((a, &p), &stride) in last.iter_mut().zip(ptrs).zip(strides) {
            // SAFETY: (T − 1)·stride + stride ≤ the buffer's bytes (`check_strides`, T ≤
            // context), so the address stays within the buffer.
            *a = unsafe { p.add((skip * stride) as usize) };
        }
        let pos = self.scalars[1] + skip as i64;
        self.seq_scalars = [1, pos];
        Job {
            kernel,
            bufs: last.as_ptr(),
            scalars: self.seq_scalars.as_ptr(),
            rows: l.rows.count(1) as i64,
            group: row_group(l),
        }
    }

    /// Copies each feed's last row to row `f` (in feed order) of every buffer the tail gathers.
    /// Rows only move forward (`f` ≤ the feed's last row, increasing), so no row is overwritten
    /// before it is copied.
    fn gather_last_rows(&mut self, tail: Option<&super::resolve::Tail>) {
        let Some(tail) = tail else { return };
        let bytes = self.arena.bytes_mut();
        for &(offset, stride) in &tail.gather {
            for (f, &(_, last)) in self.rows.iter().enumerate() {
                if f != last {
                    let from = offset + last * stride;
                    bytes.copy_within(from..from + stride, offset + f * stride);
                }
            }
        }
    }

    /// After a batched step whose tail ran over every row: moves each feed's logits row to row
    /// `f` of the logits buffer (rows only move forward, as in `gather_last_rows`).
    fn front_logit_rows(&mut self) {
        let program = &self.shared.program;
        let offset = program.logits.offset as usize;
        let stride = program.vocab as usize * 4;
        let bytes = self.arena.bytes_mut();
        for (f, &(_, last)) in self.rows.iter().enumerate() {
            if f != last {
                let from = offset + last * stride;
                bytes.copy_within(from..from + stride, offset + f * stride);
            }
        }
    }
}

/// Whether a step runs launch `l` once per sequence: it is marked `per_sequence`, or it reads or
/// writes the KV cache (a launch of an older program, which runs only in steps of one sequence).
/// Decided once, when the executor is made.
pub(super) fn runs_per_sequence(l: &Launch) -> bool {
    l.per_sequence.is_some() || l.bufs.iter().any(|b| b.region == Region::Kv)
}

/// `Launch::row_group` as the pool takes it (`Job::group`, which reads 0 as 1).
fn row_group(l: &Launch) -> i64 {
    i64::try_from(l.row_group).unwrap_or(1)
}
