//! The ternary matmul micro-kernel on Intel AMX (`TDPBSUD` on tile registers), for calls of
//! several tokens: same contract and same results as `ternary_matmul` (exact integer sums, then the
//! same `store`), chosen by the parent's `run` when the CPU and the OS allow AMX.
//!
//! One `TDPBSUD` adds, for 16 tokens × 16 rows, the products of 64 elements: `C[t][n] += Σ_k
//! A[t][k] · B[k / 4][4n + k % 4]` with A signed (the int8 activations, loaded straight from `xq`
//! with a stride of K bytes, one tile row per token) and B unsigned (the codes t + 1 of 16 rows, in
//! the "VNNI" layout: row `g` of B holds, for each of the 16 rows n, the codes of elements
//! 4g..4g + 3). The packed layout (`backends::kernel::layout`: element j of a 64-element block in
//! byte j % 16 at bits 6 − 2·(j / 16)) puts elements 16q + 4d .. 16q + 4d + 3 in dword d of the
//! block at shift 6 − 2q, so B row 4q + d is, for the 16 rows, dword d of each row's block, shifted
//! and masked: four loads of 16 bytes per register, a dword transpose by two `vpermt2d` and a blend,
//! then four shift-and-mask per dword (`unpack`). The codes go to a 1 KiB stack buffer that the B
//! tile is loaded from. `acc = C − Σ x` as the AVX-512 kernel.
//!
//! Loop order: row tiles of about `TILE_BYTES` of weights; in each, tokens in tiles of 16 (the A
//! and C tiles have as many rows as the tile has tokens); in each, rows in groups of
//! `GROUP_BLOCKS` blocks of 16, whose sums stay in tiles `tmm2..` across the whole K while one A
//! tile per 64 elements serves the group. Rows past the end of the call are zero codes whose sums
//! are not stored; a K that is not a multiple of 64 takes its last A tile from a zero-padded copy.
//! Tile registers are configured at the start of a call and released at its end, so nothing of the
//! AMX state outlives a call.
//!
//! Linux gives a process the AMX tile data state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`); `available` asks once, and answers false when the CPU, the OS or the
//! request says no.

use super::Call;
use std::arch::asm;
use std::arch::x86_64::*;

/// Elements per packed block (one A tile row's 64 bytes).
const BLOCK: usize = 64;
/// Weight bytes per row tile.
const TILE_BYTES: usize = 256 * 1024;
/// Blocks of 16 rows whose sums are live at once (tiles `tmm2..tmm2 + GROUP_BLOCKS`).
const GROUP_BLOCKS: usize = 4;
// `token_tile` names the sum tiles tmm2..tmm5 one by one.
const _: () = assert!(GROUP_BLOCKS == 4);
/// Blocks ahead of the one in use whose weights a group prefetches (every fourth block: one line).
const PREFETCH_BLOCKS: usize = 8;

/// Whether this process can run the AMX kernel: the CPU has AMX-TILE, AMX-INT8, AVX-512F and
/// AVX-512BW, the OS enabled the tile state (XCR0 bits 17 and 18), and Linux granted this process
/// the tile data (asked once).
pub(super) fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("xsave"))
        {
            return false;
        }
        // CPUID leaf 7, sub-leaf 0: EDX bit 24 AMX-TILE, bit 25 AMX-INT8.
        let leaf7 = __cpuid_count(7, 0);
        if leaf7.edx & (3 << 24) != 3 << 24 {
            return false;
        }
        // SAFETY: the CPU has XSAVE (checked above), so XGETBV with ECX = 0 is defined.
        let xcr0 = unsafe { xcr0() };
        if xcr0 & (3 << 17) != 3 << 17 {
            return false;
        }
        request_tile_data()
    })
}

/// XCR0, the OS-enabled state components.
///
/// # Safety
/// The CPU has XSAVE.
#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    // SAFETY: the caller's CPU has XSAVE.
    unsafe { _xgetbv(0) }
}

/// Asks Linux for the AMX tile data state (true when granted).
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    /// `SYS_arch_prctl`, `ARCH_REQ_XCOMP_PERM` and `XFEATURE_XTILEDATA` from the kernel's uapi
    /// headers (x86-64).
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with these arguments only changes this process's
    // permitted extended state; `syscall` clobbers rcx and r11, declared here.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        )
    };
    ret == 0
}

/// Other systems: not used (their way of granting the tile state is not implemented).
#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// A tile configuration (palette 1): tmm0 activations (`tokens` × 64 bytes), tmm1 codes (16 × 64
/// bytes), tmm2.. sums (`tokens` × 16 i32).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(tokens: u8) -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for tile in 0..2 + GROUP_BLOCKS {
            c[16 + 2 * tile] = 64;
            c[48 + tile] = if tile == 1 { 16 } else { tokens };
        }
        TileConfig(c)
    }
}

