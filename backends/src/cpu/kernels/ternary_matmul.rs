//! The ternary matmul kernel (`KernelKind::TernaryMatmul`) on weights packed in the layout of
//! `crate::kernel::layout` (`PACK_BLOCK` = 64, `PackOrder::I2s`: element j of a block in byte
//! j % 16 at shift 6 − 2·(j / 16), code t + 1).
//!
//! Per output row n and token t: `acc = Σ_k xq[t, k]·(code_k − 1) = Σ_k code_k·xq[t, k] − Σ_k xq[t, k]`,
//! exact in wrapping i32 arithmetic: the true value fits in i32 (K ≤ `MAX_K`), so wrapping
//! intermediate sums do not change it. Per 64-element block one 16-byte load holds the codes;
//! shifting its 16-bit lanes right by 6, 4, 2, 0 and masking the bytes with 3 gives four u8x16 code
//! vectors, for activation bytes 0–15, 16–31, 32–47 and 48–63 of the block, each multiplied with one
//! 16-byte load of activations (`DotStrategy`). With the VNNI dot product the shifts are skipped: the
//! byte is masked with `3 << s` (the code times 2^s, still a valid u8 operand), each quarter
//! accumulates in its own chains, and each quarter's sum is divided by 2^s (an exact arithmetic
//! shift) at the end of the row. `Σ_k xq[t, k]` is the same dot with all codes 1, computed once per
//! token and row tile.
//!
//! K not a multiple of 64: the packed row is padded with code 1 to whole blocks, but the activation
//! row has exactly K bytes. The kernel copies the last K mod 64 activation bytes of each token into a
//! zeroed 64-byte stack buffer and runs the last block on that, so nothing past K is read and the
//! padding multiplies zeros.
//!
//! Loop order: row tiles of about `TILE_BYTES` of weights; in each tile, tokens in groups of `GROUP`
//! (then one at a time), and for each group every row of the tile, so a loaded and decoded weight
//! block serves `GROUP` tokens and the tile stays in cache across the groups. For decode (T = 1) the
//! inner loop is: per block one weight load, four masks, four activation loads and four `vpdpbusd`
//! into eight independent accumulators (two blocks per iteration). Then
//! `y = f32(acc) / xs[t] · ws[0]` (+ `residual[t, n]`), in that order, as the reference.
//!
//! Each row first touches one byte per cache line of the weight row `TOUCH_AHEAD` rows on (plain
//! loads whose values are unused, kept because Cranelift must assume they may trap), so the row
//! is on its way from memory while this one is computed.
//!
//! Buffers: `xq`, `xs`, `w` and `ws` must not be written by the launch (the loads of `xq` and `w`
//! are marked read-only and movable); `residual` may be the same buffer as `out` (each element is
//! read before it is written).

