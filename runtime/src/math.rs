//! Math functions generated code calls by symbol, so JIT code, AOT shared libraries and the reference
//! interpreter all use the same implementation (`bitnet_numerics`', the same bits on every
//! platform); `symbols` also lists the micro-kernels of `crate::native`, which generated kernels
//! call the same way.

/// The symbol name of `exp_f64`.
pub const EXP_F64: &str = "bitnet_rt_exp_f64";

/// `e^x` in f64, `bitnet_numerics::exp` (the interpreter's).
pub extern "C" fn exp_f64(x: f64) -> f64 {
    bitnet_numerics::exp(x)
}

/// Every runtime symbol (math functions and micro-kernels) with its address, for registering with
/// a JIT or a dynamic loader.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        (EXP_F64, exp_f64 as *const u8),
        (
            crate::native::TERNARY_MATMUL,
            crate::native::ternary_matmul as *const u8,
        ),
        (
            crate::native::MATMUL_NT_HALF,
            crate::native::matmul_nt_half as *const u8,
        ),
        (
            crate::native::MATMUL_I8,
            crate::native::matmul_i8 as *const u8,
        ),
        (
            crate::native::ATTENTION,
            crate::native::attention as *const u8,
        ),
        (
            crate::native::MATMUL_Q4,
            crate::native::matmul_q4 as *const u8,
        ),
    ]
}

/// For a micro-kernel symbol, its number of static parameters (its signature is the kernel ABI
/// followed by that many i64); `None` for a math function (`f64 → f64`).
pub fn micro_kernel_params(symbol: &str) -> Option<usize> {
    match symbol {
        crate::native::TERNARY_MATMUL | crate::native::MATMUL_NT_HALF => Some(3),
        crate::native::MATMUL_I8 | crate::native::MATMUL_Q4 => Some(2),
        crate::native::ATTENTION => Some(5),
        _ => None,
    }
}
