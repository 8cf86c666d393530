//! The Intel AMX driver shared by the micro-kernels that multiply int8 activations by 8-bit
//! weights with exact i32 sums (`TDPBSUD`: A signed, B unsigned): the ternary matmul (codes t + 1)
//! and the int8 lm_head (bytes q + 128). A kernel gives its weights as a `TileSource`: how to write
//! 16 rows × 64 elements as a B tile, and how to store a row of sums; the driver does the rest.
//!
//! One `TDPBSUD` adds, for 16 tokens × 16 rows, the products of 64 elements: `C[t][n] += Σ_k
//! A[t][k] · B[k / 4][4n + k % 4]`, A the activations (loaded straight from `xq` with a stride of K
//! bytes, one tile row per token) and B the weights of 16 rows in the "VNNI" layout (row `g` of B
//! holds, for each of the 16 rows n, elements 4g..4g + 3), written by the source into a 1 KiB stack
//! buffer that the tile is loaded from.
//!
//! Loop order: row tiles of about `TILE_BYTES` of weights; in each, tokens in tiles of 16 taken one
//! or two at a time (the A and sum tiles have as many rows as the token tile has tokens): two token
//! tiles share each B tile, so the source's work is done once per 32 tokens. Rows go in groups of
//! blocks of 16 (four with one token tile, two with two) whose sums stay in tiles `tmm2..tmm5`
//! across the whole K, while one A tile per token tile and 64 elements serves the group. Rows past
//! the end of the call are zero weights whose sums are not stored; a K that is not a multiple of 64
//! takes its last A tiles from zero-padded copies (zero activations meet whatever the source writes
//! past K). Tile registers are configured at the start of a call and released at its end, so
//! nothing of the AMX state outlives a call.
//!
//! Linux gives a process the AMX tile data state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`); `available` asks once, and answers false when the CPU, the OS or the
//! request says no.

use std::arch::asm;
use std::arch::x86_64::*;

/// Elements per block (one A tile row's 64 bytes).
pub(super) const BLOCK: usize = 64;
/// Weight bytes per row tile.
const TILE_BYTES: usize = 256 * 1024;
/// Sum tiles (`tmm2..tmm5`): blocks of 16 rows × token tiles live at once.
const SUM_TILES: usize = 4;
/// Blocks ahead of the one in use whose weights a group prefetches (every fourth block).
const PREFETCH_BLOCKS: usize = 8;

/// A kernel call, as the driver needs it: its activations, rows and weights.
pub(super) trait TileSource {
    /// The call's activations.
    fn activations(&self) -> Activations;
    /// The rows the call computes.
    fn rows(&self) -> std::ops::Range<usize>;
    /// The weights' first byte.
    fn weights(&self) -> *const u8;
    /// Bytes per row of weights.
    fn row_bytes(&self) -> usize;
    /// Bytes per 64-element block of a row.
    fn block_bytes(&self) -> usize;
    /// Writes block `b` of rows `first..first + valid` (`valid` ≤ 16) into `out` as a B tile;
    /// rows from `valid` on as zeros.
    ///
    /// # Safety
    /// The rows are within the weights; AVX-512 F and BW are available.
    unsafe fn tile(&self, first: usize, valid: usize, b: usize, out: &mut TileBytes);
    /// Writes the outputs of token `t`, rows `first..first + valid`, from the sums `acc[..valid]`
    /// (`acc` has 16) and the token's activation sum `xsum`.
    ///
    /// # Safety
    /// Token `t` and the rows are within the call; AVX-512 F and BW are available.
    unsafe fn store(&self, t: usize, first: usize, valid: usize, acc: &[i32], xsum: i32);
}

/// The activations of a call: `t` tokens of `k` int8 at `xq`.
pub(super) struct Activations {
    pub(super) xq: *const i8,
    pub(super) k: usize,
    pub(super) t: usize,
}

impl Activations {
    /// Σ xq[t, ..K].
    ///
    /// # Safety
    /// `t` is below T.
    unsafe fn sum(&self, t: usize) -> i32 {
        // SAFETY: row t of `xq` has K bytes.
        let x = unsafe { std::slice::from_raw_parts(self.xq.add(t * self.k), self.k) };
        x.iter().map(|&v| i32::from(v)).sum()
    }
}

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

/// What a pass over a row tile takes at once: `tiles` (1 or 2) token tiles of `rows[i]` tokens.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Shape {
    tiles: usize,
    rows: [usize; 2],
}

impl Shape {
    /// The next pass for `left` (≥ 1) tokens.
    fn for_tokens(left: usize) -> Self {
        if left > 16 {
            Shape {
                tiles: 2,
                rows: [16, (left - 16).min(16)],
            }
        } else {
            Shape {
                tiles: 1,
                rows: [left, 0],
            }
        }
    }

    /// Blocks of 16 rows per group (their sums fill the sum tiles).
    fn blocks(self) -> usize {
        SUM_TILES / self.tiles
    }
}

