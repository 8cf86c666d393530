//! `pack-weights`: re-lays out every ternary weight that a `bit.ternary_matmul` reads into the packed
//! layout a backend's kernel wants, and rewrites the matmul into `bit.ternary_matmul_packed`; and
//! `PackLayout`, the description of such a layout that the caller (a backend) puts in the pass context.
//!
//! Needs: `PassContext::pack_layout` (`PassContext::new` sets `PackLayout::DEFAULT`, I2_S with blocks
//! of 128), and the weights' values: an `nn.weight` is read from the pass context's weights (with the
//! weights earlier passes derived), an `nn.constant` from its literal. A matmul whose weight is neither
//! (a function argument) is left as it is, with a note.
//! Guarantees: results are bit-identical, because `bit.ternary_matmul_packed` unpacks by its attributes
//! and then computes exactly what `bit.ternary_matmul` does. Packed bytes go into
//! `PassContext::derived` as `<name>#packed.<layout>` (`[N, Kp/4]` u8) and, when the layout asks for
//! them, per-row sums as `<name>#rowsum.<layout>` (`[N]` i32); a weight shared by several matmuls is
//! packed once. A weight earlier passes derived is packed here; one of the model's own weights is
//! packed when the packed form is loaded (`MemoryWeights::lazy`: the backend reads it once, into
//! its weight blob), so no packed copy of the whole model is held beside the backend's. Not in the default pipeline: a backend adds it with
//! its own layout.
//!
//! Before → after (`tests/filetests/passes/pack_weights.bir`, default layout `i2s-128`):
//! ```text
//! %w = nn.weight {name = "ternary_2x4"} : tensor<2x4xternary>
//! %y = bit.ternary_matmul %q, %s, %w, %g : …
//!   →  %0 = nn.weight {name = "ternary_2x4#packed.i2s-128"} : tensor<2x32xu8>
//!      %y = bit.ternary_matmul_packed %q, %s, %0, %g {block = 128, k = 4, order = "i2s"} : …
//! ```

use crate::{Pass, PassContext, PassError};
use bitnet_ir::attr::{Attr, Attrs};
use bitnet_ir::module::{Function, Module, OpId, Operation};
use bitnet_ir::ops::EvalCtx;
use bitnet_ir::ops::ternary_matmul_packed::{
    PackOrder, RowSum, pack_row, padded_k, row_sum, unpack_row,
};
use bitnet_ir::weights::LazyTensor;
use bitnet_ir::{
    Data, ElemType, NoWeights, OpKind, Tensor, TensorType, ValueId, WeightError, WeightStore,
};
use std::collections::HashMap;
use std::sync::Arc;

/// How long a block is along K.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PackBlock {
    /// Blocks of this many elements (a positive multiple of 4); K is padded to a multiple of it.
    Fixed(usize),
    /// One block per row: K padded to a multiple of 4.
    Row,
}

/// A packed ternary weight layout, as a kernel reads it. Codes are fixed: four 2-bit codes a byte,
/// code = t + 1, padding code 1 (t = 0); the rest varies (see `bit.ternary_matmul_packed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackLayout {
    /// The name used in derived weight names (`<name>#packed.<layout>`) and on the command line.
    pub name: &'static str,
    /// The block length along K, which is padded to a whole number of blocks.
    pub block: PackBlock,
    /// The position of each element's code within its block.
    pub order: PackOrder,
    /// The per-row sums (i32) the kernel needs, if any.
    pub rowsum: Option<RowSum>,
}

/// One packed matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Packed {
    /// `[N, row_bytes]`, row-major.
    pub bytes: Vec<u8>,
    /// Bytes per row (`Kp / 4`).
    pub row_bytes: usize,
    /// The block length used (for `PackBlock::Row`, K padded to a multiple of 4).
    pub block: usize,
    /// The row sums, if the layout asks for them.
    pub rowsum: Option<Vec<i32>>,
}

impl PackLayout {
    /// bitnet.cpp's x86 I2_S: blocks of 128, element j of a block at byte j % 32, shift 6 − 2·(j / 32).
    pub const I2S_128: PackLayout = PackLayout {
        name: "i2s-128",
        block: PackBlock::Fixed(128),
        order: PackOrder::I2s,
        rowsum: None,
    };

