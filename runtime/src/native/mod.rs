//! Micro-kernels written in Rust (`std::arch`), which generated kernels call by symbol like the
//! math functions (`crate::math::symbols`): the JIT binds the symbol to the function, an AOT
//! artifact's library calls it through a slot the loader fills. Each kernel checks the CPU itself
//! and falls back to a portable version with the same results.
//!
//! The calling convention of a micro-kernel symbol: the kernel ABI (`crate::program::KernelFn`:
//! buffers, scalars `[T, pos]`, row range) followed by the kernel's static parameters as i64.

//!
//! `BITNETC_ISA` caps the instruction sets the micro-kernels may use, so that every variant can be
//! run (and compared) on one machine. On x86-64: `amx` (the default: everything the CPU has),
//! `avx512` (no AMX), `avxvnni` (256-bit AVX2 with AVX-VNNI), `avx2`; on AArch64: `dotprod`
//! (NEON with the dot product), `neon`; everywhere `portable` (no SIMD). Each variant gives the
//! same results bit for bit. A kernel without a variant at the cap runs the best one below it.

pub mod attention;
mod exp;
mod matmul_half;
mod matmul_i8;
pub mod matmul_q4;
mod ternary_matmul;
#[cfg(test)]
mod test_support;
#[cfg(target_arch = "x86_64")]
mod tiles;

/// Instruction set families of the micro-kernels, from the least to the most capable (the AArch64
/// families sort below the x86-64 ones; a cap of one architecture leaves the other's uncapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust, no SIMD.
    Portable,
    /// AArch64 NEON (every AArch64 CPU).
    Neon,
    /// AArch64 NEON with the dot product instructions (`sdot`).
    Dotprod,
    /// x86-64 AVX2 (x86-64-v3).
    Avx2,
    /// AVX2 with AVX-VNNI (256-bit `vpdpbusd`).
    AvxVnni,
    /// AVX-512 (F, BW, VNNI; F16C for the f16 matmul).
    Avx512,
    /// AVX-512 and AMX (AMX-TILE, AMX-INT8).
    Amx,
}

/// Each family's name in `BITNETC_ISA`, in the order of `Isa`.
pub const ISA_NAMES: &[(&str, Isa)] = &[
    ("portable", Isa::Portable),
    ("neon", Isa::Neon),
    ("dotprod", Isa::Dotprod),
    ("avx2", Isa::Avx2),
    ("avxvnni", Isa::AvxVnni),
    ("avx512", Isa::Avx512),
    ("amx", Isa::Amx),
];

impl Isa {
    /// The family named `name` (see `ISA_NAMES`).
    pub fn parse(name: &str) -> Option<Isa> {
        ISA_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, isa)| isa)
    }
}

/// The environment variable that caps the micro-kernels' instruction sets.
pub const ISA_ENV: &str = "BITNETC_ISA";

/// The cap `BITNETC_ISA` sets (read once; unset: `Isa::Amx`). An unknown value is reported once
/// on standard error and leaves no cap.
pub fn isa_cap() -> Isa {
    static CAP: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| match std::env::var(ISA_ENV) {
        Err(_) => Isa::Amx,
        Ok(value) => Isa::parse(&value).unwrap_or_else(|| {
            eprintln!(
                "warning: {ISA_ENV}={value:?} is not one of {}; using every instruction set the CPU has",
                ISA_NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            );
            Isa::Amx
        }),
    })
}

/// The last `k mod N` of the `k` elements at `p`, zero-padded to `N` (all zeros when `N` divides
/// `k`): the partial last block or step of a row, which the SIMD kernels load whole and whose
/// padding multiplies zeros.
///
/// # Safety
/// `p` points to `k` readable elements.
pub(crate) unsafe fn padded_tail<T: Copy + Default, const N: usize>(
    p: *const T,
    k: usize,
) -> [T; N] {
    let mut t = [T::default(); N];
    let full = k / N * N;
    // SAFETY: elements full..k of the row, fewer than N.
    unsafe { std::ptr::copy_nonoverlapping(p.add(full), t.as_mut_ptr(), k - full) };
    t
}

/// Whether kernels of family `isa` may run under the cap.
fn allowed(isa: Isa) -> bool {
    isa <= isa_cap()
}

/// The symbol of the ternary matmul micro-kernel.
pub const TERNARY_MATMUL: &str = "bitnet_rt_ternary_matmul";

/// `KernelKind::TernaryMatmul` with `k`, `n` and `residual` (0 or 1) as arguments (see the module
/// doc and `ternary_matmul`).
///
/// # Safety
/// `bufs` and `scalars` are a kernel call's (the generated trampoline passes its own), the buffers
/// those of a ternary matmul of these shapes, and `row_begin..row_end` within `0..n`.
pub unsafe extern "C" fn ternary_matmul(
    bufs: *const *mut u8,
    scalars: *const i64,
    row_begin: i64,
    row_end: i64,
    k: i64,
    n: i64,
    residual: i64,
) {
    // SAFETY: the caller's table has the kernel's buffers (5, or 6 with a residual) and [T, pos].
    unsafe {
        let buf = |i: usize| *bufs.add(i);
        let with_residual = residual != 0;
        let call = ternary_matmul::Call {
            xq: buf(0).cast_const().cast(),
            xs: buf(1).cast_const().cast(),
            w: buf(2).cast_const(),
            ws: *buf(3).cast_const().cast::<f32>(),
            residual: if with_residual {
                buf(4).cast_const().cast()
            } else {
                std::ptr::null()
            },
            out: buf(if with_residual { 5 } else { 4 }).cast(),
            k: k as usize,
            n: n as usize,
            t: *scalars as usize,
            rows: row_begin as usize..row_end as usize,
        };
        ternary_matmul::run(&call);
    }
}

