//! The differential kernel harness both backends share. `cases(op)` gives, for every `KernelOp`,
//! cases at awkward sizes: a `KernelKind`, its buffers in ABI order (inputs as the kernel reads
//! them, weights already in their layout), T, pos, the launch's rows, and for every buffer the
//! kernel writes the contents the reference interpreter (`OpKind::eval`) computes, which row writes
//! each byte, and how each backend's result is compared (`Compare`, per the numerics promise of
//! the `KernelKind` variant). `Memory` holds a case's buffers during a launch and does the checks
//! both runners make: nothing outside the launched rows changed, inputs and guard bytes are intact,
//! outputs match. The runners are `kernels_cpu.rs` and `kernels_cuda.rs`.

#![allow(dead_code)] // Each runner uses a different part.

mod attention;
mod compare;
mod elementwise;
mod matmul;
mod memory;
mod norm;
mod reference;

pub use compare::{Backend, Compare};
pub use memory::Memory;

use crate::support::Rng;
use bitnet_backends::kernel::{KernelKind, KernelOp};

/// One launch of one kernel with the outputs it must produce.
pub struct Case {
    /// The kernel.
    pub kind: KernelKind,
    /// Tokens of the call.
    pub t: usize,
    /// Position of token 0.
    pub pos: usize,
    /// Rows of the launch (what a row is depends on the kind).
    pub rows: usize,
    /// The buffers in ABI order.
    pub buffers: Vec<Buffer>,
    /// What makes the case awkward, for failure messages.
    pub note: String,
}

impl Case {
    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (T {}, pos {}, rows {}, {})",
            self.kind.symbol(),
            self.t,
            self.pos,
            self.rows,
            self.note
        )
    }
}

/// One ABI slot of a case.
pub struct Buffer {
    /// The contents before the launch (empty for an in-place slot).
    pub bytes: Vec<u8>,
    /// What the kernel writes into this slot, `None` for a buffer that is only read.
    pub written: Option<Written>,
    /// The slot is buffer `index` of the same case itself (an output in place of an input).
    pub alias_of: Option<usize>,
}

impl Buffer {
    /// A buffer the kernel only reads.
    pub fn input(bytes: Vec<u8>) -> Buffer {
        Buffer {
            bytes,
            written: None,
            alias_of: None,
        }
    }

    /// An output buffer holding `bytes` before the launch.
    pub fn output(bytes: Vec<u8>, written: Written) -> Buffer {
        Buffer {
            bytes,
            written: Some(written),
            alias_of: None,
        }
    }

    /// An output that is buffer `of` itself (which then must not be listed as written).
    pub fn in_place(of: usize, written: Written) -> Buffer {
        Buffer {
            bytes: Vec::new(),
            written: Some(written),
            alias_of: Some(of),
        }
    }
}

/// The element type of an output, for its comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    /// 4-byte floats.
    F32,
    /// Signed bytes.
    I8,
}

/// What the kernel writes into a buffer.
pub struct Written {
    /// The whole buffer after the launch, as the interpreter computes it.
    pub want: Vec<u8>,
    /// The element type.
    pub elem: Elem,
    /// Which launch row writes each byte.
    pub owner: Owner,
    /// How the CPU kernel's result is compared.
    pub cpu: Compare,
    /// How the CUDA kernel's result is compared.
    pub cuda: Compare,
}

impl Written {
    /// f32 output `want`, compared bit for bit on both backends.
    pub fn exact_f32(want: &[f32], owner: Owner) -> Written {
        Written {
            want: reference::f32_bytes(want),
            elem: Elem::F32,
            owner,
            cpu: Compare::Exact,
            cuda: Compare::Exact,
        }
    }

    /// The same with the comparisons `cpu` and `cuda`.
    pub fn compared(self, cpu: Compare, cuda: Compare) -> Written {
        Written { cpu, cuda, ..self }
    }

    /// The comparison for `backend`.
    pub fn compare(&self, backend: Backend) -> Compare {
        match backend {
            Backend::Cpu => self.cpu,
            Backend::Cuda => self.cuda,
        }
    }
}

