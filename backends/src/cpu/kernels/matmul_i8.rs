//! Kernel `MatmulI8` (see `KernelKind::MatmulI8` for its buffers, rows and numerics): the int8
//! lm_head, `out[t, r] = f32(Σ_k q[r, k]·xq[t, k]) / xs[t] · ws[r]`.
//!
//! The weights are quantized at compile time by `quantize_rows`: per row, `ws = absmax / 127` and
//! `q = round_half_even(w / ws)` (clamped to ±127), stored as the byte `q + 128` so that they are
//! the unsigned operand of the same widening dot the ternary kernel uses (`emit::dot_i8`, one
//! `vpdpbusd` per 16 bytes with AVX-VNNI). Then `Σ_k q·x = Σ_k (q + 128)·x − 128·Σ_k x`, exact in
//! wrapping i32 arithmetic because the true value fits (|q·x| ≤ 127·128, k ≤ `MAX_K`). `Σ_k x` is
//! the same dot with all-ones weights, once per token group and row tile.
//!
//! On x86-64 with AVX2 and on AArch64 (`emit::uses_integer_micro_kernels`) the kernel is a call of
//! the runtime's micro-kernel (`bitnet_runtime::native::matmul_i8`: the same results, with AVX2,
//! AVX-VNNI, AVX-512 VNNI, Intel AMX or NEON, whichever the running CPU has); the code below is
//! generated elsewhere.
//!
//! Loop order (as the ternary kernel): row tiles of about `TILE_BYTES` of weights; in each tile,
//! tokens in groups of `GROUP` (then one at a time), every row of the tile per group, so a weight
//! row is read from memory once and serves a group from L1. For one token (decode, and the last
//! token of `forward_last`) the row dot keeps `CHAINS_1` independent accumulators.

use crate::BackendError;
use crate::cpu::emit::loops::{emit_for_signed, emit_static_loop, emit_while, var};
use crate::cpu::emit::simd::{dot_i8, hsum_i32x4, splat_i8, zero_i32x4};
use crate::cpu::emit::{MEM, TableLoads, bad_params, define_kernel, imm64, off32, size};
use crate::kernel::MatmulI8Params;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, I8, I8X16, I32, I32X4, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_module::{FuncId, Module};

/// The largest K: `127·128·K` must fit in i32.
pub const MAX_K: u64 = 131_072;

/// Weight bytes per row tile.
const TILE_BYTES: usize = 256 * 1024;

/// Tokens per group.
const GROUP: usize = 2;

/// Accumulator chains per token when the group is one token (and bytes per main-loop step / 16).
const CHAINS_1: usize = 8;

/// Accumulator chains per token in a group of `GROUP`.
const CHAINS_GROUP: usize = 4;

/// The kernel never writes `xq` or `w`; their loads may move.
const PURE: MemFlagsData = MEM.with_readonly().with_can_move();

/// Quantizes the f32 weights `w` (`[n, k]`, row-major) per row: returns the bytes `q + 128`
/// (`[n, k]`) and the scales `ws` (`[n]`), with `ws = absmax / 127` (f32) and `q =
/// clamp(round_half_even(w / ws), −127, 127)`; a row of zeros gets `ws = 0` and `q = 0`. NaN weights
/// quantize to 0.
pub fn quantize_rows(w: &[f32], k: usize) -> (Vec<u8>, Vec<f32>) {
    let k = k.max(1);
    let mut bytes = vec![0u8; w.len()];
    let scales = w
        .chunks(k)
        .zip(bytes.chunks_mut(k))
        .map(|(row, out)| quantize_row(row, out))
        .collect();
    (bytes, scales)
}

/// One row of `quantize_rows`: its bytes into `out` (as long as `row`), and its scale.
///
/// `w / ws` is at most 127 in magnitude up to rounding (at most 191 when `ws` is an f32
/// subnormal), so it rounds half to even by adding and subtracting 1.5·2²³ in f32, which the
/// compiler keeps in vector registers (`round_ties_even` is a libm call on x86-64 without SSE4.1):
/// the same integer for every |v| < 2²², and a NaN stays a NaN and becomes 0.
pub fn quantize_row(row: &[f32], out: &mut [u8]) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
    let m = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let s = m / 127.0;
    for (o, &x) in out.iter_mut().zip(row) {
        let q = if s > 0.0 {
            ((x / s + ROUND) - ROUND).clamp(-127.0, 127.0) as i32
        } else {
            0
        };
        *o = (q + 128) as u8;
    }
    s
}

/// The static shape of the kernel.
struct Shape {
    k: usize,
    n: usize,
}

