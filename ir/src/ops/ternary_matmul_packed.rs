//! `bit.ternary_matmul_packed`: `bit.ternary_matmul` over weights packed 4 codes per byte in the
//! layout a backend's kernel reads, described by the op's attributes; and the layout functions
//! (`pack_row`, `unpack_row`, `row_sum`) that `pack-weights` and the reference share.
//!
//! Syntax: `%y = bit.ternary_matmul_packed %xq, %xs, %wp, %ws[, %rowsum][, %r] {block = 128, k = 256,
//! order = "i2s"[, rowsum = "codes"]} : tensor<Tx512xf32>` with `xq`, `xs`, `ws` and the residual `r` as
//! in `bit.ternary_matmul`, `wp` the packed weight `[N, Kp/4]` u8, and `rowsum` (present exactly when
//! the `rowsum` attribute is) `[N]` i32.
//!
//! Layout of one row of K ternary values `t` (N rows, row-major, each row `Kp/4` bytes):
//! - code = t + 1 ∈ {0, 1, 2}, four 2-bit codes per byte (code 3 is invalid);
//! - K is padded to `Kp`, the next multiple of `block` (a multiple of 4); padding holds code 1 (t = 0);
//! - block `b` (elements `b·block ..`) occupies bytes `b·block/4 ..`; element j of a block, with
//!   G = block/4, sits at
//!   - `order = "i2s"` (bitnet.cpp's x86 I2_S for block 128): byte `j % G`, shift `6 − 2·(j / G)`;
//!   - `order = "low-first"`: byte `j / 4`, shift `2·(j % 4)`;
//! - `rowsum = "codes"`: `Σ_{k<K} (t_k + 1)` per row; `rowsum = "ternary"`: `Σ_{k<K} t_k` (i32; for kernels
//!   that offset codes or activations and must undo the offset).
//!
//! Math: unpack the rows, then exactly `bit.ternary_matmul` (same i32 sums, same f32 scaling and residual
//! addition), so packing never changes a result. A code 3, a padding code other than 1 or a row sum that
//! does not match the unpacked row is a run-time error (a corrupt packed weight).

use super::ternary_matmul::{MAX_K, check_residual, matmul_rows};
use super::{Arity, EvalCtx, EvalResult, InferCtx, OpSpec, one, operand, result_shape};
use crate::attr::{AttrKind, AttrSpec};
use crate::tensor::Data;
use crate::types::{Dim, ElemType, TensorType};

/// `bit.ternary_matmul_packed`.
pub const SPEC: OpSpec = OpSpec {
    name: "bit.ternary_matmul_packed",
    operands: Arity::Between(4, 6),
    results: 1,
    attrs: &[
        AttrSpec::req("block", AttrKind::Int),
        AttrSpec::req("k", AttrKind::Int),
        AttrSpec::req("order", AttrKind::Str),
        AttrSpec::opt("rowsum", AttrKind::Str),
    ],
};

/// Where the codes of a block go within its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackOrder {
    /// Element j of a block of G·4 at byte `j % G`, shift `6 − 2·(j / G)` (bitnet.cpp I2_S, x86).
    I2s,
    /// Element j at byte `j / 4`, shift `2·(j % 4)` (the first element in the low bits).
    LowFirst,
}

impl PackOrder {
    /// The attribute text (`"i2s"`, `"low-first"`).
    pub fn name(self) -> &'static str {
        match self {
            PackOrder::I2s => "i2s",
            PackOrder::LowFirst => "low-first",
        }
    }

    /// The order called `name`.
    pub fn from_name(name: &str) -> Option<PackOrder> {
        [PackOrder::I2s, PackOrder::LowFirst]
            .into_iter()
            .find(|o| o.name() == name)
    }
}

/// Which per-row sum a kernel needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowSum {
    /// `Σ (t + 1)` over the row's K values.
    Codes,
    /// `Σ t` over the row's K values.
    Ternary,
}