/// Which launch row writes a byte of an output.
#[derive(Clone, Copy, Debug)]
pub enum Owner {
    /// Row r writes bytes `r·row_bytes .. (r + 1)·row_bytes`.
    Rows {
        /// Bytes per row.
        row_bytes: usize,
    },
    /// Row r writes column r of every token of a `[T, n]` f32 matrix (rows are output features).
    Columns {
        /// Columns.
        n: usize,
    },
    /// Row r writes row `first + r` of each of the blocks of `context` rows of `row_bytes` (the
    /// head-major KV cache: one block per KV head).
    Shifted {
        /// Bytes per row (a head's `d` f32).
        row_bytes: usize,
        /// Rows per block (the cache's context).
        context: usize,
        /// The row launch row 0 writes.
        first: usize,
    },
}

impl Owner {
    /// The launch row that writes byte `byte`, if any row of `0..rows` does.
    pub fn row(self, byte: usize, rows: usize) -> Option<usize> {
        let row = match self {
            Owner::Rows { row_bytes } => Some(byte / row_bytes.max(1)),
            Owner::Columns { n } => Some(byte / 4 % n.max(1)),
            Owner::Shifted {
                row_bytes,
                context,
                first,
            } => (byte / row_bytes.max(1) % context.max(1)).checked_sub(first),
        };
        row.filter(|&r| r < rows)
    }
}

/// The cases of `op`. Every op has its generator here: a new `KernelOp` is a build error until it
/// has one. Each op draws from its own seeded generator, so the cases do not depend on the order in
/// which ops are asked for.
pub fn cases(op: KernelOp) -> Vec<Case> {
    let mut rng = Rng(0x6b65_726e_656c ^ op as u64);
    match op {
        KernelOp::Embedding => elementwise::embedding(&mut rng),
        KernelOp::RmsNormQuant => norm::rms_norm_quant(&mut rng),
        KernelOp::ActQuant => norm::act_quant(&mut rng),
        KernelOp::TernaryMatmul => matmul::ternary(&mut rng),
        KernelOp::Relu2Mul => elementwise::relu2_mul(&mut rng),
        KernelOp::Add => elementwise::add(&mut rng),
        KernelOp::RmsNorm => norm::rms_norm(&mut rng),
        KernelOp::Rope => elementwise::rope(&mut rng),
        KernelOp::KvStore => attention::kv_store(&mut rng),
        KernelOp::Attention => attention::attention(&mut rng),
        KernelOp::MatmulNt => matmul::matmul_nt(&mut rng),
        KernelOp::MatmulNtHalf => matmul::matmul_nt_half(&mut rng),
        KernelOp::MatmulI8 => matmul::matmul_i8(&mut rng),
        KernelOp::SiluMul => elementwise::silu_mul(&mut rng),
        KernelOp::BiasAdd => elementwise::bias_add(&mut rng),
        KernelOp::MatmulQ4 => matmul::matmul_q4(&mut rng),
    }
}

/// The distinct kinds of `cases` in order, and for each case the index of its kind.
pub fn distinct_kinds(cases: &[Case]) -> (Vec<KernelKind>, Vec<usize>) {
    let mut kinds: Vec<KernelKind> = cases.iter().map(|c| c.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let index = cases
        .iter()
        .map(|c| kinds.binary_search(&c.kind).unwrap_or(usize::MAX))
        .collect();
    (kinds, index)
}

/// One `#[test]` per `KernelOp`, each calling `$run(op)`, and a test that every op has one.
#[macro_export]
macro_rules! per_op_tests {
    ($run:path; $($name:ident => $op:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $run(bitnet_backends::kernel::KernelOp::$op);
            }
        )*

        #[test]
        fn every_op_has_a_test() {
            let tested = [$(bitnet_backends::kernel::KernelOp::$op),*];
            assert_eq!(&tested[..], &bitnet_backends::kernel::KernelOp::ALL[..]);
        }
    };
}

/// The per-op tests of a runner `$run`.
#[macro_export]
macro_rules! harness_tests {
    ($run:path) => {
        $crate::per_op_tests! {
            $run;
            embedding => Embedding,
            rms_norm_quant => RmsNormQuant,
            act_quant => ActQuant,
            ternary_matmul => TernaryMatmul,
            relu2_mul => Relu2Mul,
            add => Add,
            rms_norm => RmsNorm,
            rope => Rope,
            kv_store => KvStore,
            attention => Attention,
            matmul_nt => MatmulNt,
            matmul_nt_half => MatmulNtHalf,
            matmul_i8 => MatmulI8,
            silu_mul => SiluMul,
            bias_add => BiasAdd,
            matmul_q4 => MatmulQ4,
        }
    };
}