/// 1 KiB aligned to a cache line: one tile's bytes.
#[repr(C, align(64))]
struct TileBytes([u8; 1024]);

impl TileBytes {
    fn zeroed() -> Self {
        TileBytes([0; 1024])
    }
}

/// Writes block `b` of the `valid` (≤ 16) rows from `w` (row stride `row_bytes`) into `out` as a
/// B tile (see the module doc); rows from `valid` on are zero codes.
///
/// # Safety
/// Block `b` of each of the `valid` rows is within the weights.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn unpack(w: *const u8, row_bytes: usize, valid: usize, b: usize, out: &mut TileBytes) {
    // z[i], 128-bit lane l: the block of row 4i + l.
    let mut z = [_mm512_setzero_si512(); 4];
    for n in 0..valid {
        // SAFETY: block b of row n.
        let block = unsafe { _mm_loadu_si128(w.add(n * row_bytes + b * 16).cast()) };
        z[n / 4] = _mm512_mask_broadcast_i32x4(z[n / 4], 0xF << (4 * (n % 4)), block);
    }
    let three = _mm512_set1_epi8(3);
    for d in 0..4 {
        // Position n of (z0 | z1), n < 8, and of (z2 | z3), n ≥ 8: dword d of row n's block.
        let idx = _mm512_set_epi32(
            28 + d,
            24 + d,
            20 + d,
            16 + d,
            12 + d,
            8 + d,
            4 + d,
            d,
            28 + d,
            24 + d,
            20 + d,
            16 + d,
            12 + d,
            8 + d,
            4 + d,
            d,
        );
        let low = _mm512_permutex2var_epi32(z[0], idx, z[1]);
        let high = _mm512_permutex2var_epi32(z[2], idx, z[3]);
        let dwords = _mm512_mask_blend_epi32(0xFF00, low, high);
        // B row 4q + d: the codes at shift 6 − 2q (16-bit shifts; the mask drops what crosses).
        let rows = [
            _mm512_srli_epi16::<6>(dwords),
            _mm512_srli_epi16::<4>(dwords),
            _mm512_srli_epi16::<2>(dwords),
            dwords,
        ];
        for (q, v) in rows.into_iter().enumerate() {
            let at = (4 * q + d as usize) * 64;
            // SAFETY: 64 bytes at `at` < 1024 of an aligned buffer.
            unsafe {
                _mm512_store_si512(
                    out.0.as_mut_ptr().add(at).cast(),
                    _mm512_and_si512(v, three),
                )
            };
        }
    }
}

/// Loads the B tile at `$b` (64-byte rows) and adds A × B into sum tile `$acc`.
macro_rules! multiply_add {
    ($acc:literal, $b:expr) => {
        asm!(
            "tileloadd tmm1, [{p} + {s}*1]",
            concat!("tdpbsud tmm", $acc, ", tmm0, tmm1"),
            p = in(reg) $b,
            s = in(reg) 64usize,
            options(nostack, readonly, preserves_flags)
        )
    };
}

/// Stores sum tile `$acc` to `$p` (64-byte rows).
macro_rules! store_sums {
    ($acc:literal, $p:expr) => {
        asm!(
            concat!("tilestored [{p} + {s}*1], tmm", $acc),
            p = in(reg) $p,
            s = in(reg) 64usize,
            options(nostack, preserves_flags)
        )
    };
}

/// Runs `call` (see the module doc).
///
/// # Safety
/// As `super::run`, and `available()` is true.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn run(call: &Call) {
    let k = call.k;
    let blocks = k.div_ceil(BLOCK);
    let full = k / BLOCK;
    let row_bytes = call.row_bytes();
    let tile_rows = (TILE_BYTES / row_bytes.max(1)).max(16) / 16 * 16;
    let mut configured = 0;
    let mut start = call.rows.start;
    while start < call.rows.end {
        let end = (start + tile_rows).min(call.rows.end);
        let mut t0 = 0;
        while t0 < call.t {
            let tokens = (call.t - t0).min(16);
            if tokens != configured {
                let config = TileConfig::new(tokens as u8);
                // SAFETY: a valid palette-1 configuration; AMX is available.
                unsafe {
                    asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly, preserves_flags))
                };
                configured = tokens;
            }
            // SAFETY: tokens t0..t0 + tokens are within T; rows start..end within the call.
            unsafe { token_tile(call, t0, tokens, start..end, blocks, full) };
            t0 += tokens;
        }
        start = end;
    }
    // SAFETY: AMX is available; releasing returns the tile state to its initial, unused form.
    unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
}

