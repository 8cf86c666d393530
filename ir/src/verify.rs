//! The verifier: finds every error in a module and reports each with its location and context.
//!
//! It checks symbols (declared once, bounded, bound by an argument), types (only declared symbols,
//! element counts within `MAX_ELEMENTS`), SSA (every use defined, and defined before it is used),
//! each op (operand and result counts, attributes against the op's schema, result types equal to what
//! `infer` computes) and the `return` (count and types match the signature). A verifier error in IR
//! made by a pass is a compiler bug; in a `.bir` file it is the user's input.

use crate::attr::Attr;
use crate::diagnostic::Diagnostic;
use crate::module::{Function, Loc, Module, ValueDef, ValueId};
use crate::ops::InferCtx;
use crate::text::parser::plural;
use crate::text::printer::{Names, print_op_with};
use crate::types::{Dim, TensorType, is_symbol_name};
use std::collections::{HashMap, HashSet};

/// The largest element count a tensor type may have (with every symbol at its bound): 2^40.
pub const MAX_ELEMENTS: u64 = 1 << 40;

/// Verifies every function of a module.
pub fn verify_module(m: &Module) -> Vec<Diagnostic> {
    m.functions.iter().flat_map(verify_function).collect()
}

/// Verifies one function, returning every error found (empty when the function is valid).
pub fn verify_function(f: &Function) -> Vec<Diagnostic> {
    let mut v = Verifier {
        f,
        names: Names::new(f),
        diags: Vec::new(),
        bounds: HashMap::new(),
    };
    v.symbols();
    v.values();
    v.body();
    v.diags
}

struct Verifier<'a> {
    f: &'a Function,
    names: Names,
    diags: Vec<Diagnostic>,
    bounds: HashMap<&'a str, u64>,
}

impl<'a> Verifier<'a> {
    fn error(&mut self, loc: Option<Loc>, msg: String) {
        self.diags.push(Diagnostic::new(loc, msg));
    }

    fn symbols(&mut self) {
        let f = self.f;
        for s in &f.symbols {
            if !is_symbol_name(&s.name) {
                self.error(f.loc, format!("@{}: bad symbol name `{}`", f.name, s.name));
            }
            if s.max == 0 {
                self.error(
                    f.loc,
                    format!(
                        "@{}: symbol {} has bound 0; bounds must be at least 1",
                        f.name, s.name
                    ),
                );
            }
            if self.bounds.insert(&s.name, s.max).is_some() {
                self.error(
                    f.loc,
                    format!("@{}: symbol {} is declared twice", f.name, s.name),
                );
            }
        }
        let bound: HashSet<&str> = f
            .args
            .iter()
            .flat_map(|a| f.ty(*a).dims.iter())
            .filter_map(|d| match d {
                Dim::Sym(s) => Some(s.as_str()),
                Dim::Static(_) => None,
            })
            .collect();
        for s in &f.symbols {
            if !bound.contains(s.name.as_str()) {
                self.error(
                    f.loc,
                    format!("@{}: symbol {} is not used by any argument, so nothing binds it at run time", f.name, s.name),
                );
            }
        }
    }

    /// Checks a type: declared symbols only, element count within bounds.
    fn check_type(&self, ty: &TensorType) -> Result<(), String> {
        let mut n: u64 = 1;
        for d in &ty.dims {
            let size = match d {
                Dim::Static(s) => *s,
                Dim::Sym(s) => match self.bounds.get(s.as_str()) {
                    Some(&b) => b,
                    None => {
                        return Err(format!(
                            "{ty} uses the undeclared symbol {s} (declare it as `func @f[{s}<=N]`)"
                        ));
                    }
                },
            };
            n = n.saturating_mul(size);
        }
        if n > MAX_ELEMENTS {
            return Err(format!(
                "{ty} can hold more than 2^40 elements (the limit of one tensor)"
            ));
        }
        Ok(())
    }

    fn values(&mut self) {
        let f = self.f;
        for (i, v) in f.values.iter().enumerate() {
            if v.def == ValueDef::Undefined {
                continue;
            }
            if let Err(msg) = self.check_type(&v.ty) {
                let name = self.names.get(ValueId(i as u32)).to_string();
                let loc = v.loc.or_else(|| self.def_loc(ValueId(i as u32)));
                self.error(loc, format!("%{name}: {msg}"));
            }
        }
        for t in &f.result_types {
            if let Err(msg) = self.check_type(t) {
                self.error(f.loc, format!("@{} result: {msg}", f.name));
            }
        }
    }

    fn def_loc(&self, v: ValueId) -> Option<Loc> {
        match self.f.value(v).def {
            ValueDef::OpResult { op, .. } => self.f.op(op).loc,
            ValueDef::Arg(_) | ValueDef::Undefined => self.f.value(v).loc,
        }
    }