use crate::BackendError;
use crate::cpu::PACK_BLOCK;
use crate::cpu::emit::loops::{emit_for_signed, emit_static_loop, emit_while, var};
use crate::cpu::emit::simd::{
    dot_i8, hsum_i32x4, splat_i8, widen_pairs_i16, zero_i16x8, zero_i32x4,
};
use crate::cpu::emit::{
    Entry, LANES_LE, MEM, TableLoads, bad_params, define_kernel, define_micro_kernel_call,
    disassemble_kernel, imm64, off32, size,
};
use crate::kernel::TernaryMatmulParams;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, I8, I8X16, I16, I16X8, I32, I32X4, I64};
use cranelift_codegen::ir::{
    ConstantData, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_module::{FuncId, Module};

/// Flags of the loads of activations and weights: besides `emit::MEM`, the kernel never writes them
/// (they cannot alias `out`, whose type differs), so the loads are pure and Cranelift places each
/// next to its use instead of keeping every load of an unrolled iteration live at once.
const PURE: MemFlagsData = MEM.with_readonly().with_can_move();

/// Rows ahead of the one being computed whose weights are touched (measured on a weight stream
/// from memory: 1–2 rows ahead beat none and 4 or more).
const TOUCH_AHEAD: i64 = 2;

/// Flags of the loads that touch the weights of a row ahead (a software prefetch: Cranelift has no
/// prefetch instruction). They may trap as far as Cranelift knows, so they are kept though their
/// values are unused; the row they touch is always one of the weight buffer's rows.
const TOUCH: MemFlagsData = MemFlagsData::new();

/// The largest K of the `scaled` decoding (see `Accs::Tree`).
const SCALED_MAX_K: usize = 524_287;

/// Weight bytes per row tile (the rows a token group sweeps before the next group).
const TILE_BYTES: usize = 256 * 1024;

/// Tokens per group (one weight load serves this many tokens). Measured on x86 AVX-VNNI: groups of
/// 2 with one block per iteration and one chain per quarter and token beat 3 and 4 (register spills)
/// and 1 (more decoding per token).
const GROUP: usize = 2;

/// Blocks per loop iteration of a `DotTree` group of `GROUP` tokens.
const GROUP_UNROLL: usize = 1;

/// i32x4 chains per token of a `DotTree` group of `GROUP` tokens (one per quarter).
const GROUP_CHAINS: usize = 4;

/// How the kernel multiplies 16 codes by 16 activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DotStrategy {
    /// The exact widening dot tree of `emit::dot_i8` into i32x4 accumulators, which Cranelift folds
    /// into one `vpdpbusd` (x86 AVX-VNNI or AVX512-VNNI; codes unsigned) or `sdot` (aarch64 DotProd;
    /// codes signed) per 16 codes, and lowers to widening multiplies and pairwise adds elsewhere.
    DotTree {
        /// Whether the codes enter the tree zero-extended (x86) or sign-extended (aarch64); codes are
        /// 0–2, so both are exact.
        codes_unsigned: bool,
    },
    /// x86 SSSE3 `pmaddubsw` (u8 codes × i8 activations, pairs summed into i16; at most 512 in
    /// magnitude, so never saturating) into i16x8 accumulators, widened into i32x4 with `pmaddwd`
    /// every 4 blocks (at most 8192 per i16 lane in between).
    Pmaddubsw,
}

impl DotStrategy {
    /// The best strategy the ISA supports.
    pub fn for_isa(isa: &dyn TargetIsa) -> DotStrategy {
        let flags = isa.isa_flags();
        let flag = |name: &str| {
            flags
                .iter()
                .any(|v| v.name == name && v.as_bool() == Some(true))
        };
        match isa.name() {
            "x64" => {
                let vnni = (flag("has_avx") && flag("has_avx_vnni"))
                    || (flag("has_avx512vl") && flag("has_avx512vnni"));
                if !vnni && flag("has_ssse3") {
                    DotStrategy::Pmaddubsw
                } else {
                    DotStrategy::DotTree {
                        codes_unsigned: true,
                    }
                }
            }
            "aarch64" => DotStrategy::DotTree {
                codes_unsigned: false,
            },
            _ => DotStrategy::DotTree {
                codes_unsigned: true,
            },
        }
    }

    /// Blocks per loop iteration for a group of `tokens`.
    fn unroll(self, tokens: usize) -> usize {
        match self {
            DotStrategy::DotTree { .. } if tokens == 1 => 2,
            DotStrategy::DotTree { .. } => GROUP_UNROLL,
            DotStrategy::Pmaddubsw => 4,
        }
    }

    /// i32x4 accumulators per token for a group of `tokens` (independent chains hide the latency of
    /// `vpdpbusd`).
    fn accumulators(self, tokens: usize) -> usize {
        match self {
            DotStrategy::DotTree { .. } if tokens == 1 => 8,
            DotStrategy::DotTree { .. } => GROUP_CHAINS,
            DotStrategy::Pmaddubsw => 1,
        }
    }
}

