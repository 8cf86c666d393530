//! A case's buffers during a launch, and the checks both runners make on them: bytes outside the
//! rows launched so far unchanged, inputs and the guard bytes around every buffer intact, outputs
//! as the interpreter computes them.

use super::compare::{Backend, mismatch};
use super::{Case, Written};

/// Bytes of guard before and after every buffer.
const GUARD: usize = 64;
/// The guard bytes' value.
const GUARD_BYTE: u8 = 0x5a;

/// Storage aligned to 64 bytes.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// The buffers of one case, each `GUARD` bytes into its own allocation plus `offset` (so that
/// `offset` sets its alignment mod 64), with guard bytes on both sides.
pub struct Memory<'a> {
    case: &'a Case,
    offset: usize,
    storage: Vec<Vec<Line>>,
    /// Per ABI slot, the storage it points into.
    slot_storage: Vec<usize>,
}

impl<'a> Memory<'a> {
    /// The buffers of `case`, each at `offset` (< 64) bytes past a 64-byte boundary.
    pub fn new(case: &'a Case, offset: usize) -> Memory<'a> {
        assert!(offset < 64);
        let slot_storage: Vec<usize> = (0..case.buffers.len())
            .map(|i| case.buffers[i].alias_of.unwrap_or(i))
            .collect();
        let storage = case
            .buffers
            .iter()
            .map(|b| {
                let total = GUARD + offset + b.bytes.len() + GUARD;
                let mut lines = vec![Line([GUARD_BYTE; 64]); total.div_ceil(64)];
                let bytes = as_bytes_mut(&mut lines);
                bytes[GUARD + offset..][..b.bytes.len()].copy_from_slice(&b.bytes);
                lines
            })
            .collect();
        Memory {
            case,
            offset,
            storage,
            slot_storage,
        }
    }

    /// One pointer per ABI slot (in-place slots share their buffer's).
    pub fn pointers(&mut self) -> Vec<*mut u8> {
        let base: Vec<*mut u8> = self
            .storage
            .iter_mut()
            .map(|lines| {
                // SAFETY: `GUARD + offset` is within the allocation (`Memory::new`).
                unsafe { lines.as_mut_ptr().cast::<u8>().add(GUARD + self.offset) }
            })
            .collect();
        self.slot_storage.iter().map(|&s| base[s]).collect()
    }

    /// The current bytes of storage `s` (the buffer only, without guards).
    fn bytes(&self, s: usize) -> &[u8] {
        let len = self.case.buffers[s].bytes.len();
        &as_bytes(&self.storage[s])[GUARD + self.offset..][..len]
    }

    /// What the kernel writes into storage `s`, if anything (its own slot's or an in-place slot's).
    fn written(&self, s: usize) -> Option<&'a Written> {
        let case: &'a Case = self.case;
        case.buffers
            .iter()
            .enumerate()
            .filter(|&(slot, _)| self.slot_storage[slot] == s)
            .find_map(|(_, b)| b.written.as_ref())
    }

    /// Checks that no byte that only rows not in `done` may write has changed, nor any input, nor
    /// any guard byte.
    pub fn check_untouched(&self, done: &[bool], when: &str) {
        let case = self.case;
        for (s, lines) in self.storage.iter().enumerate() {
            if self.slot_storage[s] != s {
                continue;
            }
            let all = as_bytes(lines);
            let len = case.buffers[s].bytes.len();
            let start = GUARD + self.offset;
            if let Some((i, _)) = all
                .iter()
                .enumerate()
                .find(|&(i, &b)| (i < start || i >= start + len) && b != GUARD_BYTE)
            {
                panic!(
                    "{}: {when}: buffer {s}: guard byte {} changed",
                    case.describe(),
                    i as isize - start as isize
                );
            }
            let initial = &case.buffers[s].bytes;
            let now = self.bytes(s);
            let owner = self.written(s).map(|w| w.owner);
            for (i, (&b, &was)) in now.iter().zip(initial).enumerate() {
                let mine = owner
                    .and_then(|o| o.row(i, case.rows))
                    .is_some_and(|r| done[r]);
                assert!(
                    mine || b == was,
                    "{}: {when}: buffer {s} byte {i} changed, though no launched row writes it",
                    case.describe()
                );
            }
        }
    }

    /// Checks every written buffer against the interpreter's result with `backend`'s comparison.
    pub fn check_outputs(&self, backend: Backend) {
        for s in 0..self.storage.len() {
            if self.slot_storage[s] != s {
                continue;
            }
            let Some(w) = self.written(s) else {
                continue;
            };
            let compare = w.compare(backend);
            if let Some((i, what)) = mismatch(w.elem, compare, self.bytes(s), &w.want) {
                panic!(
                    "{}: {backend:?} buffer {s} element {i}: {what} (comparison {compare:?})",
                    self.case.describe()
                );
            }
        }
    }
}

fn as_bytes(lines: &[Line]) -> &[u8] {
    // SAFETY: `Line` is 64 plain bytes.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<u8>(), lines.len() * 64) }
}

fn as_bytes_mut(lines: &mut [Line]) -> &mut [u8] {
    // SAFETY: `Line` is 64 plain bytes.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), lines.len() * 64) }
}