/// Defines the kernel `p` in `module`.
pub fn build(module: &mut dyn Module, p: &MatmulI8Params) -> Result<FuncId, BackendError> {
    let name = &p.symbol();
    let MatmulI8Params { k, n } = *p;
    if k == 0 || k > MAX_K {
        return Err(bad_params(name, "k must be between 1 and MAX_K"));
    }
    let shape = Shape {
        k: size(name, k)?,
        n: size(name, n)?,
    };
    off32(name, (GROUP * shape.k + GROUP * shape.n * 4) as u64)?;
    if crate::cpu::emit::uses_integer_micro_kernels(module.isa()) {
        let params = [imm64(name, k)?, imm64(name, n)?];
        return crate::cpu::emit::define_micro_kernel_call(
            module,
            name,
            bitnet_runtime::native::MATMUL_I8,
            &params,
        );
    }
    define_kernel(module, name, TableLoads::Fixed, &[], |b, entry| {
        let tokens = entry.tokens(b);
        let xq = entry.buf(b, 0);
        let xs = entry.buf(b, 1);
        let w = entry.buf(b, 2);
        let ws = entry.buf(b, 3);
        let out = entry.buf(b, 4);
        let ones = splat_i8(b, 1);
        let g = Emit {
            shape: &shape,
            name,
            xq,
            xs,
            w,
            ws,
            out,
            ones,
        };
        let rows_per_tile = imm64(name, (TILE_BYTES / shape.k).max(1) as u64)?;
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
                    let tg = b.ins().iadd_imm_s(tv, GROUP as i64);
                    b.ins().icmp(IntCC::SignedLessThanOrEqual, tg, tokens)
                },
                |b| {
                    let tv = b.use_var(t);
                    g.group(b, GROUP, tv, tile, tile_end)?;
                    let tg = b.ins().iadd_imm_s(tv, GROUP as i64);
                    b.def_var(t, tg);
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
                    g.group(b, 1, tv, tile, tile_end)?;
                    let t1 = b.ins().iadd_imm_s(tv, 1);
                    b.def_var(t, t1);
                    Ok(())
                },
            )
        })
    })
}

/// The values the kernel's code needs.
struct Emit<'a> {
    shape: &'a Shape,
    name: &'a str,
    xq: Value,
    xs: Value,
    w: Value,
    ws: Value,
    out: Value,
    ones: Value,
}