/// Defines the kernel `p` in `module`, with the module ISA's best `DotStrategy`.
pub fn build(module: &mut dyn Module, p: &TernaryMatmulParams) -> Result<FuncId, BackendError> {
    let strategy = DotStrategy::for_isa(module.isa());
    if crate::cpu::emit::uses_integer_micro_kernels(module.isa()) {
        return build_micro_kernel_call(module, p, strategy);
    }
    build_with(module, p, strategy)
}

/// Defines kernel `p` as a call of the runtime's micro-kernel with `k`, `n` and `residual`.
fn build_micro_kernel_call(
    module: &mut dyn Module,
    p: &TernaryMatmulParams,
    strategy: DotStrategy,
) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    // The same parameter checks as the generated kernel.
    let plan = Plan::new(name, p, strategy)?;
    let params = [plan.k as i64, plan.n as i64, i64::from(plan.residual)];
    define_micro_kernel_call(
        module,
        name,
        bitnet_runtime::native::TERNARY_MATMUL,
        &params,
    )
}

/// Defines the kernel `p` in `module` with `strategy` (which the module's ISA must support).
pub fn build_with(
    module: &mut dyn Module,
    p: &TernaryMatmulParams,
    strategy: DotStrategy,
) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let plan = Plan::new(name, p, strategy)?;
    define_kernel(module, name, TableLoads::Fixed, &[], |b, entry| {
        emit_kernel(b, entry, name, &plan)
    })
}

/// The machine code of kernel `p` compiled for `isa` with its best strategy, as Cranelift lists it
/// (for review snapshots).
pub fn disassemble(isa: &dyn TargetIsa, p: &TernaryMatmulParams) -> Result<String, BackendError> {
    let name = &p.symbol();
    let plan = Plan::new(name, p, DotStrategy::for_isa(isa))?;
    disassemble_kernel(isa, name, TableLoads::Fixed, |b, entry| {
        emit_kernel(b, entry, name, &plan)
    })
}

/// The static shape of one kernel.
struct Plan {
    k: usize,
    n: usize,
    /// Whole 64-element blocks of activations.
    full_blocks: usize,
    /// K mod 64.
    tail: usize,
    /// Packed bytes per weight row.
    row_bytes: usize,
    /// Whether a residual is added (`TernaryMatmulParams::residual`).
    residual: bool,
    strategy: DotStrategy,
}

impl Plan {
    /// The plan of kernel `p` (named `name`), or why its parameters are out of range.
    fn new(
        name: &str,
        p: &TernaryMatmulParams,
        strategy: DotStrategy,
    ) -> Result<Plan, BackendError> {
        let (k, n) = (size(name, p.k)?, size(name, p.n)?);
        if k == 0 || k as u64 > bitnet_ir::ops::ternary_matmul::MAX_K {
            return Err(bad_params(name, "k must be between 1 and MAX_K"));
        }
        // Every static offset the kernel forms must fit in i32.
        off32(name, (GROUP * k + GROUP * n * 4) as u64)?;
        let blocks = k.div_ceil(PACK_BLOCK);
        Ok(Plan {
            k,
            n,
            full_blocks: k / PACK_BLOCK,
            tail: k % PACK_BLOCK,
            row_bytes: blocks * PACK_BLOCK / 4,
            residual: p.residual,
            strategy,
        })
    }
}

