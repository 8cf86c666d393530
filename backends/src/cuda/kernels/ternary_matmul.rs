//! CUDA kernel for `TernaryMatmul` (buffers as `KernelKind` documents): int8 activations times
//! 2-bit ternary weights with `dp4a`, one warp per output feature.
//!
//! Weight layout: the CPU backend's (`crate::cpu`: blocks of 64 along K, element `j` of a block in
//! byte `j % 16` at shift `6 − 2·(j / 16)`, code `t + 1`), which suits a warp: lane `l` loads block
//! `l` of the row as one 16-byte vector (a warp reads 512 contiguous bytes), and word `i` of it
//! shifted right by `6 − 2g` and masked with `0x03030303` holds the codes of elements
//! `16g + 4i .. 16g + 4i + 4` in byte order, which is the order of the four activations one 32-bit
//! load of `xq` holds. Codes become signed bytes without carries: `(c + 0x7f) ^ 0x80` per byte maps
//! 0, 1, 2 to −1, 0, 1. `dp4a.s32.s32` then accumulates exactly in i32 (|acc| ≤ 127·K).
//!
//! Tokens: with `T = 1` (decode) each lane keeps one accumulator (a GEMV); otherwise tokens go in
//! tiles of `TOKEN_TILE`, and the decoded weights of a block serve every token of the tile (a GEMM
//! that reads the weights `T / TOKEN_TILE` times). Per token the warp sums its lanes' accumulators
//! (butterfly shuffles, exact) and lane 0 writes `y = f32(acc) / xs[t] · ws[0]` (+ `residual[t, n]`),
//! the interpreter's arithmetic, so the result is bit-identical to it.
//!
//! Activations are read as 16-byte vectors when K is a multiple of 16, else byte by byte; a last
//! partial block reads only elements below K (the padding's codes are 1, weight 0).

use super::super::emit::{Kb, R};
use super::{ROWS_PER_WARP_BLOCK, imm};
use crate::kernel::TernaryMatmulParams;
use crate::kernel::layout::PACK_BLOCK;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::values::IntValue;

/// Tokens whose accumulators one lane keeps at once in the prefill path.
pub const TOKEN_TILE: u64 = 8;

/// The signed byte form of the 2-bit codes of group `g` (elements `16g + 4i ..`) in word `w`.
pub fn signed_codes(w: u32, g: u32) -> u32 {
    let c = (w >> (6 - 2 * g)) & 0x0303_0303;
    c.wrapping_add(0x7f7f_7f7f) ^ 0x8080_8080
}

