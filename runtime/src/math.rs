//! Math functions generated code calls by symbol, so JIT code, AOT shared libraries and the reference
//! interpreter all use the same implementation (Rust's, on this platform).

/// The symbol name of `exp_f64`.
pub const EXP_F64: &str = "bitnet_rt_exp_f64";

/// `e^x` in f64, as `f64::exp`.
pub extern "C" fn exp_f64(x: f64) -> f64 {
    x.exp()
}

/// Every math symbol with its address, for registering with a JIT or a dynamic loader.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![(EXP_F64, exp_f64 as *const u8)]
}