impl RowSum {
    /// The attribute text (`"codes"`, `"ternary"`).
    pub fn name(self) -> &'static str {
        match self {
            RowSum::Codes => "codes",
            RowSum::Ternary => "ternary",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<RowSum> {
        [RowSum::Codes, RowSum::Ternary]
            .into_iter()
            .find(|o| o.name() == name)
    }
}

/// K padded to a multiple of `block`; `None` if `block` is not a positive multiple of 4 or on overflow.
pub fn padded_k(k: usize, block: usize) -> Option<usize> {
    if block == 0 || !block.is_multiple_of(4) {
        return None;
    }
    k.checked_next_multiple_of(block)
}

/// The byte (within its row) and bit shift of element `j` of a row.
pub fn code_slot(j: usize, block: usize, order: PackOrder) -> (usize, u32) {
    let g = block / 4;
    let (b, j) = (j / block, j % block);
    let (byte, shift) = match order {
        PackOrder::I2s => (j % g, 6 - 2 * (j / g) as u32),
        PackOrder::LowFirst => (j / 4, 2 * (j % 4) as u32),
    };
    (b * g + byte, shift)
}

/// Packs one row of ternary values into `out` (`padded_k(t.len(), block) / 4` bytes).
///
/// Whole blocks (I2_S) and whole bytes (low-first) are packed by straight-line loops over slices, which
/// the compiler vectorizes; the padded tail goes element by element through `code_slot`.
pub fn pack_row(t: &[i8], block: usize, order: PackOrder, out: &mut [u8]) {
    fn code(v: i8) -> u8 {
        (v.clamp(-1, 1) + 1) as u8
    }
    out.fill(0);
    let g = block / 4;
    let done = match order {
        PackOrder::I2s if g > 0 => {
            let whole = (t.len() / block).min(out.len() / g);
            for (tb, ob) in t
                .chunks_exact(block)
                .zip(out.chunks_exact_mut(g))
                .take(whole)
            {
                let (q0, rest) = tb.split_at(g);
                let (q1, rest) = rest.split_at(g);
                let (q2, q3) = rest.split_at(g);
                // Zipped slices of one length: no bounds checks, so the loop vectorizes.
                let quads = q0.iter().zip(q1).zip(q2).zip(q3);
                for (o, (((&a, &b), &c), &d)) in ob.iter_mut().zip(quads) {
                    *o = code(a) << 6 | code(b) << 4 | code(c) << 2 | code(d);
                }
            }
            whole * block
        }
        PackOrder::LowFirst => {
            let whole = (t.len() / 4).min(out.len());
            for (c, o) in t.chunks_exact(4).zip(out.iter_mut()).take(whole) {
                *o = code(c[0]) | code(c[1]) << 2 | code(c[2]) << 4 | code(c[3]) << 6;
            }
            whole * 4
        }
        PackOrder::I2s => 0,
    };
    for j in done..out.len() * 4 {
        let c = t.get(j).map_or(1, |&v| code(v));
        let (byte, shift) = code_slot(j, block, order);
        if let Some(o) = out.get_mut(byte) {
            *o |= c << shift;
        }
    }
}

/// Unpacks the `out.len()` values of one packed row; errors on an invalid code or padding.
pub fn unpack_row(
    bytes: &[u8],
    block: usize,
    order: PackOrder,
    out: &mut [i8],
) -> Result<(), String> {
    for j in 0..bytes.len() * 4 {
        let (byte, shift) = code_slot(j, block, order);
        let code = bytes.get(byte).map_or(1, |b| (b >> shift) & 3);
        match out.get_mut(j) {
            Some(o) if code < 3 => *o = code as i8 - 1,
            Some(_) => return Err(format!("invalid code 3 at element {j}")),
            None if code != 1 => {
                return Err(format!("padding element {j} holds code {code}, not 1"));
            }
            None => {}
        }
    }
    Ok(())
}

/// The row sum of one row of ternary values.
pub fn row_sum(t: &[i8], kind: RowSum) -> i32 {
    let offset = match kind {
        RowSum::Codes => 1,
        RowSum::Ternary => 0,
    };
    t.iter().map(|&v| i32::from(v) + offset).sum()
}

/// The layout attributes, checked: (block, k, order, rowsum).
fn layout(
    cx_attrs: &crate::attr::Attrs,
) -> Result<(usize, usize, PackOrder, Option<RowSum>), String> {
    let block = cx_attrs.int_or("block", 0);
    let k = cx_attrs.int_or("k", 0);
    let order = cx_attrs.str("order").unwrap_or("");
    let order = PackOrder::from_name(order)
        .ok_or_else(|| format!("order must be \"i2s\" or \"low-first\", found {order:?}"))?;
    let rowsum = match cx_attrs.str("rowsum") {
        None => None,
        Some(r) => Some(
            RowSum::from_name(r)
                .ok_or_else(|| format!("rowsum must be \"codes\" or \"ternary\", found {r:?}"))?,
        ),
    };
    if block < 4 || block % 4 != 0 {
        return Err(format!(
            "block must be a positive multiple of 4, found {block}"
        ));
    }
    if k < 1 || k as u64 > MAX_K {
        return Err(format!(
            "k must be between 1 and {MAX_K} (the i32-accumulator limit), found {k}"
        ));
    }
    Ok((block as usize, k as usize, order, rowsum))
}

/// Type rule.
pub fn infer(cx: &InferCtx) -> Result<Vec<TensorType>, String> {
    let (block, k, _, rowsum) = layout(cx.attrs)?;
    let xq = operand(cx, 0)?;
    let xs = operand(cx, 1)?;
    let wp = operand(cx, 2)?;
    let ws = operand(cx, 3)?;
    if xq.elem != ElemType::I8 || xq.dims.last() != Some(&Dim::Static(k as u64)) {
        return Err(format!(
            "the activations must be i8 with a last axis of k = {k}, found {xq}"
        ));
    }
    let mut sdims = xq.dims.clone();
    if let Some(last) = sdims.last_mut() {
        *last = Dim::Static(1);
    }
    if xs != TensorType::new(sdims.clone(), ElemType::F32) {
        return Err(format!(
            "the activation scale must be {}, found {xs}",
            TensorType::new(sdims, ElemType::F32)
        ));
    }
    let bytes = padded_k(k, block).map(|p| p / 4).unwrap_or(0);
    if wp.elem != ElemType::U8 || wp.rank() != 2 || wp.dims[1] != Dim::Static(bytes as u64) {
        return Err(format!(
            "the packed weight must be [N, {bytes}] u8 (k = {k} padded to a multiple of block = {block}, 4 codes a byte), found {wp}"
        ));
    }
    if ws.elem != ElemType::F32 || !(ws.rank() == 0 || ws.dims == [Dim::Static(1)]) {
        return Err(format!(
            "the weight scale must be tensor<f32> or tensor<1xf32>, found {ws}"
        ));
    }
    let n = wp.dims[0].clone();
    let base = 4 + usize::from(rowsum.is_some());
    if cx.operands.len() < base || cx.operands.len() > base + 1 {
        return Err(format!(
            "takes {base} or {} operands {}, found {}",
            base + 1,
            if rowsum.is_some() {
                "with a rowsum attribute"
            } else {
                "without a rowsum attribute"
            },
            cx.operands.len()
        ));
    }
    if rowsum.is_some() {
        let rs = operand(cx, 4)?;
        let want = TensorType::new(vec![n.clone()], ElemType::I32);
        if rs != want {
            return Err(format!("the row sums must be {want}, found {rs}"));
        }
    }
    let mut dims = xq.dims.clone();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    let out = TensorType::new(dims, ElemType::F32);
    check_residual(cx, base, &out)?;
    Ok(vec![out])
}

/// Reference evaluation: unpack, check, then `bit.ternary_matmul`'s arithmetic.
pub fn eval(cx: &EvalCtx) -> EvalResult {
    let (block, k, order, rowsum) = layout(cx.attrs)?;
    let (xq, xs, wp, ws) = (cx.input(0)?, cx.input(1)?, cx.input(2)?, cx.input(3)?);
    let n = wp.shape[0];
    let row_bytes = wp.shape[1];
    let Data::U8(bytes) = &wp.data else {
        return Err("the packed weight is not u8".into());
    };
    let sums = match rowsum {
        Some(_) => Some(cx.input(4)?.data.to_i64()),
        None => None,
    };
    let mut t = vec![0i64; n * k];
    let mut row = vec![0i8; k];
    for (i, (packed, dst)) in bytes
        .chunks(row_bytes.max(1))
        .zip(t.chunks_mut(k))
        .enumerate()
    {
        unpack_row(packed, block, order, &mut row).map_err(|e| format!("packed row {i}: {e}"))?;
        if let (Some(kind), Some(sums)) = (rowsum, &sums) {
            let want = row_sum(&row, kind);
            if sums.get(i).copied() != Some(i64::from(want)) {
                return Err(format!(
                    "row {i}: the row sum is {:?}, the unpacked row gives {want}",
                    sums.get(i)
                ));
            }
        }
        for (d, &v) in dst.iter_mut().zip(&row) {
            *d = i64::from(v);
        }
    }
    let ws = ws
        .data
        .to_f32()
        .first()
        .copied()
        .ok_or("empty weight scale")?;
    let residual_at = 4 + usize::from(rowsum.is_some());
    let residual = cx.inputs.get(residual_at).map(|r| r.data.to_f32());
    let out = matmul_rows(
        &xq.data.to_i64(),
        &xs.data.to_f32(),
        &t,
        n,
        k,
        ws,
        residual.as_deref(),
    );
    one(result_shape(cx, 0)?, Data::F32(out))
}

/// Gradient rule: none. This op exists only after `pack-weights` has put the weights in a backend's
/// layout at compile time; training differentiates the graph before it is compiled.
pub fn vjp(_cx: &super::VjpCtx) -> super::VjpResult {
    Err(
        "bit.ternary_matmul_packed has no gradient: its weights are packed for a backend at \
         compile time; differentiate the nn.* graph, before -O and pack-weights"
            .into(),
    )
}
