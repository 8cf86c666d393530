//! The importer's values: every ONNX value (and every intermediate a decomposition makes) is a
//! handle to a run-time IR value, a constant known at import, or a large initializer. Ops go through
//! `Importer::emit`, which folds an op whose operands are all known constants with the op's own
//! `eval` (so folding and running agree by construction) and otherwise appends it to the function.
//! Known constants become IR values only when a run-time op uses them: small ones as `nn.constant`
//! literals, larger ones as `nn.weight` references to the tensor kept in `OnnxWeights`.

use super::ImportOptions;
use super::weights::OnnxWeights;
use bitnet_ir::attr::{Attr, Attrs};
use bitnet_ir::builder::FunctionBuilder;
use bitnet_ir::ops::{EvalCtx, InferCtx};
use bitnet_ir::tensor::checked_numel;
use bitnet_ir::{Data, ElemType, NoWeights, OpKind, Tensor, TensorType, ValueId};
use std::collections::HashSet;

/// A handle to an importer value.
pub(crate) type H = usize;

/// The largest result (in elements) that is folded at import; larger ones are left to run time.
const FOLD_MAX: usize = 1 << 20;

/// What the importer knows about a value.
pub(crate) enum Val {
    /// Computed at run time by IR value `id`.
    Runtime { ty: TensorType, id: ValueId },
    /// Known at import; `id` is its IR value once a run-time op has used it.
    Known {
        t: Tensor,
        id: Option<ValueId>,
        name: Option<String>,
    },
    /// A large initializer, read from the weight store at run time.
    Weight {
        ty: TensorType,
        name: String,
        id: Option<ValueId>,
    },
}

/// The function being built, its values and its weights.
pub(crate) struct Importer<'a> {
    pub opts: &'a ImportOptions,
    pub b: FunctionBuilder,
    pub weights: OnnxWeights,
    vals: Vec<Val>,
    named: HashSet<ValueId>,
    args: HashSet<ValueId>,
}

/// True if constants of this element type print exactly as `nn.constant` literals (f64 literals
/// would be rounded to f32 by `nn.constant`, so f64 tensors always go to the weight store).
fn literal_type(elem: ElemType) -> bool {
    !matches!(elem, ElemType::F64 | ElemType::Ternary)
}

/// A value name usable in the IR text (`[A-Za-z0-9_.]+`).
pub(crate) fn ir_name(onnx: &str) -> String {
    let s: String = onnx
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "v".into() } else { s }
}

impl<'a> Importer<'a> {
    pub(crate) fn new(opts: &'a ImportOptions, weights: OnnxWeights) -> Self {
        Importer {
            opts,
            b: FunctionBuilder::new("main"),
            weights,
            vals: Vec::new(),
            named: HashSet::new(),
            args: HashSet::new(),
        }
    }

    pub(crate) fn push(&mut self, v: Val) -> H {
        self.vals.push(v);
        self.vals.len() - 1
    }

    /// A function argument of type `ty`, named after the graph input.
    pub(crate) fn arg(&mut self, onnx: &str, ty: TensorType) -> H {
        let id = self.b.arg(&ir_name(onnx), ty.clone());
        self.args.insert(id);
        self.named.insert(id);
        self.push(Val::Runtime { ty, id })
    }

    /// A large initializer, loaded from the weight store when the function runs.
    pub(crate) fn weight(&mut self, name: &str, ty: TensorType) -> H {
        self.push(Val::Weight {
            ty,
            name: name.to_string(),
            id: None,
        })
    }

    /// A constant known at import.
    pub(crate) fn known_tensor(&mut self, t: Tensor, name: Option<String>) -> H {
        self.push(Val::Known { t, id: None, name })
    }

    /// A scalar constant of element type `elem`.
    pub(crate) fn scalar(&mut self, value: f64, elem: ElemType) -> H {
        let t = Tensor {
            shape: Vec::new(),
            data: Data::from_f64(elem, vec![value]),
        };
        self.known_tensor(t, None)
    }

    /// The type of a value.
    pub(crate) fn ty(&self, h: H) -> TensorType {
        match &self.vals[h] {
            Val::Runtime { ty, .. } | Val::Weight { ty, .. } => ty.clone(),
            Val::Known { t, .. } => t.ty(),
        }
    }

    /// The value, if it is known at import.
    pub(crate) fn known(&self, h: H) -> Option<&Tensor> {
        match &self.vals[h] {
            Val::Known { t, .. } => Some(t),
            Val::Runtime { .. } | Val::Weight { .. } => None,
        }
    }

    /// True unless the value is only computed at run time.
    pub(crate) fn is_static(&self, h: H) -> bool {
        !matches!(self.vals[h], Val::Runtime { .. })
    }

    /// The value of an input that must be known at import (a shape, axes, slice bounds…): a
    /// constant, a folded value or an initializer. `what` names the input for the error.
    pub(crate) fn constant(&self, h: H, what: &str) -> Result<Tensor, String> {
        match &self.vals[h] {
            Val::Known { t, .. } => Ok(t.clone()),
            Val::Weight { name, .. } => self.weights.read(name).map_err(|e| e.to_string()),
            Val::Runtime { id, .. } => {
                let arg = self.args.contains(id);
                Err(format!(
                    "{what} must be a constant (an initializer, a Constant node or a value computable \
                     at import), but it is {}",
                    if arg {
                        "a graph input (freeze it with ImportOptions::freeze_inputs)"
                    } else {
                        "computed at run time"
                    }
                ))
            }
        }
    }

    /// Gives the IR value of `h` a name (once; later names of the same value are dropped).
    pub(crate) fn name(&mut self, h: H, onnx: &str) {
        if let Val::Runtime { id, .. } = self.vals[h]
            && self.named.insert(id)
        {
            self.b.name(id, &ir_name(onnx));
        }
    }

