//! The IR data model: a module of functions; a function owns arenas of values and operations and
//! a list of blocks that order the operations.
//!
//! Values are SSA: each is defined once, by a function argument or by one result of one operation,
//! and is referred to by its `ValueId` (an index into the function's value arena).
//!
//! KV cache model: a decoder function takes each layer's key and value caches as arguments of a static
//! shape `[C, kv_heads*head_dim]` (C = the declared context length) and a position argument `pos`
//! (`tensor<i64>`). `nn.attention` writes the new keys and values at rows `pos..pos+T` and returns the
//! updated caches as results of the same type, which the function returns. Because the result type equals
//! the operand type and the operand has no other use, the runtime binds both to one buffer: the update is
//! in place. Prefill (T tokens at pos 0) and decode (1 token at pos p) run through the same function.

use crate::attr::Attrs;
use crate::ops::OpKind;
use crate::types::{SymbolDecl, TensorType};

/// Index of a value in its function's value arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// Index of an operation in its function's operation arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u32);

impl ValueId {
    /// The arena index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl OpId {
    /// The arena index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A position in a source file (1-based line and column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Loc {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
}

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDef {
    /// The n-th function argument.
    Arg(u32),
    /// Result `index` of operation `op`.
    OpResult {
        /// The defining operation.
        op: OpId,
        /// Which of its results.
        index: u32,
    },
    /// Used in the text but never defined; the verifier reports every use.
    Undefined,
}

/// One SSA value.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueData {
    /// The value's type.
    pub ty: TensorType,
    /// Its definition.
    pub def: ValueDef,
    /// The name it had in the text (`%x` → `x`), if any; the printer numbers unnamed values.
    pub name: Option<String>,
    /// Where it was first mentioned in the text, if it came from text.
    pub loc: Option<Loc>,
}

/// One operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// What the operation computes.
    pub kind: OpKind,
    /// Its operands, in order.
    pub operands: Vec<ValueId>,
    /// Its results, in order.
    pub results: Vec<ValueId>,
    /// Its attributes.
    pub attrs: Attrs,
    /// Where it was written, if it came from text.
    pub loc: Option<Loc>,
}

/// A straight-line sequence of operations.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// The label (`^entry`).
    pub label: String,
    /// The operations, in execution order.
    pub ops: Vec<OpId>,
}

/// A function: a signature, arenas, blocks and the returned values.
///
/// Today a function has exactly one block (the verifier checks it); blocks are kept in the model so that
/// structured control flow can arrive without changing every pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    /// The name (`@main` → `main`).
    pub name: String,
    /// Dimension symbols with their upper bounds.
    pub symbols: Vec<SymbolDecl>,
    /// The argument values, in order.
    pub args: Vec<ValueId>,
    /// The declared result types.
    pub result_types: Vec<TensorType>,
    /// The values returned, in order.
    pub returns: Vec<ValueId>,
    /// Where `return` was written, if it came from text.
    pub return_loc: Option<Loc>,
    /// The blocks.
    pub blocks: Vec<Block>,
    /// The value arena.
    pub values: Vec<ValueData>,
    /// The operation arena.
    pub ops: Vec<Operation>,
    /// Where `func` was written, if it came from text.
    pub loc: Option<Loc>,
}

impl Function {
    /// A function with no arguments, results or operations and one empty `^entry` block.
    pub fn new(name: &str) -> Self {
        Function {
            name: name.to_string(),
            symbols: Vec::new(),
            args: Vec::new(),
            result_types: Vec::new(),
            returns: Vec::new(),
            return_loc: None,
            blocks: vec![Block {
                label: "entry".into(),
                ops: Vec::new(),
            }],
            values: Vec::new(),
            ops: Vec::new(),
            loc: None,
        }
    }

    /// The data of a value.
    ///
    /// Ids come from this function's arenas, so the index is in range by construction.
    pub fn value(&self, id: ValueId) -> &ValueData {
        &self.values[id.index()]
    }

    /// The type of a value.
    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.value(id).ty
    }

    /// An operation.
    pub fn op(&self, id: OpId) -> &Operation {
        &self.ops[id.index()]
    }

    /// The operations of every block, in execution order.
    pub fn op_order(&self) -> impl Iterator<Item = OpId> + '_ {
        self.blocks.iter().flat_map(|b| b.ops.iter().copied())
    }

    /// Adds a value to the arena.
    pub fn add_value(&mut self, data: ValueData) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(data);
        id
    }

    /// Adds an argument of type `ty`.
    pub fn add_arg(&mut self, name: Option<&str>, ty: TensorType) -> ValueId {
        let index = self.args.len() as u32;
        let id = self.add_value(ValueData {
            ty,
            def: ValueDef::Arg(index),
            name: name.map(str::to_string),
            loc: None,
        });
        self.args.push(id);
        id
    }

    /// Appends an operation to the last block, creating one result value per type.
    pub fn push_op(
        &mut self,
        kind: OpKind,
        operands: Vec<ValueId>,
        attrs: Attrs,
        result_types: Vec<TensorType>,
    ) -> Vec<ValueId> {
        let op = OpId(self.ops.len() as u32);
        let results: Vec<ValueId> = result_types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| {
                self.add_value(ValueData {
                    ty,
                    def: ValueDef::OpResult {
                        op,
                        index: i as u32,
                    },
                    name: None,
                    loc: None,
                })
            })
            .collect();
        self.ops.push(Operation {
            kind,
            operands,
            results: results.clone(),
            attrs,
            loc: None,
        });
        if self.blocks.is_empty() {
            self.blocks.push(Block {
                label: "entry".into(),
                ops: Vec::new(),
            });
        }
        if let Some(block) = self.blocks.last_mut() {
            block.ops.push(op);
        }
        results
    }
}