    /// A whole row per block, the first element in the low bits of byte 0, with the sum of the codes
    /// per row (for kernels that multiply u8 codes by u8-offset activations).
    pub const LOW_FIRST_ROW: PackLayout = PackLayout {
        name: "low-first-row",
        block: PackBlock::Row,
        order: PackOrder::LowFirst,
        rowsum: Some(RowSum::Codes),
    };

    /// I2_S ordering in blocks of 32 (8 bytes), with the sum of t per row.
    pub const I2S_32: PackLayout = PackLayout {
        name: "i2s-32",
        block: PackBlock::Fixed(32),
        order: PackOrder::I2s,
        rowsum: Some(RowSum::Ternary),
    };

    /// The layouts this crate provides.
    pub const ALL: [PackLayout; 3] = [
        PackLayout::I2S_128,
        PackLayout::LOW_FIRST_ROW,
        PackLayout::I2S_32,
    ];

    /// The layout `PassContext::new` starts with (and `bitnetc opt -p …,pack-weights` uses).
    pub const DEFAULT: PackLayout = PackLayout::I2S_128;

    /// The provided layout called `name`.
    pub fn by_name(name: &str) -> Option<PackLayout> {
        PackLayout::ALL.into_iter().find(|l| l.name == name)
    }

    /// The block length for rows of `k`; `None` if the layout is invalid (a block that is not a
    /// positive multiple of 4) or `k` is 0.
    pub fn block_for(&self, k: usize) -> Option<usize> {
        let block = match self.block {
            PackBlock::Fixed(b) => b,
            PackBlock::Row => k.checked_next_multiple_of(4)?,
        };
        (k > 0 && padded_k(k, block).is_some()).then_some(block)
    }

    /// The block length and the packed bytes of a row of `k`.
    pub fn row_bytes(&self, k: usize) -> Result<(usize, usize), String> {
        let block = self
            .block_for(k)
            .ok_or_else(|| format!("layout {} cannot pack rows of {k}", self.name))?;
        Ok((block, padded_k(k, block).map(|p| p / 4).unwrap_or(0)))
    }

    /// Packs `t` (`n` rows of `k` values in {-1, 0, 1}).
    pub fn pack(&self, t: &[i8], n: usize, k: usize) -> Result<Packed, String> {
        let (block, row_bytes) = self.row_bytes(k)?;
        // Every value in {-1, 0, 1}: the largest v + 1 (as u8, so -1 is 0 and -2 is 255) at most
        // 2. A fold without an early exit, so it vectorizes.
        let largest = t
            .iter()
            .fold(0u8, |acc, &v| acc.max((v as u8).wrapping_add(1)));
        if t.len() != n * k || largest > 2 {
            return Err(format!("not {n}×{k} ternary values"));
        }
        let mut bytes = vec![0u8; n * row_bytes];
        let pack_rows = |t: &[i8], bytes: &mut [u8]| {
            for (row, out) in t.chunks(k.max(1)).zip(bytes.chunks_mut(row_bytes.max(1))) {
                pack_row(row, block, self.order, out);
            }
        };
        // A large weight is packed by as many threads as the machine has (up to 8), each a run of
        // whole rows: the same bytes, in a fraction of the time.
        let threads = std::thread::available_parallelism()
            .map_or(1, |p| p.get())
            .clamp(1, 8)
            .min(n.max(1));
        if threads > 1 && n * k >= 1 << 20 {
            let rows = n.div_ceil(threads);
            std::thread::scope(|s| {
                for (t, bytes) in t
                    .chunks(rows * k.max(1))
                    .zip(bytes.chunks_mut(rows * row_bytes.max(1)))
                {
                    s.spawn(move || pack_rows(t, bytes));
                }
            });
        } else {
            pack_rows(t, &mut bytes);
        }
        let rowsum = self
            .rowsum
            .map(|kind| t.chunks(k).map(|row| row_sum(row, kind)).collect());
        Ok(Packed {
            bytes,
            row_bytes,
            block,
            rowsum,
        })
    }