    /// Checks that `v` is defined before this point; returns false (after reporting) if not.
    fn check_use(
        &mut self,
        v: ValueId,
        defined: &HashSet<ValueId>,
        at: Option<Loc>,
        what: &str,
    ) -> bool {
        let name = self.names.get(v).to_string();
        match self.f.value(v).def {
            ValueDef::Undefined => {
                self.error(
                    self.f.value(v).loc.or(at),
                    format!("{what}: use of undefined value %{name}"),
                );
                false
            }
            _ if !defined.contains(&v) => {
                let line = self
                    .def_loc(v)
                    .map(|l| format!(" (defined at line {})", l.line))
                    .unwrap_or_default();
                self.error(
                    at,
                    format!("{what}: %{name} is used before it is defined{line}"),
                );
                false
            }
            _ => true,
        }
    }

    fn body(&mut self) {
        let f = self.f;
        if f.blocks.len() != 1 {
            self.error(
                f.loc,
                format!(
                    "@{} has {} blocks; a function has exactly one block until control flow lands",
                    f.name,
                    f.blocks.len()
                ),
            );
        }
        let mut defined: HashSet<ValueId> = f.args.iter().copied().collect();
        let mut seen_ops = HashSet::new();
        for id in f.op_order() {
            if !seen_ops.insert(id) {
                self.error(
                    None,
                    format!(
                        "@{}: operation {} appears twice in the blocks",
                        f.name, id.0
                    ),
                );
                continue;
            }
            let op = f.op(id);
            let spec = op.kind.spec();
            let name = spec.name;
            let ctx = print_op_with(f, &self.names, id);
            let before = self.diags.len();
            let mut operands_ok = true;
            for &v in &op.operands {
                operands_ok &= self.check_use(v, &defined, op.loc, name);
            }
            if !spec.operands.accepts(op.operands.len()) {
                self.error(
                    op.loc,
                    format!(
                        "{name} takes {} {}, found {}",
                        spec.operands.describe(),
                        if spec.operands == crate::ops::Arity::Exactly(1) {
                            "operand"
                        } else {
                            "operands"
                        },
                        op.operands.len()
                    ),
                );
            }
            if op.results.len() != spec.results {
                self.error(
                    op.loc,
                    format!(
                        "{name} has {}, found {}",
                        plural(spec.results, "result"),
                        op.results.len()
                    ),
                );
            }
            let mut attrs_ok = true;
            let schema = op.kind.attr_specs(&op.attrs);
            for (key, value) in &op.attrs.0 {
                match schema.iter().find(|a| a.name == key) {
                    None => {
                        let known: Vec<&str> = schema.iter().map(|a| a.name).collect();
                        let known = if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        };
                        self.error(
                            op.loc,
                            format!("{name} has no attribute `{key}` (it takes: {known})"),
                        );
                        attrs_ok = false;
                    }
                    Some(a) if !a.kind.accepts(value) => {
                        self.error(
                            op.loc,
                            format!(
                                "{name}: attribute `{key}` must be {}, found `{value}`",
                                a.kind.describe()
                            ),
                        );
                        attrs_ok = false;
                    }
                    Some(_) => {}
                }
            }
            for a in schema.iter().filter(|a| a.required) {
                if op.attrs.get(a.name).is_none() {
                    self.error(
                        op.loc,
                        format!(
                            "{name} needs the attribute `{}` ({})",
                            a.name,
                            a.kind.describe()
                        ),
                    );
                    attrs_ok = false;
                }
            }
            if let Some(Attr::Float(v)) = op.attrs.get("eps")
                && !v.is_finite()
            {
                self.error(op.loc, format!("{name}: eps must be finite, found {v}"));
                attrs_ok = false;
            }
            if operands_ok && attrs_ok && self.diags.len() == before {
                let operand_types: Vec<TensorType> =
                    op.operands.iter().map(|v| f.ty(*v).clone()).collect();
                let declared: Vec<TensorType> =
                    op.results.iter().map(|v| f.ty(*v).clone()).collect();
                let cx = InferCtx {
                    operands: &operand_types,
                    attrs: &op.attrs,
                    declared: &declared,
                };
                match op.kind.infer(&cx) {
                    Err(msg) => self.error(op.loc, format!("{name}: {msg}")),
                    Ok(inferred) => {
                        for (i, (d, t)) in declared.iter().zip(&inferred).enumerate() {
                            if d != t {
                                self.error(
                                    op.loc,
                                    format!("{name}: result {i} is declared {d} but the operands give {t}"),
                                );
                            }
                        }
                    }
                }
            }
            for d in &mut self.diags[before..] {
                d.context = Some(ctx.clone());
            }
            defined.extend(op.results.iter().copied());
        }
        if f.returns.len() != f.result_types.len() {
            self.error(
                f.return_loc,
                format!(
                    "@{} returns {} but its signature declares {}",
                    f.name,
                    plural(f.returns.len(), "value"),
                    f.result_types.len()
                ),
            );
        }
        for (i, (&v, t)) in f.returns.iter().zip(&f.result_types).enumerate() {
            if self.check_use(v, &defined, f.return_loc, "return") && f.ty(v) != t {
                let name = self.names.get(v).to_string();
                self.error(
                    f.return_loc,
                    format!(
                        "return value {i} (%{name}) has type {} but the signature declares {t}",
                        f.ty(v)
                    ),
                );
            }
        }
    }
}
