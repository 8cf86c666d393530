//! Load-time checks of a program's launch plan and the addresses the executor runs it with: every
//! buffer within its region, the `last_token` and `per_sequence` strides within their buffers, and
//! where a batched step gathers each sequence's last row before the logits launches (`Tail`).

use super::aligned_buf::Aligned;
use crate::AlignedBytes;
use crate::error::RuntimeError;
use crate::program::{Program, Region};

/// Every launch's buffer addresses in `arena`, the weights and `kv` (the first KV slot), and the
/// addresses the `last_token` launches start from.
pub(super) struct Addresses {
    /// Per launch, its buffer addresses.
    pub(super) launches: Vec<Vec<*mut u8>>,
    /// Per launch with `last_token` strides, a copy of its addresses that `forward_last` rewrites;
    /// empty for the other launches.
    pub(super) last: Vec<Vec<*mut u8>>,
}

/// Checks every buffer of every launch, and its strides, and resolves it to an address.
pub(super) fn resolve(
    program: &Program,
    weights: &AlignedBytes,
    arena: &mut Aligned,
    kv: &mut Aligned,
) -> Result<Addresses, RuntimeError> {
    let sizes = [program.arena_bytes, weights.len() as u64, program.kv_bytes];
    // Kernels only read weights (their `KernelKind` contracts), so a read-only mapping is fine.
    let weights_ptr = weights.as_ptr().cast_mut();
    let mut launches = Vec::with_capacity(program.launches.len());
    let mut last = Vec::with_capacity(program.launches.len());
    for (li, l) in program.launches.iter().enumerate() {
        if l.kernel >= program.kernels.len() {
            return Err(RuntimeError::BadKernel {
                launch: li,
                label: l.label.clone(),
                kernel: l.kernel,
                count: program.kernels.len(),
            });
        }
        l.check_buffers(li, sizes)?;
        let mut ptrs = Vec::with_capacity(l.bufs.len());
        for b in &l.bufs {
            let base = match b.region {
                Region::Arena => arena.ptr(),
                Region::Weights => weights_ptr,
                Region::Kv => kv.ptr(),
            };
            // SAFETY: offset + bytes is within the region (`check_buffers`).
            ptrs.push(unsafe { base.add(b.offset as usize) });
        }
        if let Some(strides) = &l.per_sequence {
            l.check_strides(li, "per-sequence", strides, program.context)?;
        }
        last.push(match &l.last_token {
            None => Vec::new(),
            Some(strides) => {
                l.check_strides(li, "last-token", strides, program.context)?;
                ptrs.clone()
            }
        });
        launches.push(ptrs);
    }
    for b in [program.tokens, program.logits] {
        if b.region != Region::Arena || b.offset.saturating_add(b.bytes) > sizes[0] {
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
    Ok(Addresses { launches, last })
}

/// The launches only the logits need, when they end the plan: a batched step with sequences of
/// several tokens gathers each sequence's last row to the front of the tail's input rows, then
/// runs the tail over one row per sequence.
#[derive(Clone, Debug, Default)]
pub(super) struct Tail {
    /// The index of the first tail launch (every launch from it on has `last_token` strides,
    /// none before it has).
    pub(super) start: usize,
    /// The distinct activation buffers of the first tail launch (its input, and its output,
    /// which is overwritten anyway), as (arena offset, row stride): the rows to gather.
    pub(super) gather: Vec<(usize, usize)>,
}

impl Tail {
    /// The tail of `program`, if its `last_token` launches are a suffix of the plan. Later tail
    /// launches read only what earlier ones write (the last-token analysis follows one chain of
    /// single-use results) and weights, so gathering the first launch's rows is enough.
    pub(super) fn of(program: &Program) -> Option<Tail> {
        let launches = &program.launches;
        let start = launches
            .iter()
            .rposition(|l| l.last_token.is_none())
            .map_or(0, |i| i + 1);
        let first = launches.get(start)?;
        if launches[..start].iter().any(|l| l.last_token.is_some()) {
            return None;
        }
        let strides = first.last_token.as_ref()?;
        let mut gather: Vec<(usize, usize)> = Vec::new();
        for (b, &stride) in first.bufs.iter().zip(strides) {
            if b.region == Region::Arena && stride > 0 {
                let entry = (
                    usize::try_from(b.offset).ok()?,
                    usize::try_from(stride).ok()?,
                );
                if !gather.contains(&entry) {
                    gather.push(entry);
                }
            }
        }
        Some(Tail { start, gather })
    }
}