    /// Unpacks `n` rows of `k` (the inverse of `pack`); errors on invalid codes or padding.
    pub fn unpack(&self, packed: &Packed, n: usize, k: usize) -> Result<Vec<i8>, String> {
        let mut t = vec![0i8; n * k];
        for (row, out) in packed
            .bytes
            .chunks(packed.row_bytes.max(1))
            .zip(t.chunks_mut(k.max(1)))
        {
            unpack_row(row, packed.block, self.order, out)?;
        }
        Ok(t)
    }
}

/// The `pack-weights` pass.
pub struct PackWeights;

impl Pass for PackWeights {
    fn name(&self) -> &'static str {
        "pack-weights"
    }

    fn summary(&self) -> &'static str {
        "pack ternary weights into the pass context's layout; bit.ternary_matmul → bit.ternary_matmul_packed"
    }

    fn run(&self, module: &mut Module, cx: &mut PassContext) -> Result<bool, PassError> {
        let mut changed = false;
        for f in &mut module.functions {
            changed |= pack_function(f, cx)?;
        }
        Ok(changed)
    }
}

fn fail(message: String) -> PassError {
    PassError::Failed {
        pass: "pack-weights",
        message,
    }
}

/// Where a weight's values come from (one the passes hold or a literal; a model's own weight is
/// `model_weight`'s).
enum Source {
    Named(String),
    Literal,
}

/// The name of weight `w` when it is one of the model's own (an `nn.weight` that no earlier pass
/// derived): it is packed when the backend loads the packed form (`MemoryWeights::lazy`), straight
/// from the model's file, so no packed copy of the whole model is held beside the backend's.
fn model_weight<'f>(f: &'f Function, cx: &PassContext, w: ValueId) -> Option<&'f str> {
    let op = f.op(f.def_op(w)?);
    let name = op.attrs.str("name")?;
    (op.kind == OpKind::Weight && !cx.derived.contains(name) && cx.weights.is_some())
        .then_some(name)
}

/// The values of weight `w` (`[n, k]` ternary), if it is an `nn.weight` or `nn.constant`.
fn weight_values(
    f: &Function,
    cx: &PassContext,
    w: ValueId,
    shape: &[usize],
) -> Result<Option<(Source, Vec<i8>)>, PassError> {
    let Some(def) = f.def_op(w) else {
        return Ok(None);
    };
    let op = f.op(def);
    let (source, tensor) = match (op.kind, op.attrs.str("name")) {
        (OpKind::Weight, Some(name)) => {
            let t = cx
                .weights_after()
                .load(name, ElemType::Ternary, shape)
                .map_err(|e| fail(e.to_string()))?;
            (Source::Named(name.to_string()), t)
        }
        (OpKind::Constant, _) => {
            let cx = EvalCtx {
                inputs: &[],
                attrs: &op.attrs,
                result_shapes: &[shape.to_vec()],
                result_elems: &[ElemType::Ternary],
                weights: &NoWeights,
            };
            let mut out = OpKind::Constant.eval(&cx).map_err(fail)?;
            let t = out.pop().ok_or_else(|| fail("empty constant".into()))?;
            (Source::Literal, t)
        }
        _ => return Ok(None),
    };
    let Data::Ternary(v) = tensor.data else {
        return Err(fail(format!("weight %{} is not ternary", w.0)));
    };
    Ok(Some((source, v)))
}

/// Inserts the op that provides a packed tensor: a derived weight, or a literal.
fn provide(
    f: &mut Function,
    cx: &mut PassContext,
    anchor: OpId,
    name: Option<String>,
    tensor: Tensor,
) -> ValueId {
    let ty = tensor.ty();
    let (kind, attrs) = match name {
        Some(name) => {
            cx.derived.tensors.insert(name.clone(), tensor);
            (OpKind::Weight, Attrs::new().with("name", Attr::Str(name)))
        }
        None => (
            OpKind::Constant,
            Attrs::new().with("value", Attr::Ints(tensor.data.to_i64())),
        ),
    };
    f.insert_op_before(anchor, kind, Vec::new(), attrs, vec![ty])[0]
}

