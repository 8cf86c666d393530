//! The differential kernel harness (`harness`) on the CUDA backend, without a GPU: every case of
//! every `KernelOp` the backend builds, its kernels compiled for the host by LLVM
//! (`cuda::host::with_host_kernels`, one module per op) and launched as a grid would run them
//! (every block, every thread of a block in turn), on 64-byte aligned buffers. After the launch, no
//! byte that no row writes may have changed, nor any input or guard byte, and the outputs must
//! match the interpreter's as `Written::cuda` says (the CUDA kernels sum in a fixed tree order, so
//! norms, attention and the float matmuls compare within stated bounds). The kinds the contract
//! gives no CUDA kernel (the int8 lm_head, a 16-bit embedding table) must be refused by `cuda::kernels::geometry` with
//! `BackendError::Unsupported`. What the host build cannot check (32-lane shuffles, multi-warp
//! reductions, `ex2.approx`, the GPU's memory model) is listed in `cuda::host`.

#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod support;

use bitnet_backends::BackendError;
use bitnet_backends::cuda::host::with_host_kernels;
use bitnet_backends::cuda::kernels::geometry;
use bitnet_backends::cuda::supports;
use bitnet_backends::kernel::{KernelKind, KernelOp};
use harness::{Backend, Case, Memory, cases, distinct_kinds};

/// Whether the `KernelKind` contract gives `kind` no CUDA kernel: the int8 lm_head, and a 16-bit
/// embedding table (the CUDA kernel reads an f32 table).
fn refused(kind: &KernelKind) -> bool {
    !supports(kind.op()) || matches!(kind, KernelKind::Embedding(p) if p.half.is_some())
}

/// Runs every case of `op` on the CUDA kernels built for the host; checks that the backend refuses
/// the cases it has no kernel for.
fn run(op: KernelOp) {
    let (refused, cases): (Vec<Case>, Vec<Case>) =
        cases(op).into_iter().partition(|c| refused(&c.kind));
    for case in &refused {
        let refusal = geometry(&case.kind).expect_err("no CUDA kernel for this kind");
        assert!(
            matches!(
                refusal,
                BackendError::Unsupported {
                    backend: "cuda",
                    ..
                }
            ),
            "{}: {refusal:?}",
            case.describe()
        );
        let built = with_host_kernels(std::slice::from_ref(&case.kind), |_| ());
        assert!(built.is_err(), "{} built for the host", case.describe());
    }
    assert_eq!(
        cases.is_empty(),
        !supports(op),
        "{op:?}: the CUDA backend builds some of its cases exactly when it supports the op"
    );
    let (kinds, index) = distinct_kinds(&cases);
    with_host_kernels(&kinds, |kernels| {
        for (case, &kernel) in cases.iter().zip(&index) {
            let mut memory = Memory::new(case, 0);
            let pointers = memory.pointers();
            let (t, pos) = (case.t as i64, case.pos as i64);
            // SAFETY: the buffers have the sizes `case.kind` documents for T and pos.
            unsafe { kernels.launch(kernel, &pointers, case.rows as u64, t, pos) }
                .unwrap_or_else(|e| panic!("{}: {e}", case.describe()));
            memory.check_untouched(&vec![true; case.rows], "after the launch");
            memory.check_outputs(Backend::Cuda);
        }
    })
    .expect("the kernels build for the host");
}

harness_tests!(run);
