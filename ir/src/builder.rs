//! A builder for functions made by code (importers, passes): it infers each op's result types with the
//! op's own `infer`, so IR built here is well-typed by construction or the builder says why not.
//!
//! ```
//! use bitnet_ir::builder::FunctionBuilder;
//! use bitnet_ir::{Attrs, ElemType, OpKind, TensorType};
//! let mut b = FunctionBuilder::new("main");
//! let t = b.symbol("T", 4096);
//! let x = b.arg("x", TensorType::new(vec![t, bitnet_ir::Dim::Static(128)], ElemType::F32));
//! let y = b.op1(OpKind::Relu2, &[x], Attrs::new()).unwrap();
//! let f = b.finish(&[y]);
//! assert!(bitnet_ir::verify::verify_function(&f).is_empty());
//! ```

use crate::attr::Attrs;
use crate::module::{Function, ValueId};
use crate::ops::{InferCtx, OpKind};
use crate::types::{Dim, SymbolDecl, TensorType};

/// Builds one function, op by op.
pub struct FunctionBuilder {
    func: Function,
}

impl FunctionBuilder {
    /// A builder for a function called `name`.
    pub fn new(name: &str) -> Self {
        FunctionBuilder {
            func: Function::new(name),
        }
    }

    /// Declares a dimension symbol with its upper bound and returns it as a `Dim`.
    pub fn symbol(&mut self, name: &str, max: u64) -> Dim {
        self.func.symbols.push(SymbolDecl {
            name: name.to_string(),
            max,
        });
        Dim::Sym(name.to_string())
    }

    /// Adds an argument.
    pub fn arg(&mut self, name: &str, ty: TensorType) -> ValueId {
        self.func.add_arg(Some(name), ty)
    }

    /// The type of a value built so far.
    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.func.ty(v)
    }

    /// Appends an op whose result types follow from its operands; errors name the op.
    pub fn op(
        &mut self,
        kind: OpKind,
        operands: &[ValueId],
        attrs: Attrs,
    ) -> Result<Vec<ValueId>, String> {
        self.op_typed(kind, operands, attrs, Vec::new())
    }

    /// Appends an op with one result.
    pub fn op1(
        &mut self,
        kind: OpKind,
        operands: &[ValueId],
        attrs: Attrs,
    ) -> Result<ValueId, String> {
        let r = self.op(kind, operands, attrs)?;
        r.first()
            .copied()
            .ok_or_else(|| format!("{} has no result", kind.name()))
    }

    /// Appends an op whose result type is given (`nn.reshape`, `nn.expand`, `nn.constant`, `nn.weight`);
    /// `infer` still checks it.
    pub fn op_typed(
        &mut self,
        kind: OpKind,
        operands: &[ValueId],
        attrs: Attrs,
        declared: Vec<TensorType>,
    ) -> Result<Vec<ValueId>, String> {
        let spec = kind.spec();
        if !spec.operands.accepts(operands.len()) {
            return Err(format!(
                "{} takes {} operands, given {}",
                spec.name,
                spec.operands.describe(),
                operands.len()
            ));
        }
        let operand_types: Vec<TensorType> =
            operands.iter().map(|v| self.func.ty(*v).clone()).collect();
        let cx = InferCtx {
            operands: &operand_types,
            attrs: &attrs,
            declared: &declared,
        };
        let types = kind.infer(&cx).map_err(|m| format!("{}: {m}", spec.name))?;
        Ok(self.func.push_op(kind, operands.to_vec(), attrs, types))
    }

    /// Gives a value a name for the text form.
    pub fn name(&mut self, v: ValueId, name: &str) {
        if let Some(data) = self.func.values.get_mut(v.index()) {
            data.name = Some(name.to_string());
        }
    }

    /// Finishes the function, returning `returns` (the signature's result types are theirs).
    pub fn finish(mut self, returns: &[ValueId]) -> Function {
        self.func.result_types = returns.iter().map(|v| self.func.ty(*v).clone()).collect();
        self.func.returns = returns.to_vec();
        self.func
    }
}