/// Inserts an `nn.weight` of type `ty` named `name`, made by `make` when loaded.
fn provide_lazy(
    f: &mut Function,
    cx: &mut PassContext,
    anchor: OpId,
    name: &str,
    make: LazyTensor,
    ty: TensorType,
) -> ValueId {
    cx.derived.lazy.insert(name.to_string(), make);
    let attrs = Attrs::new().with("name", Attr::Str(name.to_string()));
    f.insert_op_before(anchor, OpKind::Weight, Vec::new(), attrs, vec![ty])[0]
}

/// A weight's values (`[n, k]`, with their source) packed now, as derived `nn.weight`s (a
/// literal: as `nn.constant`s), with the row sums when the layout has them; adds the packed bytes
/// to `bytes`.
fn provide_pack(
    f: &mut Function,
    cx: &mut PassContext,
    mm: OpId,
    (source, values): (Source, Vec<i8>),
    n: usize,
    k: usize,
    bytes: &mut usize,
) -> Result<PackedWeight, PassError> {
    let layout = cx.pack_layout;
    let (pname, sname) = match &source {
        Source::Named(name) => (
            Some(format!("{name}#packed.{}", layout.name)),
            Some(format!("{name}#rowsum.{}", layout.name)),
        ),
        Source::Literal => (None, None),
    };
    let p = layout.pack(&values, n, k).map_err(fail)?;
    *bytes += p.bytes.len();
    let pt = Tensor::new(vec![n, p.row_bytes], Data::U8(p.bytes))
        .ok_or_else(|| fail("internal: packed shape".into()))?;
    let wp = provide(f, cx, mm, pname, pt);
    let rs = match p.rowsum {
        Some(sums) => {
            let st = Tensor::new(vec![n], Data::I32(sums))
                .ok_or_else(|| fail("internal: row-sum shape".into()))?;
            Some(provide(f, cx, mm, sname, st))
        }
        None => None,
    };
    Ok((wp, rs, p.block, k))
}

/// The packed form (and row sums, when the layout has them) of model weight `name` (`[n, k]`), as
/// `nn.weight`s made when loaded (`lazy_pack`); adds the packed bytes to `bytes`.
fn provide_lazy_pack(
    f: &mut Function,
    cx: &mut PassContext,
    mm: OpId,
    name: &str,
    n: usize,
    k: usize,
    bytes: &mut usize,
) -> Result<PackedWeight, PassError> {
    let layout = cx.pack_layout;
    let (block, row_bytes) = layout.row_bytes(k).map_err(fail)?;
    *bytes += n * row_bytes;
    let wp = provide_lazy(
        f,
        cx,
        mm,
        &format!("{name}#packed.{}", layout.name),
        lazy_pack(name, layout, n, k, false),
        TensorType::of(&[n as u64, row_bytes as u64], ElemType::U8),
    );
    let rs = layout.rowsum.map(|_| {
        provide_lazy(
            f,
            cx,
            mm,
            &format!("{name}#rowsum.{}", layout.name),
            lazy_pack(name, layout, n, k, true),
            TensorType::of(&[n as u64], ElemType::I32),
        )
    });
    Ok((wp, rs, block, k))
}

/// Model weight `name` (`[n, k]` ternary) packed in `layout` when loaded: the packed bytes
/// `[n, row_bytes]`, or with `rowsum` the row sums `[n]`.
fn lazy_pack(name: &str, layout: PackLayout, n: usize, k: usize, rowsum: bool) -> LazyTensor {
    let name = name.to_string();
    LazyTensor(Arc::new(move |store: &dyn WeightStore| {
        let failed = |reason: String| WeightError::Read {
            name: format!("{name}#packed.{}", layout.name),
            store: store.describe(),
            reason,
        };
        let t = store.load(&name, ElemType::Ternary, &[n, k])?;
        let Data::Ternary(values) = t.data else {
            return Err(failed(format!("weight \"{name}\" is not ternary")));
        };
        let p = layout.pack(&values, n, k).map_err(failed)?;
        drop(values);
        let packed = match (rowsum, p.rowsum) {
            (false, _) => Tensor::new(vec![n, p.row_bytes], Data::U8(p.bytes)),
            (true, Some(sums)) => Tensor::new(vec![n], Data::I32(sums)),
            (true, None) => None,
        };
        packed.ok_or_else(|| failed("internal: packed shape".into()))
    }))
}