/// Defines the kernel.
pub fn build<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    name: &str,
    p: &TernaryMatmulParams,
) -> R<()> {
    let TernaryMatmulParams { k, n, residual } = *p;
    let kb = Kb::kernel(cx, m, name, if residual { 6 } else { 5 })?;
    let i32t = cx.i32_type();
    let (xq, xs, w, ws) = (kb.buf(0)?, kb.buf(1)?, kb.buf(2)?, kb.buf(3)?);
    let res = if residual { Some(kb.buf(4)?) } else { None };
    let out = kb.buf(if residual { 5 } else { 4 })?;
    let block = PACK_BLOCK as u64;
    let nblocks = k.div_ceil(block);
    let row_bytes = nblocks * block / 4;
    let tid = kb.tid()?;
    let lane = kb.urem(tid, kb.i64c(kb.warp() as i64))?;
    let warp = kb.udiv(tid, kb.i64c(kb.warp() as i64))?;
    let row = kb.add(
        kb.mul(kb.block_id()?, kb.i64c(ROWS_PER_WARP_BLOCK as i64))?,
        warp,
    )?;
    let nn = kb.i64c(imm(n)?);
    let kk = kb.i64c(imm(k)?);
    let t = kb.t()?;
    let v4 = i32t.vec_type(4);
    let ws0 = kb.load_f32(ws, kb.i64c(0))?;
    // The 16 signed words of block `blk` of this row: [g][i].
    let decode = |blk: IntValue<'ctx>| -> R<[[IntValue<'ctx>; 4]; 4]> {
        let wrow = kb.at(cx.i8_type(), w, kb.mul(row, kb.i64c(imm(row_bytes)?))?)?;
        let p = kb.at(v4, wrow, blk)?;
        let ld = kb.load_aligned(v4, p, 16)?;
        let wv = ld.into_vector_value();
        let mut s = [[kb.i32c(0); 4]; 4];
        for i in 0..4 {
            let word =
                kb.b.build_extract_element(wv, kb.i32c(i as i32), "word")?
                    .into_int_value();
            for (g, slot) in s.iter_mut().enumerate() {
                let sh =
                    kb.b.build_right_shift(word, kb.i32c(6 - 2 * g as i32), false, "sh")?;
                let c = kb.b.build_and(sh, kb.i32c(0x0303_0303), "c")?;
                let c = kb.b.build_int_add(c, kb.i32c(0x7f7f_7f7f), "c")?;
                slot[i] = kb.b.build_xor(c, kb.i32c(0x8080_8080u32 as i32), "s")?;
            }
        }
        Ok(s)
    };
    // The four activation words of group g of block `blk` of token row `tok`.
    let xwords = |tok: IntValue<'ctx>, blk: IntValue<'ctx>, g: u64| -> R<[IntValue<'ctx>; 4]> {
        let start = kb.add(
            kb.mul(tok, kk)?,
            kb.add(kb.mul(blk, kb.i64c(block as i64))?, kb.i64c(16 * g as i64))?,
        )?;
        if k % 16 == 0 {
            let p = kb.at(cx.i8_type(), xq, start)?;
            let ld = kb.load_aligned(v4, p, 16)?;
            let xv = ld.into_vector_value();
            let mut out = [kb.i32c(0); 4];
            for (i, o) in out.iter_mut().enumerate() {
                *o =
                    kb.b.build_extract_element(xv, kb.i32c(i as i32), "xw")?
                        .into_int_value();
            }
            return Ok(out);
        }
        // Byte by byte, zero beyond K.
        let kin = kb.add(kb.mul(blk, kb.i64c(block as i64))?, kb.i64c(16 * g as i64))?;
        let mut out = [kb.i32c(0); 4];
        for (i, o) in out.iter_mut().enumerate() {
            let mut word = kb.i32c(0);
            for byte in 0..4u64 {
                let off = kb.i64c((4 * i as u64 + byte) as i64);
                let e = kb.add(kin, off)?;
                let inside = kb.lt(e, kk)?;
                let v = kb.var(i32t, kb.i32c(0))?;
                kb.if_then(inside, || {
                    let b = kb.load(cx.i8_type(), xq, kb.add(start, off)?)?;
                    let b = kb.b.build_int_z_extend(b.into_int_value(), i32t, "b")?;
                    kb.set(&v, b)
                })?;
                let b = kb.get(&v)?.into_int_value();
                let b = kb.b.build_left_shift(b, kb.i32c(8 * byte as i32), "b")?;
                word = kb.b.build_or(word, b, "w")?;
            }
            *o = word;
        }
        Ok(out)
    };
    // Lanes of a tile of `tile` tokens from `t0` (tokens past T are skipped).
    let tile = |t0: IntValue<'ctx>, tile: u64| -> R<()> {
        let accs: Vec<_> = (0..tile)
            .map(|_| kb.var(i32t, kb.i32c(0)))
            .collect::<R<_>>()?;
        kb.for_range(
            lane,
            kb.i64c(imm(nblocks)?),
            kb.i64c(kb.warp() as i64),
            |blk| {
                let s = decode(blk)?;
                for (j, acc) in accs.iter().enumerate() {
                    let tok = kb.add(t0, kb.i64c(j as i64))?;
                    let body = || -> R<()> {
                        let mut a = kb.get(acc)?.into_int_value();
                        for (g, sg) in s.iter().enumerate() {
                            let go = |mut a: IntValue<'ctx>| -> R<IntValue<'ctx>> {
                                let xw = xwords(tok, blk, g as u64)?;
                                for i in 0..4 {
                                    a = kb.dp4a(sg[i], xw[i], a)?;
                                }
                                Ok(a)
                            };
                            if k % block == 0 {
                                a = go(a)?;
                            } else {
                                // A group past K (in the last, partial block) reads nothing.
                                let first = kb.add(
                                    kb.mul(blk, kb.i64c(block as i64))?,
                                    kb.i64c(16 * g as i64),
                                )?;
                                let v = kb.var(i32t, a)?;
                                kb.if_then(kb.lt(first, kk)?, || kb.set(&v, go(a)?))?;
                                a = kb.get(&v)?.into_int_value();
                            }
                        }
                        kb.set(acc, a)
                    };
                    if tile == 1 {
                        body()?;
                    } else {
                        kb.if_then(kb.lt(tok, t)?, body)?;
                    }
                }
                Ok(())
            },
        )?;
        for (j, acc) in accs.iter().enumerate() {
            let tok = kb.add(t0, kb.i64c(j as i64))?;
            let total = kb.warp_reduce(kb.get(acc)?, |a, b| {
                Ok(kb.add(a.into_int_value(), b.into_int_value())?.into())
            })?;
            let write =
                kb.b.build_and(kb.eq(lane, kb.i64c(0))?, kb.lt(tok, t)?, "write")?;
            kb.if_then(write, || {
                let y = kb.fdiv(
                    kb.i32_to_f32(total.into_int_value())?,
                    kb.load_f32(xs, tok)?,
                )?;
                let mut y = kb.fmul(y, ws0)?;
                let at = kb.add(kb.mul(tok, nn)?, row)?;
                if let Some(r) = res {
                    y = kb.fadd(y, kb.load_f32(r, at)?)?;
                }
                kb.store(out, at, y)
            })?;
        }
        Ok(())
    };
    kb.if_then(kb.lt(row, nn)?, || {
        let one = kb.eq(t, kb.i64c(1))?;
        let then = cx.append_basic_block(kb.f, "decode");
        let other = cx.append_basic_block(kb.f, "prefill");
        let join = cx.append_basic_block(kb.f, "done");
        kb.b.build_conditional_branch(one, then, other)?;
        kb.b.position_at_end(then);
        tile(kb.i64c(0), 1)?;
        kb.b.build_unconditional_branch(join)?;
        kb.b.position_at_end(other);
        kb.for_range(kb.i64c(0), t, kb.i64c(TOKEN_TILE as i64), |t0| {
            tile(t0, TOKEN_TILE)
        })?;
        kb.b.build_unconditional_branch(join)?;
        kb.b.position_at_end(join);
        Ok(())
    })?;
    kb.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host form of the kernel's code extraction agrees with the packing of `pack-weights`
    /// (`PackOrder::I2s`, blocks of 64): every element's signed byte lands where its activation is.
    #[test]
    fn signed_codes_match_the_i2s_layout() {
        // A block of 64 ternary values, packed as the CPU layout says.
        let t: Vec<i8> = (0..64).map(|j| ((j * 7 + 3) % 3) as i8 - 1).collect();
        let mut bytes = [0u8; 16];
        for (j, &v) in t.iter().enumerate() {
            bytes[j % 16] |= ((v + 1) as u8) << (6 - 2 * (j / 16));
        }
        for i in 0..4 {
            let w = u32::from_le_bytes([
                bytes[4 * i],
                bytes[4 * i + 1],
                bytes[4 * i + 2],
                bytes[4 * i + 3],
            ]);
            for g in 0..4u32 {
                let s = signed_codes(w, g).to_le_bytes();
                for (b, &sb) in s.iter().enumerate() {
                    let j = 16 * g as usize + 4 * i + b;
                    assert_eq!(sb as i8, t[j], "element {j}");
                }
            }
        }
    }
}
