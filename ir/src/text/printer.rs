//! The deterministic printer. Values keep the names they were parsed with; unnamed values (built by
//! code) get the smallest free number, in definition order. Attributes print sorted by name.

use crate::module::{Function, Module, OpId, ValueId};
use std::collections::HashSet;
use std::fmt::Write;

/// Value names of one function, decided once per print.
pub struct Names {
    names: Vec<String>,
}

impl Names {
    /// Decides a unique name for every value of `f`.
    pub fn new(f: &Function) -> Self {
        let mut taken: HashSet<String> = HashSet::new();
        let mut names = vec![String::new(); f.values.len()];
        for (i, v) in f.values.iter().enumerate() {
            if let Some(n) = &v.name
                && taken.insert(n.clone())
            {
                names[i] = n.clone();
            }
        }
        let mut next = 0usize;
        for name in names.iter_mut().filter(|n| n.is_empty()) {
            while taken.contains(&next.to_string()) {
                next += 1;
            }
            *name = next.to_string();
            taken.insert(name.clone());
        }
        Names { names }
    }

    /// The name of a value, without the `%`.
    pub fn get(&self, v: ValueId) -> &str {
        self.names.get(v.index()).map_or("?", String::as_str)
    }
}

fn write_values(out: &mut String, names: &Names, vals: &[ValueId]) {
    for (i, v) in vals.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "%{}", names.get(*v));
    }
}

/// Prints one operation (without indentation or newline).
pub fn print_op_with(f: &Function, names: &Names, id: OpId) -> String {
    let op = f.op(id);
    let mut out = String::new();
    write_values(&mut out, names, &op.results);
    let _ = write!(out, " = {}", op.kind.name());
    if !op.operands.is_empty() {
        out.push(' ');
        write_values(&mut out, names, &op.operands);
    }
    if !op.attrs.is_empty() {
        out.push_str(" {");
        for (i, (k, v)) in op.attrs.0.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{k} = {v}");
        }
        out.push('}');
    }
    out.push_str(" : ");
    for (i, r) in op.results.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}", f.ty(*r));
    }
    out
}

/// Prints one operation of `f` on its own.
pub fn print_op(f: &Function, id: OpId) -> String {
    print_op_with(f, &Names::new(f), id)
}

/// Prints a function.
pub fn print_function(f: &Function) -> String {
    let names = Names::new(f);
    let mut out = format!("func @{}", f.name);
    if !f.symbols.is_empty() {
        out.push('[');
        for (i, s) in f.symbols.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}<={}", s.name, s.max);
        }
        out.push(']');
    }
    out.push('(');
    for (i, a) in f.args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "%{}: {}", names.get(*a), f.ty(*a));
    }
    out.push_str(") -> (");
    for (i, t) in f.result_types.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{t}");
    }
    out.push_str(") {\n");
    let labelled = f.blocks.len() > 1;
    for b in &f.blocks {
        if labelled {
            let _ = writeln!(out, "^{}:", b.label);
        }
        for &op in &b.ops {
            let _ = writeln!(out, "  {}", print_op_with(f, &names, op));
        }
    }
    out.push_str("  return");
    if !f.returns.is_empty() {
        out.push(' ');
        write_values(&mut out, &names, &f.returns);
    }
    out.push_str("\n}\n");
    out
}

/// Prints a module: its functions separated by blank lines.
pub fn print_module(m: &Module) -> String {
    m.functions
        .iter()
        .map(print_function)
        .collect::<Vec<_>>()
        .join("\n")
}