impl Emit<'_> {
    /// Tokens `t .. t + tokens` for rows `row_begin .. row_end`.
    fn group(
        &self,
        b: &mut FunctionBuilder,
        tokens: usize,
        t: Value,
        row_begin: Value,
        row_end: Value,
    ) -> Result<(), BackendError> {
        let (k, n) = (self.shape.k, self.shape.n);
        let name = self.name;
        let xoff = b.ins().imul_imm_s(t, imm64(name, k as u64)?);
        let xrow = b.ins().iadd(self.xq, xoff);
        let sums = self.dot(b, tokens, None, xrow)?;
        let t4 = b.ins().ishl_imm_u(t, 2);
        let xs_t = b.ins().iadd(self.xs, t4);
        let scales: Vec<Value> = (0..tokens)
            .map(|i| b.ins().load(F32, MEM, xs_t, (i * 4) as i32))
            .collect();
        // 128·Σx, the contribution of the weights' offset.
        let bias: Vec<Value> = sums.iter().map(|&s| b.ins().ishl_imm_u(s, 7)).collect();
        let row_off = b.ins().imul_imm_s(t, imm64(name, (n * 4) as u64)?);
        let out_t = b.ins().iadd(self.out, row_off);
        emit_for_signed(b, row_begin, row_end, 1, |b, r| {
            let woff = b.ins().imul_imm_s(r, imm64(name, k as u64)?);
            let wrow = b.ins().iadd(self.w, woff);
            let accs = self.dot(b, tokens, Some(wrow), xrow)?;
            let r4 = b.ins().ishl_imm_u(r, 2);
            let wsr = b.ins().iadd(self.ws, r4);
            let wsr = b.ins().load(F32, MEM, wsr, 0);
            let out_r = b.ins().iadd(out_t, r4);
            for i in 0..tokens {
                let acc = b.ins().isub(accs[i], bias[i]);
                let y = b.ins().fcvt_from_sint(F32, acc);
                let y = b.ins().fdiv(y, scales[i]);
                let y = b.ins().fmul(y, wsr);
                b.ins()
                    .store(MEM, y, out_r, off32(name, (i * n * 4) as u64)?);
            }
            Ok(())
        })
    }

    /// Per token, the wrapping i32 sum `Σ_k w[k]·x[t + i, k]` with `w` the bytes of the weight row
    /// at `row` (unsigned), or all ones when `row` is `None`.
    fn dot(
        &self,
        b: &mut FunctionBuilder,
        tokens: usize,
        row: Option<Value>,
        xrow: Value,
    ) -> Result<Vec<Value>, BackendError> {
        let k = self.shape.k;
        let name = self.name;
        let chains = if tokens == 1 { CHAINS_1 } else { CHAINS_GROUP };
        let accs: Vec<Vec<Variable>> = (0..tokens)
            .map(|_| {
                (0..chains)
                    .map(|_| {
                        let z = zero_i32x4(b);
                        var(b, I32X4, z)
                    })
                    .collect()
            })
            .collect();
        let blocks = k / 16;
        let steps = blocks / chains;
        let step = |b: &mut FunctionBuilder, base: Value, at: usize, chain: usize, xbase: Value| {
            let wv = match row {
                Some(_) => b.ins().load(I8X16, PURE, base, off32(name, at as u64)?),
                None => self.ones,
            };
            for (i, acc_chains) in accs.iter().enumerate() {
                let xv = b
                    .ins()
                    .load(I8X16, PURE, xbase, off32(name, (i * k + at) as u64)?);
                let acc = b.use_var(acc_chains[chain]);
                let next = dot_i8(b, acc, xv, wv, true);
                b.def_var(acc_chains[chain], next);
            }
            Ok::<(), BackendError>(())
        };
        emit_static_loop(b, name, steps as u64, (chains * 16) as u64, |b, o| {
            let wbase = match row {
                Some(r) => b.ins().iadd(r, o),
                None => o,
            };
            let xbase = b.ins().iadd(xrow, o);
            for c in 0..chains {
                step(b, wbase, c * 16, c, xbase)?;
            }
            Ok(())
        })?;
        let wbase = row.unwrap_or(xrow);
        for (c, blk) in (steps * chains..blocks).enumerate() {
            step(b, wbase, blk * 16, c, xrow)?;
        }
        let mut totals = Vec::with_capacity(tokens);
        for (i, acc_chains) in accs.iter().enumerate() {
            let mut vs: Vec<Value> = acc_chains.iter().map(|&v| b.use_var(v)).collect();
            while vs.len() > 1 {
                vs = vs
                    .chunks(2)
                    .map(|p| match *p {
                        [a, c] => b.ins().iadd(a, c),
                        _ => p[0],
                    })
                    .collect();
            }
            let mut s = hsum_i32x4(b, vs[0]);
            for e in blocks * 16..k {
                let x = b
                    .ins()
                    .load(I8, MEM, xrow, off32(name, (i * k + e) as u64)?);
                let x = b.ins().sextend(I32, x);
                let p = match row {
                    Some(r) => {
                        let wb = b.ins().load(I8, MEM, r, off32(name, e as u64)?);
                        let wv = b.ins().uextend(I32, wb);
                        b.ins().imul(x, wv)
                    }
                    None => x,
                };
                s = b.ins().iadd(s, p);
            }
            totals.push(s);
        }
        Ok(totals)
    }
}

#[cfg(test)]
mod tests {
    use super::quantize_row;

    /// `quantize_row`'s rounding is `round_ties_even`'s: rows whose values fall on half steps
    /// (ties), near them, on a subnormal scale, and holding NaN.
    #[test]
    fn quantize_row_rounds_as_round_ties_even() {
        let reference = |row: &[f32]| -> Vec<u8> {
            let m = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
            let s = m / 127.0;
            row.iter()
                .map(|&x| {
                    let q = if s > 0.0 {
                        (x / s).round_ties_even().clamp(-127.0, 127.0) as i32
                    } else {
                        0
                    };
                    (q + 128) as u8
                })
                .collect()
        };
        let mut rows: Vec<Vec<f32>> = vec![
            (0..=254).map(|i| (i as f32 - 127.0) * 0.5).collect(),
            (0..=254).map(|i| (i as f32 - 127.0) * 0.5 + 1e-6).collect(),
            vec![1e-45, -1e-45, 3e-45, 0.0],
            vec![1e-40, 2.5e-41, -7e-41],
            vec![f32::NAN, 1.0, -2.0],
            vec![0.0; 9],
        ];
        let mut state = 0x853c_49e6_748f_ea9bu64;
        for _ in 0..200 {
            rows.push(
                (0..67)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        f32::from_bits((state >> 32) as u32 & 0xbfff_ffff)
                    })
                    .collect(),
            );
        }
        for row in &rows {
            let mut out = vec![0u8; row.len()];
            quantize_row(row, &mut out);
            assert_eq!(out, reference(row), "{row:?}");
        }
    }
}