/// The symbol of the 16-bit float matmul micro-kernel.
pub const MATMUL_NT_HALF: &str = "bitnet_rt_matmul_nt_half";

/// `KernelKind::MatmulNtHalf` with `k`, `n` and the format (0: bf16, 1: f16) as arguments (see
/// the module doc and `matmul_half`).
///
/// # Safety
/// `bufs` and `scalars` are a kernel call's, the buffers those of a 16-bit float matmul of these
/// shapes and format, and `row_begin..row_end` within `0..n`.
pub unsafe extern "C" fn matmul_nt_half(
    bufs: *const *mut u8,
    scalars: *const i64,
    row_begin: i64,
    row_end: i64,
    k: i64,
    n: i64,
    f16: i64,
) {
    // SAFETY: the caller's table has the kernel's three buffers and [T, pos].
    unsafe {
        let call = matmul_half::Call {
            x: (*bufs).cast_const().cast(),
            w: (*bufs.add(1)).cast_const().cast(),
            out: (*bufs.add(2)).cast(),
            k: k as usize,
            n: n as usize,
            t: *scalars as usize,
            f16: f16 != 0,
            rows: row_begin as usize..row_end as usize,
        };
        matmul_half::run(&call);
    }
}

/// The symbol of the int8 matmul micro-kernel.
pub const MATMUL_I8: &str = "bitnet_rt_matmul_i8";

/// `KernelKind::MatmulI8` with `k` and `n` as arguments (see the module doc and `matmul_i8`).
///
/// # Safety
/// `bufs` and `scalars` are a kernel call's, the buffers those of an int8 matmul of these shapes,
/// and `row_begin..row_end` within `0..n`.
pub unsafe extern "C" fn matmul_i8(
    bufs: *const *mut u8,
    scalars: *const i64,
    row_begin: i64,
    row_end: i64,
    k: i64,
    n: i64,
) {
    // SAFETY: the caller's table has the kernel's five buffers and [T, pos].
    unsafe {
        let buf = |i: usize| *bufs.add(i);
        let call = matmul_i8::Call {
            xq: buf(0).cast_const().cast(),
            xs: buf(1).cast_const().cast(),
            w: buf(2).cast_const(),
            ws: buf(3).cast_const().cast(),
            out: buf(4).cast(),
            k: k as usize,
            n: n as usize,
            t: *scalars as usize,
            rows: row_begin as usize..row_end as usize,
        };
        matmul_i8::run(&call);
    }
}

/// The symbol of the attention micro-kernel.
/// (Named for its layout: an artifact built before the caches were head-major calls
/// `bitnet_rt_attention` with row-major caches, and loading it fails with a clear error naming the
/// symbol instead of running the wrong layout.)
pub const ATTENTION: &str = "bitnet_rt_attention_head_major";

/// `KernelKind::Attention` with `heads`, `kv_heads`, `head_dim`, the cache rows `context` and the
/// scale's f64 bits as arguments, over head-major caches `[kv_heads, context, head_dim]` (see the
/// module doc and `attention`; the builder calls it only when `attention::supports` the shapes).
///
/// # Safety
/// `bufs` and `scalars` are a kernel call's, the buffers those of an attention of these shapes
/// with `pos + T` within the caches, and `row_begin..row_end` within `0..T·heads`.
pub unsafe extern "C" fn attention(
    bufs: *const *mut u8,
    scalars: *const i64,
    row_begin: i64,
    row_end: i64,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    context: i64,
    scale_bits: i64,
) {
    // SAFETY: the caller's table has the kernel's four buffers and [T, pos].
    unsafe {
        let buf = |i: usize| *bufs.add(i);
        let call = attention::Call {
            q: buf(0).cast_const().cast(),
            kc: buf(1).cast_const().cast(),
            vc: buf(2).cast_const().cast(),
            out: buf(3).cast(),
            heads: heads as usize,
            kv_heads: kv_heads as usize,
            d: head_dim as usize,
            row_stride: head_dim as usize,
            head_stride: (context as usize).saturating_mul(head_dim as usize),
            scale: f64::from_bits(scale_bits as u64),
            pos: *scalars.add(1) as usize,
            rows: row_begin as usize..row_end as usize,
        };
        attention::run(&call);
    }
}

/// The symbol of the 4-bit matmul micro-kernel.
pub const MATMUL_Q4: &str = "bitnet_rt_matmul_q4";

/// `KernelKind::MatmulQ4` with `k` and `n` as arguments (see the module doc and `matmul_q4`).
///
/// # Safety
/// `bufs` and `scalars` are a kernel call's, the buffers those of a 4-bit matmul of these shapes,
/// `0 < k ≤ matmul_q4::MAX_K` and `row_begin..row_end` within `0..n`.
pub unsafe extern "C" fn matmul_q4(
    bufs: *const *mut u8,
    scalars: *const i64,
    row_begin: i64,
    row_end: i64,
    k: i64,
    n: i64,
) {
    // SAFETY: the caller's table has the kernel's seven buffers and [T, pos].
    unsafe {
        let buf = |i: usize| *bufs.add(i);
        let call = matmul_q4::Call {
            xq: buf(0).cast_const().cast(),
            xs: buf(1).cast_const().cast(),
            w: buf(2).cast_const(),
            m: buf(3).cast_const(),
            ws: buf(4).cast_const().cast(),
            corr: buf(5).cast_const().cast(),
            out: buf(6).cast(),
            k: k as usize,
            n: n as usize,
            t: *scalars as usize,
            rows: row_begin as usize..row_end as usize,
        };
        matmul_q4::run(&call);
    }
}
