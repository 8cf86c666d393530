//! The weights blob of a lowering: each constant's bytes placed once, 64-byte aligned, keyed by what
//! they are (a named weight in an element type, a literal, a derived form, a RoPE table), and the
//! index of every `nn.weight` by name (`PlacedWeight`).
//!
//! Constants that are not plain weights or literals (a transposed weight, the reciprocal of a
//! scale) are evaluated here at compile time through the ops' reference `eval`, so the bytes a
//! kernel reads are exactly what the interpreter computes. The derived forms (bf16 pairs, f16 rows,
//! int8 rows) are in `super::derived`.

use super::{input, unsupported};
use crate::BackendError;
use crate::kernel::HalfFormat;
use bitnet_ir::module::{Function, ValueDef};
use bitnet_ir::{Data, ElemType, OpKind, StoredFile, Tensor, ValueId, WeightStore};
use bitnet_runtime::{AlignedBytes, BufRef, Region};
use std::collections::{BTreeMap, BTreeSet};

/// Where a named weight (an `nn.weight`, original or derived) is in the weights blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedWeight {
    /// Its bytes in the blob.
    pub buf: BufRef,
    /// The element type of those bytes (little endian).
    pub elem: ElemType,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Each row (the last axis) is in `crate::kernel::layout::layout` order rather than in index
    /// order (an exactly-bf16 embedding table or lm_head, stored once for both).
    pub paired: bool,
}

/// The weights blob being built: each weight value's bytes once, 64-byte aligned.
pub(super) struct Blob<'a> {
    /// The bytes placed so far.
    pub(super) bytes: AlignedBytes,
    /// Every placement by its key, so that a constant read by several launches is placed once.
    placed: BTreeMap<String, BufRef>,
    /// Each `nn.weight` name placed, with the first placement of it.
    pub(super) weights: BTreeMap<String, PlacedWeight>,
    /// The constants found not to be exactly bf16 or f16 (`inexact_key`), so that a table is not
    /// evaluated again to find it out again (the embedding and a tied lm_head both ask).
    pub(super) inapplicable: BTreeSet<String>,
    pub(super) store: &'a dyn WeightStore,
}