/// Tokens `t0..t0 + tokens` (≤ 16, the tiles configured for them) over `rows`.
///
/// # Safety
/// As `run`; the tile configuration has `tokens` rows for A and the sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn token_tile(
    call: &Call,
    t0: usize,
    tokens: usize,
    rows: std::ops::Range<usize>,
    blocks: usize,
    full: usize,
) {
    let k = call.k;
    let row_bytes = call.row_bytes();
    // SAFETY: the tokens are below T.
    let sums: [i32; 16] = std::array::from_fn(|i| {
        if i < tokens {
            unsafe { call.xsum(t0 + i) }
        } else {
            0
        }
    });
    let mut tail = TileBytes::zeroed();
    if full < blocks {
        for i in 0..tokens {
            // SAFETY: the last k − 64·full bytes of token t0 + i's row, into row i of `tail`.
            unsafe {
                let src = call.xq.add((t0 + i) * k + full * BLOCK).cast::<u8>();
                std::ptr::copy_nonoverlapping(
                    src,
                    tail.0.as_mut_ptr().add(i * 64),
                    k - full * BLOCK,
                );
            }
        }
    }
    // SAFETY: token t0's row.
    let x = unsafe { call.xq.add(t0 * k) };
    let mut codes: [[TileBytes; GROUP_BLOCKS]; 2] =
        std::array::from_fn(|_| std::array::from_fn(|_| TileBytes::zeroed()));
    let mut out = [[0i32; 256]; GROUP_BLOCKS];
    let mut row = rows.start;
    while row < rows.end {
        let group = (rows.end - row).div_ceil(16).min(GROUP_BLOCKS);
        let group_rows = (rows.end - row).min(16 * group);
        // SAFETY: AMX is available; the sum tiles are configured.
        unsafe {
            asm!(
                "tilezero tmm2",
                "tilezero tmm3",
                "tilezero tmm4",
                "tilezero tmm5",
                options(nostack, nomem, preserves_flags)
            )
        };
        for b in 0..blocks {
            // SAFETY: block b of the group's rows and of the tokens' rows (or the padded tail).
            unsafe {
                if b < full {
                    asm!(
                        "tileloadd tmm0, [{p} + {s}*1]",
                        p = in(reg) x.add(b * BLOCK),
                        s = in(reg) k,
                        options(nostack, readonly, preserves_flags)
                    );
                } else {
                    asm!(
                        "tileloadd tmm0, [{p} + {s}*1]",
                        p = in(reg) tail.0.as_ptr(),
                        s = in(reg) 64usize,
                        options(nostack, readonly, preserves_flags)
                    );
                }
                if b % 4 == 0 && b + PREFETCH_BLOCKS < blocks {
                    let ahead = call.w.add(row * row_bytes + (b + PREFETCH_BLOCKS) * 16);
                    for r in 0..group_rows {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.add(r * row_bytes).cast());
                    }
                }
                // Two sets of buffers: a block's codes are written while the previous block's
                // tiles may still be loading.
                let set = &mut codes[b % 2];
                for (i, buffer) in set.iter_mut().enumerate().take(group) {
                    let first = row + 16 * i;
                    let valid = (rows.end - first).min(16);
                    unpack(call.w.add(first * row_bytes), row_bytes, valid, b, buffer);
                }
                for (i, buffer) in set.iter().enumerate().take(group) {
                    let p = buffer.0.as_ptr();
                    match i {
                        0 => multiply_add!("2", p),
                        1 => multiply_add!("3", p),
                        2 => multiply_add!("4", p),
                        _ => multiply_add!("5", p),
                    }
                }
            }
        }
        // SAFETY: 1 KiB buffers for tiles of at most 16 rows of 64 bytes.
        unsafe {
            store_sums!("2", out[0].as_mut_ptr());
            if group > 1 {
                store_sums!("3", out[1].as_mut_ptr());
            }
            if group > 2 {
                store_sums!("4", out[2].as_mut_ptr());
            }
            if group > 3 {
                store_sums!("5", out[3].as_mut_ptr());
            }
        }
        for (i, sums_of_block) in out.iter().enumerate().take(group) {
            let first = row + 16 * i;
            for n in 0..(rows.end - first).min(16) {
                for (t, sum) in sums.iter().enumerate().take(tokens) {
                    let acc = sums_of_block[t * 16 + n].wrapping_sub(*sum);
                    // SAFETY: token t0 + t and row first + n are within the call.
                    unsafe { call.store(t0 + t, first + n, acc) };
                }
            }
        }
        row += group_rows;
    }
}