/// A tile configuration (palette 1): tmm0 and tmm6 the activations of token tiles 0 and 1 (tokens
/// × 64 bytes), tmm1 codes (16 × 64 bytes), tmm2 + i·blocks + b the sums of token tile i and row
/// block b (tokens × 16 i32).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new(shape: Shape) -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut set = |tile: usize, rows: usize| {
            c[16 + 2 * tile] = 64;
            c[48 + tile] = rows as u8;
        };
        set(0, shape.rows[0]);
        set(1, 16);
        let per = shape.blocks();
        for i in 0..shape.tiles {
            for b in 0..per {
                set(2 + i * per + b, shape.rows[i]);
            }
        }
        if shape.tiles == 2 {
            set(6, shape.rows[1]);
        }
        TileConfig(c)
    }
}

/// 1 KiB aligned to a cache line: one tile's bytes.
#[repr(C, align(64))]
pub(super) struct TileBytes(pub(super) [u8; 1024]);

impl TileBytes {
    pub(super) fn zeroed() -> Self {
        TileBytes([0; 1024])
    }
}

/// Loads the B tile (tmm1) from `b` (64-byte rows).
///
/// # Safety
/// AMX is configured; `b` holds 1 KiB.
#[inline]
unsafe fn load_codes(b: *const u8) {
    // SAFETY: the caller's.
    unsafe {
        asm!(
            "tileloadd tmm1, [{p} + {s}*1]",
            p = in(reg) b,
            s = in(reg) 64usize,
            options(nostack, readonly, preserves_flags)
        )
    };
}

/// Loads the A tile of token tile `second` (tmm6 if true, else tmm0) from `x` with row stride
/// `stride`.
///
/// # Safety
/// AMX is configured; the tile's rows of 64 bytes at `x` are readable.
#[inline]
unsafe fn load_activations(second: bool, x: *const i8, stride: usize) {
    // SAFETY: the caller's.
    unsafe {
        if second {
            asm!("tileloadd tmm6, [{p} + {s}*1]", p = in(reg) x, s = in(reg) stride, options(nostack, readonly, preserves_flags));
        } else {
            asm!("tileloadd tmm0, [{p} + {s}*1]", p = in(reg) x, s = in(reg) stride, options(nostack, readonly, preserves_flags));
        }
    }
}

/// Sum tile `2 + acc` += A (tmm6 if `second`, else tmm0) × B (tmm1).
///
/// # Safety
/// AMX is configured for the tiles named.
#[inline]
unsafe fn multiply_add(acc: usize, second: bool) {
    // SAFETY: the caller's.
    unsafe {
        match (acc, second) {
            (0, false) => asm!(
                "tdpbsud tmm2, tmm0, tmm1",
                options(nostack, nomem, preserves_flags)
            ),
            (1, false) => asm!(
                "tdpbsud tmm3, tmm0, tmm1",
                options(nostack, nomem, preserves_flags)
            ),
            (2, false) => asm!(
                "tdpbsud tmm4, tmm0, tmm1",
                options(nostack, nomem, preserves_flags)
            ),
            (_, false) => asm!(
                "tdpbsud tmm5, tmm0, tmm1",
                options(nostack, nomem, preserves_flags)
            ),
            (0, true) => asm!(
                "tdpbsud tmm2, tmm6, tmm1",
                options(nostack, nomem, preserves_flags)
            ),
            (1, true) => asm!(
                "tdpbsud tmm3, tmm6, tmm1",
                options(nostack, nomem, preserves_flags)
            ),
            (2, true) => asm!(
                "tdpbsud tmm4, tmm6, tmm1",
                options(nostack, nomem, preserves_flags)
            ),
            (_, true) => asm!(
                "tdpbsud tmm5, tmm6, tmm1",
                options(nostack, nomem, preserves_flags)
            ),
        }
    }
}

/// Stores sum tile `2 + acc` to `p` (64-byte rows).
///
/// # Safety
/// AMX is configured; `p` has room for the tile's rows.
#[inline]
unsafe fn store_sums(acc: usize, p: *mut i32) {
    // SAFETY: the caller's.
    unsafe {
        match acc {
            0 => {
                asm!("tilestored [{p} + {s}*1], tmm2", p = in(reg) p, s = in(reg) 64usize, options(nostack, preserves_flags))
            }
            1 => {
                asm!("tilestored [{p} + {s}*1], tmm3", p = in(reg) p, s = in(reg) 64usize, options(nostack, preserves_flags))
            }
            2 => {
                asm!("tilestored [{p} + {s}*1], tmm4", p = in(reg) p, s = in(reg) 64usize, options(nostack, preserves_flags))
            }
            _ => {
                asm!("tilestored [{p} + {s}*1], tmm5", p = in(reg) p, s = in(reg) 64usize, options(nostack, preserves_flags))
            }
        }
    }
}