impl<'a> Blob<'a> {
    /// An empty blob for the constants of `f`, reading weights from `store`, with address space
    /// reserved for everything `f` can place given a context of `context` tokens.
    pub(super) fn new(f: &Function, context: u64, store: &'a dyn WeightStore) -> Blob<'a> {
        Blob {
            bytes: AlignedBytes::with_capacity(capacity(f, context)),
            placed: BTreeMap::new(),
            weights: BTreeMap::new(),
            inapplicable: BTreeSet::new(),
            store,
        }
    }

    /// The placement under `key`, if any.
    pub(super) fn placed(&self, key: &str) -> Option<BufRef> {
        self.placed.get(key).copied()
    }

    /// Places `data` under `key`, unless something was placed under it before (then that).
    pub(super) fn push(&mut self, key: String, data: &[u8]) -> BufRef {
        self.push_with(key, data.len(), |dst| dst.copy_from_slice(data))
    }

    /// Places `data`'s elements, little endian, under `key` (as `push`), converted straight into
    /// the blob: no byte copy of a large weight is made first.
    pub(super) fn push_data(&mut self, key: String, data: &Data) -> BufRef {
        self.push_with(key, data.le_byte_len(), |dst| data.write_le_bytes(dst))
    }

    /// Places `len` bytes that `fill` writes in place under `key` (as `push`).
    pub(super) fn push_with(
        &mut self,
        key: String,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> BufRef {
        if let Some(b) = self.placed.get(&key) {
            return *b;
        }
        let offset = self.bytes.push_with(len, fill);
        let b = BufRef {
            region: Region::Weights,
            offset,
            bytes: len as u64,
        };
        self.placed.insert(key, b);
        b
    }

    /// Places `len` bytes that `fill` writes under `key` (as `push_with`); when they are the bytes
    /// of `source` (a store's tensor in its file), by `AlignedBytes::push_file`, which maps the
    /// file's pages where the file's alignment allows rather than calling `fill`.
    pub(super) fn push_file(
        &mut self,
        key: String,
        len: usize,
        source: Option<&StoredFile>,
        fill: impl FnOnce(&mut [u8]),
    ) -> BufRef {
        let Some(source) = source.filter(|s| s.len == len as u64) else {
            return self.push_with(key, len, fill);
        };
        if let Some(b) = self.placed.get(&key) {
            return *b;
        }
        let offset = self.bytes.push_file(len, &source.file, source.offset, fill);
        let b = BufRef {
            region: Region::Weights,
            offset,
            bytes: len as u64,
        };
        self.placed.insert(key, b);
        b
    }

    /// A constant value (an `nn.weight` or `nn.constant`), converted to `elem`.
    pub(super) fn constant(
        &mut self,
        f: &Function,
        v: ValueId,
        elem: ElemType,
    ) -> Result<BufRef, BackendError> {
        let shape = static_shape(f, v)?;
        let op = f
            .def_op(v)
            .map(|o| f.op(o))
            .ok_or_else(|| input("a weight operand is not defined by an op"))?;
        let name = (op.kind == OpKind::Weight).then(|| op.attrs.str("name").unwrap_or_default());
        let key = match name {
            Some(name) => format!("w:{name}:{elem}"),
            None => format!("c:{}:{elem}", v.0),
        };
        if let Some(b) = self.placed.get(&key) {
            return Ok(*b);
        }
        let inexact = (elem == ElemType::BF16).then(|| inexact_key(f, v, HalfFormat::Bf16));
        if inexact
            .as_ref()
            .is_some_and(|k| self.inapplicable.contains(k))
        {
            return Err(input("not every value is exactly a bf16"));
        }
        // The evaluated tensor is consumed: an f32 weight is placed from its own storage.
        let tensor = self.evaluate(f, v, &shape)?;
        let data = match elem {
            ElemType::F32 => Data::F32(tensor.data.into_f32()),
            ElemType::U8 | ElemType::I32 => tensor.data,
            // Only when exact: every value must be a bf16 (the low half of its f32 bits zero).
            ElemType::BF16 => {
                let v = tensor.data.into_f32();
                if v.iter().any(|x| x.to_bits() & 0xffff != 0) {
                    self.inapplicable.extend(inexact);
                    return Err(input("not every value is exactly a bf16"));
                }
                Data::from_f32(ElemType::BF16, v)
            }
            ElemType::F64
            | ElemType::F16
            | ElemType::I8
            | ElemType::I16
            | ElemType::I64
            | ElemType::U16
            | ElemType::U32
            | ElemType::U64
            | ElemType::Bool
            | ElemType::Ternary => {
                return Err(input(format!(
                    "weights of type {elem} are not supported by the cpu backend"
                )));
            }
        };
        let buf = self.push_data(key, &data);
        if let Some(name) = name {
            self.record(name, buf, data.elem(), &shape, false);
        }
        Ok(buf)
    }

    /// Records where weight `name` is (its rows in `layout` order when `paired`), unless it was
    /// placed before.
    pub(super) fn record(
        &mut self,
        name: &str,
        buf: BufRef,
        elem: ElemType,
        shape: &[usize],
        paired: bool,
    ) {
        self.weights
            .entry(name.to_string())
            .or_insert_with(|| PlacedWeight {
                buf,
                elem,
                shape: shape.iter().map(|&d| d as u64).collect(),
                paired,
            });
    }

    /// Places every `nn.weight` of `f` that no launch reads (for example one only used by ops
    /// evaluated at compile time), as its declared type, so the blob holds every weight `f` names.
    pub(super) fn place_remaining(&mut self, f: &Function) -> Result<(), BackendError> {
        for id in f.op_order() {
            let op = f.op(id);
            if op.kind != OpKind::Weight {
                continue;
            }
            let name = op.attrs.str("name").unwrap_or_default();
            if self.weights.contains_key(name) {
                continue;
            }
            let v = op
                .results
                .first()
                .copied()
                .ok_or_else(|| input(format!("weight \"{name}\" has no result")))?;
            let ty = f.ty(v);
            let shape: Vec<usize> = ty
                .static_shape()
                .ok_or_else(|| input(format!("weight \"{name}\" has a symbolic shape")))?
                .into_iter()
                .map(|d| d as usize)
                .collect();
            let tensor = self
                .store
                .load(name, ty.elem, &shape)
                .map_err(|e| input(format!("loading weight \"{name}\": {e}")))?;
            let buf = self.push_data(format!("w:{name}:{}", ty.elem), &tensor.data);
            self.record(name, buf, tensor.data.elem(), &shape, false);
        }
        Ok(())
    }

    /// The value of a constant `v` (a weight, a literal, or an op on constants such as the reciprocal
    /// of a weight scale), evaluated at compile time by the ops' reference `eval`.
    pub(super) fn evaluate(
        &self,
        f: &Function,
        v: ValueId,
        shape: &[usize],
    ) -> Result<Tensor, BackendError> {
        let ty = f.ty(v);
        let (op_id, index) = match f.value(v).def {
            ValueDef::OpResult { op, index } => (op, index as usize),
            ValueDef::Arg(_) | ValueDef::Undefined => {
                return Err(input(format!("value {} is not a constant", v.0)));
            }
        };
        let op = f.op(op_id);
        if op.kind == OpKind::Weight {
            let name = op.attrs.str("name").unwrap_or_default();
            return self
                .store
                .load(name, ty.elem, shape)
                .map_err(|e| input(format!("loading weight \"{name}\": {e}")));
        }
        if !is_constant(f, v) {
            return Err(unsupported(
                op.kind.name(),
                "an operand that must be a constant is computed at run time",
            ));
        }
        let mut inputs = Vec::with_capacity(op.operands.len());
        for &x in &op.operands {
            inputs.push(self.evaluate(f, x, &static_shape(f, x)?)?);
        }
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let shapes: Vec<Vec<usize>> = op
            .results
            .iter()
            .map(|r| {
                f.ty(*r)
                    .static_shape()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|d| d as usize)
                    .collect()
            })
            .collect();
        let elems: Vec<ElemType> = op.results.iter().map(|r| f.ty(*r).elem).collect();
        let cx = bitnet_ir::ops::EvalCtx {
            inputs: &refs,
            attrs: &op.attrs,
            result_shapes: &shapes,
            result_elems: &elems,
            weights: self.store,
        };
        let mut out = op
            .kind
            .eval(&cx)
            .map_err(|m| input(format!("{}: {m}", op.kind.name())))?;
        if index < out.len() {
            Ok(out.swap_remove(index))
        } else {
            Err(input("missing constant result"))
        }
    }
}

/// The key under which `Blob::inapplicable` remembers that constant `v` is not exactly a `format`
/// number: one fact shared by its pairs and (bf16) its index-order placement, so a tied embedding
/// and lm_head read an inexact table once to find it out, not once per form.
pub(super) fn inexact_key(f: &Function, v: ValueId, format: HalfFormat) -> String {
    format!("inexact-{}:{}", format.name(), constant_id(f, v))
}

/// How blob keys name constant `v`: `w:<name>` for an `nn.weight` (one placement per weight,
/// whichever value reads it), `c:<value>` for any other constant.
pub(super) fn constant_id(f: &Function, v: ValueId) -> String {
    match weight_name(f, v) {
        Some(name) => format!("w:{name}"),
        None => format!("c:{}", v.0),
    }
}

/// The name of the `nn.weight` that defines `v`, if one does.
pub(super) fn weight_name(f: &Function, v: ValueId) -> Option<&str> {
    let op = f.op(f.def_op(v)?);
    (op.kind == OpKind::Weight).then(|| op.attrs.str("name").unwrap_or_default())
}

/// The static shape of constant `v`.
pub(super) fn static_shape(f: &Function, v: ValueId) -> Result<Vec<usize>, BackendError> {
    Ok(f.ty(v)
        .static_shape()
        .ok_or_else(|| input(format!("constant {} has a symbolic shape", v.0)))?
        .into_iter()
        .map(|d| d as usize)
        .collect())
}

/// True for the ops whose results are constants by themselves (weights and literals): every op on
/// them alone is evaluated at compile time. The table's `Free` entries are exactly these (its tests
/// check it).
pub(super) fn is_constant_source(op: OpKind) -> bool {
    matches!(op, OpKind::Weight | OpKind::Constant)
}

/// True if `v` is computed from weights and literals alone.
pub(super) fn is_constant(f: &Function, v: ValueId) -> bool {
    match f.value(v).def {
        ValueDef::OpResult { op, .. } => {
            let o = f.op(op);
            is_constant_source(o.kind)
                || (!o.operands.is_empty() && o.operands.iter().all(|&x| is_constant(f, x)))
        }
        ValueDef::Arg(_) | ValueDef::Undefined => false,
    }
}

/// An upper bound of the blob's bytes when every constant is placed once, as f32 or narrower
/// (derived layouts of a weight are no wider than f32), plus the RoPE tables: the address space
/// reserved up front so the blob is never copied while it grows. An op missing here only costs a
/// copy of the blob, never a different byte.
fn capacity(f: &Function, context: u64) -> usize {
    let mut bytes = 0u64;
    for id in f.op_order() {
        let op = f.op(id);
        let Some(&r) = op.results.first() else {
            continue;
        };
        let numel = || {
            f.ty(r)
                .static_shape()
                .map_or(0, |s| s.iter().product::<u64>())
        };
        let add = if is_constant_source(op.kind) {
            numel().saturating_mul(4) + 64
        } else if op.kind == OpKind::Rope {
            context
                .saturating_mul(op.attrs.int_or("head_dim", 0).max(0) as u64)
                .saturating_mul(4)
                .saturating_add(64)
        } else {
            0
        };
        bytes = bytes.saturating_add(add);
    }
    usize::try_from(bytes).unwrap_or(usize::MAX)
}