/// Replaces matmul `mm` (`op`) by its packed form over `entry`.
fn rewrite(f: &mut Function, mm: OpId, op: &Operation, entry: PackedWeight, layout: PackLayout) {
    let (wp, rs, block, k) = entry;
    let Some(&y) = op.results.first() else {
        return;
    };
    let mut operands = vec![op.operands[0], op.operands[1], wp, op.operands[3]];
    let mut attrs = Attrs::new()
        .with("block", Attr::Int(block as i64))
        .with("k", Attr::Int(k as i64))
        .with("order", Attr::Str(layout.order.name().to_string()));
    if let (Some(rs), Some(kind)) = (rs, layout.rowsum) {
        operands.push(rs);
        attrs = attrs.with("rowsum", Attr::Str(kind.name().to_string()));
    }
    operands.extend(op.operands.get(4).copied());
    let ty: TensorType = f.ty(y).clone();
    let new = f.insert_op_before(mm, OpKind::TernaryMatmulPacked, operands, attrs, vec![ty]);
    f.replace_uses(y, new[0]);
    f.values[new[0].index()].name = f.values[y.index()].name.take();
}

/// A value's name for notes (its text name, or its number).
fn display_name(f: &Function, v: ValueId) -> String {
    f.value(v).name.clone().unwrap_or_else(|| v.0.to_string())
}

/// What a packed weight became: the packed value, the row sums, the block and K.
type PackedWeight = (ValueId, Option<ValueId>, usize, usize);

fn pack_function(f: &mut Function, cx: &mut PassContext) -> Result<bool, PassError> {
    let layout = cx.pack_layout;
    let matmuls: Vec<OpId> = f
        .op_order()
        .filter(|&o| f.op(o).kind == OpKind::TernaryMatmul)
        .collect();
    let mut packed: HashMap<ValueId, PackedWeight> = HashMap::new();
    let (mut rewritten, mut bytes) = (0usize, 0usize);
    for mm in matmuls {
        let op = f.op(mm).clone();
        let (Some(&w), Some(&y)) = (op.operands.get(2), op.results.first()) else {
            continue;
        };
        let entry = match packed.get(&w) {
            Some(&e) => e,
            None => {
                let [n, k] = match f.ty(w).static_shape().as_deref() {
                    Some(&[n, k]) => [n as usize, k as usize],
                    _ => {
                        cx.notes.push(format!(
                            "pack-weights @{}: matmul %{} has a weight of type {}; left unpacked",
                            f.name,
                            display_name(f, y),
                            f.ty(w)
                        ));
                        continue;
                    }
                };
                let e = match model_weight(f, cx, w).map(str::to_string) {
                    Some(name) => provide_lazy_pack(f, cx, mm, &name, n, k, &mut bytes)?,
                    None => {
                        let Some(held) = weight_values(f, cx, w, &[n, k])? else {
                            cx.notes.push(format!(
                                "pack-weights @{}: matmul %{}'s weight is neither nn.weight nor nn.constant; left unpacked",
                                f.name,
                                display_name(f, y)
                            ));
                            continue;
                        };
                        provide_pack(f, cx, mm, held, n, k, &mut bytes)?
                    }
                };
                packed.insert(w, e);
                e
            }
        };
        rewrite(f, mm, &op, entry, layout);
        rewritten += 1;
    }
    if rewritten == 0 {
        return Ok(false);
    }
    cx.notes.push(format!(
        "pack-weights @{}: {rewritten} matmul(s) over {} packed weight(s) in layout {} ({bytes} bytes)",
        f.name,
        packed.len(),
        layout.name
    ));
    f.remove_dead_ops();
    Ok(true)
}