/// Emits the body of the kernel named `name` that `plan` describes.
fn emit_kernel(
    b: &mut FunctionBuilder,
    entry: &Entry,
    name: &str,
    plan: &Plan,
) -> Result<(), BackendError> {
    let tokens = entry.tokens(b);
    let mut next = 0u8;
    let mut buf = |b: &mut FunctionBuilder| {
        next += 1;
        entry.buf(b, next - 1)
    };
    let xq = buf(b);
    let xs = buf(b);
    let w = buf(b);
    let ws_ptr = buf(b);
    let res = if plan.residual { Some(buf(b)) } else { None };
    let out = buf(b);
    let ws = b.ins().load(F32, MEM, ws_ptr, 0);
    let slot = if plan.tail > 0 {
        let ss = b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (GROUP * PACK_BLOCK) as u32,
            4,
        ));
        Some(b.ins().stack_addr(I64, ss, 0))
    } else {
        None
    };
    let three = b.ins().iconst(I8, 3);
    let mask3 = b.ins().splat(I8X16, three);
    let ones = splat_i8(b, 1);
    let quarter_masks = [0xC0u8, 0x30, 0x0C, 0x03].map(|m| {
        let c = b.func.dfg.constants.insert(ConstantData::from(vec![m; 16]));
        b.ins().vconst(I8X16, c)
    });
    let g = Group {
        plan,
        name,
        xq,
        xs,
        w,
        ws,
        res,
        out,
        slot,
        mask3,
        quarter_masks,
        ones,
    };
    let rows_per_tile = imm64(name, (TILE_BYTES / plan.row_bytes).max(1) as u64)?;
    let row_end = entry.row_end;
    emit_for_signed(b, entry.row_begin, row_end, rows_per_tile, |b, tile| {
        let tile_end = b.ins().iadd_imm_s(tile, rows_per_tile);
        let tile_end = b.ins().smin(tile_end, row_end);
        let zero = b.ins().iconst(I64, 0);
        let t = var(b, I64, zero);
        emit_while(
            b,
            |b| {
                let tv = b.use_var(t);
                let t4 = b.ins().iadd_imm_s(tv, GROUP as i64);
                b.ins().icmp(IntCC::SignedLessThanOrEqual, t4, tokens)
            },
            |b| {
                let tv = b.use_var(t);
                g.emit(b, GROUP, tv, tile, tile_end)?;
                let t4 = b.ins().iadd_imm_s(tv, GROUP as i64);
                b.def_var(t, t4);
                Ok(())
            },
        )?;
        emit_while(
            b,
            |b| {
                let tv = b.use_var(t);
                b.ins().icmp(IntCC::SignedLessThan, tv, tokens)
            },
            |b| {
                let tv = b.use_var(t);
                g.emit(b, 1, tv, tile, tile_end)?;
                let t1 = b.ins().iadd_imm_s(tv, 1);
                b.def_var(t, t1);
                Ok(())
            },
        )
    })
}

/// What the codes of a dot pass are.
#[derive(Clone, Copy)]
enum Codes {
    /// All 1: the pass sums the activations.
    Ones,
    /// The packed weight row at this address.
    Packed(Value),
}

/// The accumulators of one dot pass.
enum Accs {
    /// `[token][chain]` i32x4; with `scaled`, chain c holds quarter c mod 4 of every block, its
    /// codes left in place in their byte (`byte & (3 << s)`, i.e. `code · 2^s`, s = 6 − 2·quarter).
    Tree {
        vars: Vec<Vec<Variable>>,
        scaled: bool,
    },
    /// Per token: an i16x8 partial sum and the i32x4 total.
    Madd(Vec<(Variable, Variable)>),
}

/// The values one token group's code needs.
struct Group<'a> {
    plan: &'a Plan,
    name: &'a str,
    xq: Value,
    xs: Value,
    w: Value,
    ws: Value,
    res: Option<Value>,
    out: Value,
    /// The tail buffer (`GROUP` × 64 bytes), when K is not a multiple of 64.
    slot: Option<Value>,
    mask3: Value,
    /// `3 << (6 − 2·j)` in every byte, for quarter j (the `scaled` decoding).
    quarter_masks: [Value; 4],
    ones: Value,
}