    /// The IR value of `h`, creating the `nn.constant` or `nn.weight` op of a constant on first use.
    pub(crate) fn materialize(&mut self, h: H) -> Result<ValueId, String> {
        let (t, name) = match &self.vals[h] {
            Val::Runtime { id, .. } => return Ok(*id),
            Val::Known { id: Some(id), .. } | Val::Weight { id: Some(id), .. } => return Ok(*id),
            Val::Weight { ty, name, .. } => {
                let attrs = Attrs::new().with("name", Attr::Str(name.clone()));
                let id = self.op(OpKind::Weight, &[], attrs, Some(ty.clone()))?;
                if let Val::Weight { id: slot, .. } = &mut self.vals[h] {
                    *slot = Some(id);
                }
                return Ok(id);
            }
            Val::Known { t, name, .. } => (t.clone(), name.clone()),
        };
        let ty = t.ty();
        let id = if t.numel() <= self.opts.literal_max && literal_type(t.elem()) {
            let value = if t.elem().is_float() {
                Attr::Floats(t.data.to_f64())
            } else {
                Attr::Ints(t.data.to_i64())
            };
            self.op(
                OpKind::Constant,
                &[],
                Attrs::new().with("value", value),
                Some(ty),
            )?
        } else {
            let base = name.unwrap_or_else(|| "onnx.folded".into());
            let mut wname = base.clone();
            let mut k = 1;
            while self.weights.contains(&wname) {
                wname = format!("{base}#{k}");
                k += 1;
            }
            self.weights.add_memory(&wname, t);
            let attrs = Attrs::new().with("name", Attr::Str(wname));
            self.op(OpKind::Weight, &[], attrs, Some(ty))?
        };
        if let Val::Known { id: slot, .. } = &mut self.vals[h] {
            *slot = Some(id);
        }
        Ok(id)
    }

    fn op(
        &mut self,
        kind: OpKind,
        operands: &[ValueId],
        attrs: Attrs,
        declared: Option<TensorType>,
    ) -> Result<ValueId, String> {
        let r = self
            .b
            .op_typed(kind, operands, attrs, declared.into_iter().collect())?;
        r.first()
            .copied()
            .ok_or_else(|| format!("{} has no result", kind.name()))
    }

    /// Applies `kind` to `ins`: folded at import when every operand is a known constant (and the
    /// result is not huge), else appended to the function. `declared` is the result type of ops
    /// whose type the operands do not determine (reshape, expand).
    pub(crate) fn emit(
        &mut self,
        kind: OpKind,
        ins: &[H],
        attrs: Attrs,
        declared: Option<TensorType>,
    ) -> Result<H, String> {
        let foldable = !ins.is_empty() && ins.iter().all(|&h| self.known(h).is_some());
        if foldable && let Some(t) = self.fold(kind, ins, &attrs, declared.as_ref())? {
            return Ok(self.known_tensor(t, None));
        }
        let ids = ins
            .iter()
            .map(|&h| self.materialize(h))
            .collect::<Result<Vec<_>, _>>()?;
        let id = self.op(kind, &ids, attrs, declared)?;
        let ty = self.b.ty(id).clone();
        Ok(self.push(Val::Runtime { ty, id }))
    }

    /// `nn.cast` of `x` to `to`, or `x` itself when its type does not change.
    pub(crate) fn cast(&mut self, x: H, to: ElemType) -> Result<H, String> {
        if self.ty(x).elem == to {
            return Ok(x);
        }
        self.emit1(OpKind::Cast, &[x], Attrs::new().with("to", Attr::Type(to)))
    }

    /// `emit` with no declared type.
    pub(crate) fn emit1(&mut self, kind: OpKind, ins: &[H], attrs: Attrs) -> Result<H, String> {
        self.emit(kind, ins, attrs, None)
    }

    /// Evaluates `kind` on known operands; `None` if the result is too large to fold.
    fn fold(
        &self,
        kind: OpKind,
        ins: &[H],
        attrs: &Attrs,
        declared: Option<&TensorType>,
    ) -> Result<Option<Tensor>, String> {
        let spec = kind.spec();
        if !spec.operands.accepts(ins.len()) {
            return Err(format!(
                "{} takes {} operands, given {}",
                spec.name,
                spec.operands.describe(),
                ins.len()
            ));
        }
        let tensors: Vec<&Tensor> = ins.iter().filter_map(|&h| self.known(h)).collect();
        let types: Vec<TensorType> = tensors.iter().map(|t| t.ty()).collect();
        let declared: Vec<TensorType> = declared.cloned().into_iter().collect();
        let cx = InferCtx {
            operands: &types,
            attrs,
            declared: &declared,
        };
        let out = kind.infer(&cx).map_err(|m| format!("{}: {m}", spec.name))?;
        let mut shapes = Vec::with_capacity(out.len());
        for t in &out {
            let shape: Option<Vec<usize>> = t
                .static_shape()
                .and_then(|s| s.into_iter().map(|d| usize::try_from(d).ok()).collect());
            match shape {
                Some(s) if checked_numel(&s).is_some_and(|n| n <= FOLD_MAX) => shapes.push(s),
                _ => return Ok(None),
            }
        }
        let elems: Vec<ElemType> = out.iter().map(|t| t.elem).collect();
        let cx = EvalCtx {
            inputs: &tensors,
            attrs,
            result_shapes: &shapes,
            result_elems: &elems,
            weights: &NoWeights,
        };
        let r = kind.eval(&cx).map_err(|m| format!("{}: {m}", spec.name))?;
        Ok(r.into_iter().next())
    }
}