/// A module: functions in order, and the name of the file it came from (for diagnostics).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Module {
    /// The functions, in text order.
    pub functions: Vec<Function>,
    /// The source file name, if the module was parsed.
    pub source_name: Option<String>,
}

impl Module {
    /// The function called `name`.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }
}

/// Rewriting helpers for passes.
impl Function {
    /// Makes every use of `old` (operands and returns) a use of `new`.
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) {
        for op in &mut self.ops {
            for v in &mut op.operands {
                if *v == old {
                    *v = new;
                }
            }
        }
        for v in &mut self.returns {
            if *v == old {
                *v = new;
            }
        }
    }

    /// How many times each value is used (as an operand of a scheduled op, or returned).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.values.len()];
        for id in self.op_order() {
            for v in &self.op(id).operands {
                if let Some(c) = counts.get_mut(v.index()) {
                    *c += 1;
                }
            }
        }
        for v in &self.returns {
            if let Some(c) = counts.get_mut(v.index()) {
                *c += 1;
            }
        }
        counts
    }

    /// Removes the operations none of whose results is used (all ops are pure), repeatedly, then
    /// rebuilds the arenas so that they hold only what the blocks reach, keeping order and names.
    /// Returns true if anything was removed.
    pub fn remove_dead_ops(&mut self) -> bool {
        let mut removed = false;
        loop {
            let counts = self.use_counts();
            let mut changed = false;
            for b in &mut self.blocks {
                let before = b.ops.len();
                let ops = &self.ops;
                b.ops.retain(|&id| {
                    ops[id.index()]
                        .results
                        .iter()
                        .any(|r| counts[r.index()] > 0)
                });
                changed |= b.ops.len() != before;
            }
            if !changed {
                break;
            }
            removed = true;
        }
        self.compact();
        removed
    }

    /// Rebuilds the value and op arenas so they contain only the arguments and the ops in blocks
    /// (plus values still referenced), renumbering ids in definition order.
    pub fn compact(&mut self) {
        let mut value_map: Vec<Option<ValueId>> = vec![None; self.values.len()];
        let mut values = Vec::with_capacity(self.values.len());
        let keep = |old: ValueId,
                    values: &mut Vec<ValueData>,
                    map: &mut Vec<Option<ValueId>>,
                    src: &[ValueData]| {
            if let Some(Some(id)) = map.get(old.index()) {
                return *id;
            }
            let id = ValueId(values.len() as u32);
            if let Some(data) = src.get(old.index()) {
                values.push(data.clone());
            }
            if let Some(slot) = map.get_mut(old.index()) {
                *slot = Some(id);
            }
            id
        };
        let args: Vec<ValueId> = self
            .args
            .iter()
            .map(|&a| keep(a, &mut values, &mut value_map, &self.values))
            .collect();
        let mut ops = Vec::with_capacity(self.ops.len());
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let mut new_ids = Vec::with_capacity(b.ops.len());
            for &old_op in &b.ops {
                let op = &self.ops[old_op.index()];
                let new_op = OpId(ops.len() as u32);
                let operands = op
                    .operands
                    .iter()
                    .map(|&v| keep(v, &mut values, &mut value_map, &self.values))
                    .collect();
                let results: Vec<ValueId> = op
                    .results
                    .iter()
                    .map(|&v| keep(v, &mut values, &mut value_map, &self.values))
                    .collect();
                for (i, r) in results.iter().enumerate() {
                    if let Some(v) = values.get_mut(r.index()) {
                        v.def = ValueDef::OpResult {
                            op: new_op,
                            index: i as u32,
                        };
                    }
                }
                ops.push(Operation {
                    kind: op.kind,
                    operands,
                    results,
                    attrs: op.attrs.clone(),
                    loc: op.loc,
                });
                new_ids.push(new_op);
            }
            blocks.push(Block {
                label: b.label.clone(),
                ops: new_ids,
            });
        }
        let returns = self
            .returns
            .iter()
            .map(|&v| keep(v, &mut values, &mut value_map, &self.values))
            .collect();
        self.args = args;
        self.values = values;
        self.ops = ops;
        self.blocks = blocks;
        self.returns = returns;
    }
}

impl Function {
    /// Inserts an operation just before `anchor` in `anchor`'s block, creating one result per type.
    /// Falls back to appending when `anchor` is in no block.
    pub fn insert_op_before(
        &mut self,
        anchor: OpId,
        kind: OpKind,
        operands: Vec<ValueId>,
        attrs: Attrs,
        result_types: Vec<TensorType>,
    ) -> Vec<ValueId> {
        let results = self.push_op(kind, operands, attrs, result_types);
        let new_op = OpId(self.ops.len() as u32 - 1);
        let at = self
            .blocks
            .iter()
            .enumerate()
            .find_map(|(bi, b)| b.ops.iter().position(|&o| o == anchor).map(|pos| (bi, pos)));
        if let Some((bi, pos)) = at {
            // `push_op` appended to the last block; move the op in front of the anchor.
            if let Some(last) = self.blocks.last_mut() {
                last.ops.retain(|&o| o != new_op);
            }
            if let Some(b) = self.blocks.get_mut(bi) {
                b.ops.insert(pos, new_op);
            }
        }
        results
    }

    /// The operation that defines `v`, if an operation does.
    pub fn def_op(&self, v: ValueId) -> Option<OpId> {
        match self.value(v).def {
            ValueDef::OpResult { op, .. } => Some(op),
            ValueDef::Arg(_) | ValueDef::Undefined => None,
        }
    }
}