impl Group<'_> {
    /// Emits tokens `t .. t + tokens` for the rows `row_begin .. row_end`.
    fn emit(
        &self,
        b: &mut FunctionBuilder,
        tokens: usize,
        t: Value,
        row_begin: Value,
        row_end: Value,
    ) -> Result<(), BackendError> {
        let p = self.plan;
        let name = self.name;
        let xoff = b.ins().imul_imm_s(t, imm64(name, p.k as u64)?);
        let xrow = b.ins().iadd(self.xq, xoff);
        if let Some(slot) = self.slot {
            let zero = zero_i32x4(b);
            for i in 0..tokens {
                for q in 0..PACK_BLOCK / 16 {
                    b.ins().store(
                        MEM,
                        zero,
                        slot,
                        off32(name, (i * PACK_BLOCK + q * 16) as u64)?,
                    );
                }
                let src = i * p.k + p.full_blocks * PACK_BLOCK;
                self.copy_tail(b, xrow, src, slot, i * PACK_BLOCK)?;
            }
        }
        let sums = self.dot_pass(b, tokens, Codes::Ones, xrow)?;
        let t4 = b.ins().ishl_imm_u(t, 2);
        let xs_t = b.ins().iadd(self.xs, t4);
        let scales: Vec<Value> = (0..tokens)
            .map(|i| b.ins().load(F32, MEM, xs_t, (i * 4) as i32))
            .collect();
        let row_off = b.ins().imul_imm_s(t, imm64(name, (p.n * 4) as u64)?);
        let out_t = b.ins().iadd(self.out, row_off);
        let res_t = self.res.map(|r| b.ins().iadd(r, row_off));
        let last_row = imm64(name, p.n.saturating_sub(1) as u64)?;
        emit_for_signed(b, row_begin, row_end, 1, |b, n| {
            let woff = b.ins().imul_imm_s(n, imm64(name, p.row_bytes as u64)?);
            let wrow = b.ins().iadd(self.w, woff);
            // Touch every line of the weight row `TOUCH_AHEAD` rows on (the last row at the end):
            // the hardware prefetcher alone leaves the weight stream at about half the bandwidth.
            {
                let pr = b.ins().iadd_imm_s(n, TOUCH_AHEAD);
                let last = b.ins().iconst(I64, last_row);
                let pr = b.ins().smin(pr, last);
                let poff = b.ins().imul_imm_s(pr, imm64(name, p.row_bytes as u64)?);
                let prow = b.ins().iadd(self.w, poff);
                for line in (0..p.row_bytes).step_by(64) {
                    b.ins().load(I8, TOUCH, prow, off32(name, line as u64)?);
                }
            }
            let accs = self.dot_pass(b, tokens, Codes::Packed(wrow), xrow)?;
            let n4 = b.ins().ishl_imm_u(n, 2);
            let out_n = b.ins().iadd(out_t, n4);
            let res_n = res_t.map(|r| b.ins().iadd(r, n4));
            for i in 0..tokens {
                let o = off32(name, (i * p.n * 4) as u64)?;
                let acc = b.ins().isub(accs[i], sums[i]);
                let y = b.ins().fcvt_from_sint(F32, acc);
                let y = b.ins().fdiv(y, scales[i]);
                let mut y = b.ins().fmul(y, self.ws);
                if let Some(r) = res_n {
                    let rv = b.ins().load(F32, MEM, r, o);
                    y = b.ins().fadd(y, rv);
                }
                b.ins().store(MEM, y, out_n, o);
            }
            Ok(())
        })
    }

    /// Copies the `tail` activation bytes at `xrow + src` to `slot + dst` (static chunks of 8, 4, 2
    /// and 1 bytes).
    fn copy_tail(
        &self,
        b: &mut FunctionBuilder,
        xrow: Value,
        src: usize,
        slot: Value,
        dst: usize,
    ) -> Result<(), BackendError> {
        let mut at = 0;
        for (width, ty) in [(8, I64), (4, I32), (2, I16), (1, I8)] {
            while self.plan.tail - at >= width {
                let v = b
                    .ins()
                    .load(ty, MEM, xrow, off32(self.name, (src + at) as u64)?);
                b.ins()
                    .store(MEM, v, slot, off32(self.name, (dst + at) as u64)?);
                at += width;
            }
        }
        Ok(())
    }

    /// The i32 dot products of `codes` with the activation rows of `tokens` tokens (token i's row at
    /// `xrow + i·k`), over all K (the tail block from the stack buffer).
    fn dot_pass(
        &self,
        b: &mut FunctionBuilder,
        tokens: usize,
        codes: Codes,
        xrow: Value,
    ) -> Result<Vec<Value>, BackendError> {
        let p = self.plan;
        let name = self.name;
        let strategy = p.strategy;
        let unroll = strategy.unroll(tokens);
        let accs = match strategy {
            DotStrategy::DotTree { codes_unsigned } => Accs::Tree {
                // One shift fewer per quarter: mask the code in place and divide the quarter's sum
                // by 2^s at the end. Exact while |2^6 · Σ code·x| < 2^31: |Σ code·x| ≤ 2·128·K/4
                // per quarter, so K ≤ 524 287. Unsigned codes only (a masked code reaches 128), and
                // one token (the chains must be per quarter: 8 for 1 token).
                scaled: codes_unsigned
                    && p.k <= SCALED_MAX_K
                    && matches!(codes, Codes::Packed(_))
                    && strategy.accumulators(tokens).is_multiple_of(4),
                vars: (0..tokens)
                    .map(|_| {
                        (0..strategy.accumulators(tokens))
                            .map(|_| {
                                let z = zero_i32x4(b);
                                var(b, I32X4, z)
                            })
                            .collect()
                    })
                    .collect(),
            },
            DotStrategy::Pmaddubsw => Accs::Madd(
                (0..tokens)
                    .map(|_| {
                        let z16 = zero_i16x8(b);
                        let z32 = zero_i32x4(b);
                        (var(b, I16X8, z16), var(b, I32X4, z32))
                    })
                    .collect(),
            ),
        };
        let groups = p.full_blocks / unroll;
        let stride = (unroll * PACK_BLOCK) as u64;
        emit_static_loop(b, name, groups as u64, stride, |b, o| {
            let xbase = b.ins().iadd(xrow, o);
            let wbase = match codes {
                Codes::Packed(row) => {
                    let wo = b.ins().ushr_imm_u(o, 2);
                    Codes::Packed(b.ins().iadd(row, wo))
                }
                Codes::Ones => Codes::Ones,
            };
            for u in 0..unroll {
                let xaddr = |i: usize| (xbase, i * p.k + u * PACK_BLOCK, PURE);
                self.block(b, tokens, wbase, u * 16, &xaddr, u * 4, &accs)?;
            }
            self.flush(b, &accs);
            Ok(())
        })?;
        for blk in groups * unroll..p.full_blocks {
            let xaddr = |i: usize| (xrow, i * p.k + blk * PACK_BLOCK, PURE);
            self.block(b, tokens, codes, blk * 16, &xaddr, blk * 4, &accs)?;
        }
        if let Some(slot) = self.slot {
            let xaddr = |i: usize| (slot, i * PACK_BLOCK, MEM);
            let blk = p.full_blocks;
            self.block(b, tokens, codes, blk * 16, &xaddr, blk * 4, &accs)?;
        }
        self.flush(b, &accs);
        Ok(match &accs {
            Accs::Tree { vars, scaled } => vars
                .iter()
                .map(|chains| {
                    let mut vs: Vec<Value> = chains.iter().map(|&v| b.use_var(v)).collect();
                    if *scaled {
                        // Sum each quarter's chains, divide by its 2^s (exact), then add up.
                        let mut quarters = Vec::with_capacity(4);
                        for j in 0..4 {
                            let mut q = vs[j];
                            for c in (j + 4..vs.len()).step_by(4) {
                                q = b.ins().iadd(q, vs[c]);
                            }
                            let shift = 6 - 2 * j as i64;
                            quarters.push(if shift == 0 {
                                q
                            } else {
                                b.ins().sshr_imm_u(q, shift)
                            });
                        }
                        vs = quarters;
                    }
                    while vs.len() > 1 {
                        let mut next = Vec::with_capacity(vs.len().div_ceil(2));
                        for pair in vs.chunks(2) {
                            next.push(match pair {
                                [a, z] => b.ins().iadd(*a, *z),
                                _ => pair[0],
                            });
                        }
                        vs = next;
                    }
                    hsum_i32x4(b, vs[0])
                })
                .collect(),
            Accs::Madd(vars) => vars
                .iter()
                .map(|&(_, v32)| {
                    let v = b.use_var(v32);
                    hsum_i32x4(b, v)
                })
                .collect(),
        })
    }

    /// Widens the i16 partial sums into the i32 totals (`Pmaddubsw` only).
    fn flush(&self, b: &mut FunctionBuilder, accs: &Accs) {
        if let Accs::Madd(vars) = accs {
            for &(v16, v32) in vars {
                let a16 = b.use_var(v16);
                let wide = widen_pairs_i16(b, a16);
                let a32 = b.use_var(v32);
                let sum = b.ins().iadd(a32, wide);
                b.def_var(v32, sum);
                let z = zero_i16x8(b);
                b.def_var(v16, z);
            }
        }
    }

    /// One 64-element block: codes at `codes + woff` (16 bytes), token i's 64 activations at
    /// `xaddr(i)`; chain `chain0 + j` takes quarter j.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        b: &mut FunctionBuilder,
        tokens: usize,
        codes: Codes,
        woff: usize,
        xaddr: &dyn Fn(usize) -> (Value, usize, MemFlagsData),
        chain0: usize,
        accs: &Accs,
    ) -> Result<(), BackendError> {
        let packed = match codes {
            Codes::Packed(row) => {
                let wv = b
                    .ins()
                    .load(I8X16, PURE, row, off32(self.name, woff as u64)?);
                let w16 = b.ins().bitcast(I16X8, LANES_LE, wv);
                Some((wv, w16))
            }
            Codes::Ones => None,
        };
        let scaled = matches!(accs, Accs::Tree { scaled: true, .. });
        for j in 0..4 {
            let c = match packed {
                Some((wv, _)) if scaled => b.ins().band(wv, self.quarter_masks[j]),
                Some((wv, w16)) => {
                    let shift = 6 - 2 * j as i64;
                    let v = if shift == 0 {
                        wv
                    } else {
                        let s = b.ins().ushr_imm_u(w16, shift);
                        b.ins().bitcast(I8X16, LANES_LE, s)
                    };
                    b.ins().band(v, self.mask3)
                }
                None => self.ones,
            };
            for i in 0..tokens {
                let (base, off, flags) = xaddr(i);
                let xv = b
                    .ins()
                    .load(I8X16, flags, base, off32(self.name, (off + j * 16) as u64)?);
                match (accs, self.plan.strategy) {
                    (Accs::Tree { vars, .. }, DotStrategy::DotTree { codes_unsigned }) => {
                        let chains = &vars[i];
                        let acc_var = chains[(chain0 + j) % chains.len()];
                        let acc = b.use_var(acc_var);
                        let next = dot_i8(b, acc, xv, c, codes_unsigned);
                        b.def_var(acc_var, next);
                    }
                    (Accs::Madd(vars), _) => {
                        let (v16, _) = vars[i];
                        let prod = b.ins().x86_pmaddubsw(xv, c);
                        let acc = b.use_var(v16);
                        let next = b.ins().iadd(acc, prod);
                        b.def_var(v16, next);
                    }
                    (Accs::Tree { .. }, DotStrategy::Pmaddubsw) => {
                        return Err(bad_params(self.name, "internal: accumulator mismatch"));
                    }
                }
            }
        }
        Ok(())
    }
}
