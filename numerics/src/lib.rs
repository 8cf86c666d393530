//! The math functions whose bits the reference interpreter and the CPU kernels share.
//!
//! A platform's libm may round `exp` differently from another's (glibc, musl, macOS), and a
//! vectorized kernel cannot call it lane by lane at speed. The functions here are written with
//! IEEE-754 additions, subtractions, multiplications and integer operations only (no fused
//! multiply-add, no libm), so the same input gives the same bits on every platform, and a SIMD
//! version that performs the same operations in the same order (`bitnet_runtime::native`'s vector
//! `exp`) gives them too, lane by lane. Depends on nothing.

pub mod exp;

pub use exp::exp;
