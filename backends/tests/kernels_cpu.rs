//! The differential kernel harness (`harness`) on the CPU backend: every case of every `KernelOp`
//! JIT-compiled (`cpu::jit::compile_kernels`, one module per op) and called through the `KernelFn`
//! ABI on 1–3 uneven row ranges in shuffled order, as the thread pool splits a launch, with every
//! buffer 4 bytes past a 64-byte boundary (kernels assume no alignment beyond the element's). After
//! each call, no byte that only rows not yet launched write may have changed, nor any input or
//! guard byte; at the end the outputs must match the interpreter's as `Written::cpu` says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod support;

use bitnet_backends::cpu::jit::{compile_generated_kernels, compile_kernels};
use bitnet_backends::kernel::{KernelKind, KernelOp};
use harness::{Backend, Memory, cases, distinct_kinds};
use support::{Rng, splits};

/// Runs every case of `op` on the CPU kernels.
fn run(op: KernelOp) {
    run_with(op, compile_kernels);
}

/// Runs every case of `op` on the kernels `compile` makes.
fn run_with(op: KernelOp, compile: Compile) {
    let cases = cases(op);
    assert!(!cases.is_empty(), "{op:?} has no cases");
    let (kinds, index) = distinct_kinds(&cases);
    let (_module, fns) = compile(&kinds).expect("the kernels compile");
    let mut rng = Rng(0x0063_7075 ^ op as u64);
    for (case, &f) in cases.iter().zip(&index) {
        let f = fns[f];
        let mut memory = Memory::new(case, 4);
        let pointers = memory.pointers();
        let scalars = [case.t as i64, case.pos as i64];
        let mut done = vec![false; case.rows];
        for (begin, end) in splits(&mut rng, case.rows) {
            // SAFETY: the buffers have the sizes `case.kind` documents for T and pos.
            unsafe {
                f(
                    pointers.as_ptr(),
                    scalars.as_ptr(),
                    begin as i64,
                    end as i64,
                )
            };
            done[begin..end].iter_mut().for_each(|d| *d = true);
            memory.check_untouched(&done, &format!("after rows {begin}..{end}"));
        }
        memory.check_outputs(Backend::Cpu);
    }
}

type Compile = fn(
    &[KernelKind],
) -> Result<
    (cranelift_jit::JITModule, Vec<bitnet_runtime::KernelFn>),
    bitnet_backends::BackendError,
>;

harness_tests!(run);

/// The kernels that call a micro-kernel on an AVX2 or AVX-512 host, generated instead (as on a CPU
/// without them): the same cases.
mod generated {
    use super::{KernelOp, compile_generated_kernels, run_with};

    #[test]
    fn attention() {
        run_with(KernelOp::Attention, compile_generated_kernels);
    }

    #[test]
    fn ternary_matmul() {
        run_with(KernelOp::TernaryMatmul, compile_generated_kernels);
    }

    #[test]
    fn matmul_nt_half() {
        run_with(KernelOp::MatmulNtHalf, compile_generated_kernels);
    }

    #[test]
    fn matmul_i8() {
        run_with(KernelOp::MatmulI8, compile_generated_kernels);
    }
}

/// Every op has cases, and each case's kind is of its op.
#[test]
fn every_op_has_cases() {
    for op in KernelOp::ALL {
        let cases = cases(op);
        assert!(!cases.is_empty(), "{op:?} has no cases");
        assert!(cases.iter().all(|c| c.kind.op() == op));
        let _: Vec<&KernelKind> = cases.iter().map(|c| &c.kind).collect();
    }
}