/// Runs the call `source` (see the module doc): its activations times its rows of weights.
///
/// # Safety
/// `available()` is true; `source` describes valid buffers of a call.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn run<S: TileSource>(source: &S) {
    let x = &source.activations();
    let rows = source.rows();
    let row_bytes = source.row_bytes();
    let tile_rows = (TILE_BYTES / row_bytes.max(1)).max(16) / 16 * 16;
    let mut configured = None;
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + tile_rows).min(rows.end);
        let mut t0 = 0;
        while t0 < x.t {
            let shape = Shape::for_tokens(x.t - t0);
            if configured != Some(shape) {
                let config = TileConfig::new(shape);
                // SAFETY: a valid palette-1 configuration; AMX is available.
                unsafe {
                    asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly, preserves_flags))
                };
                configured = Some(shape);
            }
            // SAFETY: the shape's tokens from t0 are within T; rows start..end within the call.
            unsafe { pass(source, x, t0, shape, start..end) };
            t0 += shape.rows[0] + shape.rows[1];
        }
        start = end;
    }
    // SAFETY: AMX is available; releasing returns the tile state to its initial, unused form.
    unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
}

/// The tokens of `shape` from `t0` (the tiles configured for it) over `rows`.
///
/// # Safety
/// As `run`; the tile configuration is `shape`'s.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pass<S: TileSource>(
    source: &S,
    x: &Activations,
    t0: usize,
    shape: Shape,
    rows: std::ops::Range<usize>,
) {
    let k = x.k;
    let blocks = k.div_ceil(BLOCK);
    let full = k / BLOCK;
    let row_bytes = source.row_bytes();
    let block_bytes = source.block_bytes();
    let per = shape.blocks();
    let tokens = shape.rows[0] + shape.rows[1];
    // SAFETY: the tokens are below T.
    let sums: [i32; 32] = std::array::from_fn(|i| {
        if i < tokens {
            unsafe { x.sum(t0 + i) }
        } else {
            0
        }
    });
    let mut tails = [TileBytes::zeroed(), TileBytes::zeroed()];
    if full < blocks {
        for i in 0..tokens {
            // SAFETY: the last k − 64·full bytes of token t0 + i's row, into row i % 16 of the
            // tail of its token tile.
            unsafe {
                let src = x.xq.add((t0 + i) * k + full * BLOCK).cast::<u8>();
                let dst = tails[i / 16].0.as_mut_ptr().add(i % 16 * 64);
                std::ptr::copy_nonoverlapping(src, dst, k - full * BLOCK);
            }
        }
    }
    // SAFETY: the first token's row of each token tile (the second only read when it exists).
    let tokens_x = [unsafe { x.xq.add(t0 * k) }, unsafe {
        x.xq.add((t0 + 16).min(x.t) * k)
    }];
    let mut tiles: [[TileBytes; SUM_TILES]; 2] =
        std::array::from_fn(|_| std::array::from_fn(|_| TileBytes::zeroed()));
    let mut out = [[0i32; 256]; SUM_TILES];
    let mut row = rows.start;
    while row < rows.end {
        let group = (rows.end - row).div_ceil(16).min(per);
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
            // SAFETY: block b of the group's rows and of the tokens' rows (or the padded tails).
            unsafe {
                for (i, (&xi, tail)) in tokens_x.iter().zip(&tails).enumerate().take(shape.tiles) {
                    if b < full {
                        load_activations(i == 1, xi.add(b * BLOCK), k);
                    } else {
                        load_activations(i == 1, tail.0.as_ptr().cast(), 64);
                    }
                }
                if b % 4 == 0 && b + PREFETCH_BLOCKS < blocks {
                    let ahead = source
                        .weights()
                        .add(row * row_bytes + (b + PREFETCH_BLOCKS) * block_bytes);
                    for r in 0..group_rows {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.add(r * row_bytes).cast());
                    }
                }
                // Two sets of buffers: a block's tiles are written while the previous block's
                // tiles may still be loading.
                let set = &mut tiles[b % 2];
                for (j, buffer) in set.iter_mut().enumerate().take(group) {
                    let first = row + 16 * j;
                    let valid = (rows.end - first).min(16);
                    source.tile(first, valid, b, buffer);
                }
                for (j, buffer) in set.iter().enumerate().take(group) {
                    load_codes(buffer.0.as_ptr());
                    for i in 0..shape.tiles {
                        multiply_add(i * per + j, i == 1);
                    }
                }
            }
        }
        for i in 0..shape.tiles {
            for j in 0..group {
                // SAFETY: 1 KiB buffers for tiles of at most 16 rows of 64 bytes.
                unsafe { store_sums(i * per + j, out[i * per + j].as_mut_ptr()) };
            }
        }
        for i in 0..shape.tiles {
            for j in 0..group {
                let first = row + 16 * j;
                let valid = (rows.end - first).min(16);
                for t in 0..shape.rows[i] {
                    let token = 16 * i + t;
                    // SAFETY: row t of the stored tile; token t0 + token and rows first..first +
                    // valid are within the call.
                    unsafe {
                        source.store(
                            t0 + token,
                            first,
                            valid,
                            &out[i * per + j][t * 16..],
                            sums[token],
                        )
                    };
                }
            }
        }
        row += group_rows;
    }
}
