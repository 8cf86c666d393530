//! The CPU backend (Cranelift): kernels (`kernels`, built with the emitter `emit`), JIT compilation
//! (`jit`), ahead-of-time objects, shared libraries and artifacts (`aot`), and the lowering of a
//! planned module into a launch plan and a `bitnet_runtime::Program` (`lower`). The kernels
//! implement the backend-neutral contract of `crate::kernel`.

pub mod aot;
mod emit;
pub mod jit;
pub mod kernels;
pub mod lower;
pub mod step;

pub use crate::kernel::layout::{PACK_BLOCK, PACK_ORDER};

/// How the weight of an `x·Wᵀ` matmul is stored: the lm_head (the `nn.matmul` whose result is the
/// logits) by `LowerOptions::head`, every other dense projection by `LowerOptions::dense`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HeadDtype {
    /// Lossless: bf16 when every weight is exactly a bf16 value (a bf16 checkpoint), else f16 when
    /// every weight is exactly an f16 (a GGUF's F16 tensor; `KernelKind::MatmulNtHalf` for both,
    /// shared with a tied embedding), else f32 (`KernelKind::MatmulNt`).
    #[default]
    Auto,
    /// f16, rounded to nearest even (`KernelKind::MatmulNtHalf`): half the bytes of f32; lossy for
    /// values f16 cannot hold (bf16 weights outside f16's range or precision).
    F16,
    /// bf16, rounded to nearest even (`KernelKind::MatmulNtHalf`): half the bytes of f32; exact
    /// (and shared with a tied bf16 embedding) when every weight is a bf16 already.
    Bf16,
    /// int8 per row with an f32 scale (absmax / 127, round half to even), activations quantized to
    /// int8 per token (absmax), an exact i32 dot (`KernelKind::MatmulI8`): a quarter of f32's bytes.
    I8,
    /// 4-bit weights in groups of 32, each group with a 6-bit multiplier of the row's f32 scale
    /// (4.25 bits per weight), activations quantized to int8 per token, an exact i32 dot
    /// (`KernelKind::MatmulQ4`): lossy, half of i8's bytes.
    Q4,
}

impl HeadDtype {
    /// Every dtype, in the order the CLI lists them.
    pub const ALL: [HeadDtype; 5] = [
        HeadDtype::Auto,
        HeadDtype::Bf16,
        HeadDtype::F16,
        HeadDtype::I8,
        HeadDtype::Q4,
    ];

    /// The name the CLI spells (`auto`, `bf16`, `f16`, `i8`, `q4`).
    pub fn name(self) -> &'static str {
        match self {
            HeadDtype::Auto => "auto",
            HeadDtype::Bf16 => "bf16",
            HeadDtype::F16 => "f16",
            HeadDtype::I8 => "i8",
            HeadDtype::Q4 => "q4",
        }
    }

    /// The dtype named `s` (as `name` spells it), if any.
    pub fn parse(s: &str) -> Option<HeadDtype> {
        HeadDtype::ALL.into_iter().find(|h| h.name() == s)
    }
}
