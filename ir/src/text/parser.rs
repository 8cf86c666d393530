//! Recursive-descent parser for the text form (grammar in `docs/ir.md`).
//!
//! Syntax errors stop the parse with one diagnostic at the offending token. Semantic errors (types,
//! shapes, undefined values, bad attributes) are the verifier's: the parser records a use of an unknown
//! value as an `Undefined` value so the verifier can report every one of them.

use super::lexer::{Tok, lex};
use crate::attr::{Attr, Attrs};
use crate::diagnostic::Diagnostic;
use crate::module::{Block, Function, Loc, Module, OpId, Operation, ValueData, ValueDef, ValueId};
use crate::ops::OpKind;
use crate::types::{ElemType, SymbolDecl, TensorType, is_symbol_name, parse_tensor_body};
use std::collections::HashMap;

/// Parses a module; `file` names the source in the module (for diagnostics).
pub fn parse(src: &str, file: &str) -> Result<Module, Diagnostic> {
    let toks = lex(src).map_err(|(loc, msg)| Diagnostic::new(Some(loc), msg))?;
    let end = Loc {
        line: src.lines().count().max(1) as u32,
        col: 1,
    };
    let mut p = Parser { toks, pos: 0, end };
    let mut module = Module {
        functions: Vec::new(),
        source_name: Some(file.to_string()),
    };
    while !p.at_end() {
        let f = p.function()?;
        if let Some(prev) = module.functions.iter().find(|g| g.name == f.name) {
            let at = prev
                .loc
                .map(|l| format!(" (first defined at line {})", l.line))
                .unwrap_or_default();
            return Err(Diagnostic::new(
                f.loc,
                format!("function @{} is defined twice{at}", f.name),
            ));
        }
        module.functions.push(f);
    }
    Ok(module)
}

struct Parser {
    toks: Vec<(Tok, Loc)>,
    pos: usize,
    end: Loc,
}

type PResult<T> = Result<T, Diagnostic>;

impl Parser {
    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn loc(&self) -> Loc {
        self.toks.get(self.pos).map_or(self.end, |(_, l)| *l)
    }

    fn bump(&mut self) -> Option<(Tok, Loc)> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn err<T>(&self, msg: impl Into<String>) -> PResult<T> {
        Err(Diagnostic::new(Some(self.loc()), msg))
    }

    fn found(&self) -> String {
        self.peek()
            .map_or("the end of the file".to_string(), Tok::describe)
    }

    fn expect(&mut self, want: Tok) -> PResult<Loc> {
        if self.peek() == Some(&want) {
            let loc = self.loc();
            self.pos += 1;
            Ok(loc)
        } else {
            self.err(format!(
                "expected {}, found {}",
                want.describe(),
                self.found()
            ))
        }
    }

    fn eat(&mut self, want: &Tok) -> bool {
        if self.peek() == Some(want) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn keyword(&mut self, word: &str) -> PResult<Loc> {
        match self.peek() {
            Some(Tok::Ident(w)) if w == word => Ok(self.bump().map_or(self.end, |(_, l)| l)),
            _ => self.err(format!("expected `{word}`, found {}", self.found())),
        }
    }

    fn ty(&mut self) -> PResult<TensorType> {
        let loc = self.loc();
        match self.bump() {
            Some((Tok::Type(body), _)) => parse_tensor_body(&body)
                .map_err(|m| Diagnostic::new(Some(loc), format!("bad type: {m}"))),
            _ => {
                self.pos -= 1;
                self.err(format!(
                    "expected a type `tensor<...>`, found {}",
                    self.found()
                ))
            }
        }
    }

    fn function(&mut self) -> PResult<Function> {
        let loc = self.keyword("func")?;
        let name = match self.bump() {
            Some((Tok::Func(n), _)) => n,
            _ => {
                self.pos -= 1;
                return self.err(format!(
                    "expected a function name like `@main`, found {}",
                    self.found()
                ));
            }
        };
        let mut f = Function::new(&name);
        f.loc = Some(loc);
        f.blocks.clear();
        let mut names: HashMap<String, ValueId> = HashMap::new();
        if self.eat(&Tok::LBracket) {
            loop {
                let sloc = self.loc();
                let sym = match self.bump() {
                    Some((Tok::Ident(s), _)) => s,
                    _ => {
                        self.pos -= 1;
                        return self.err(format!(
                            "expected a symbol name like `T`, found {}",
                            self.found()
                        ));
                    }
                };
                if !is_symbol_name(&sym) {
                    return Err(Diagnostic::new(
                        Some(sloc),
                        format!(
                            "bad symbol name `{sym}`: use an uppercase letter, then uppercase letters, digits or `_`"
                        ),
                    ));
                }
                self.expect(Tok::Le)?;
                let bloc = self.loc();
                let max = match self.bump() {
                    Some((Tok::Int(s), _)) => s.parse::<u64>().map_err(|_| {
                        let why = if s.starts_with('-') {
                            "is negative"
                        } else {
                            "does not fit in 64 bits"
                        };
                        Diagnostic::new(Some(bloc), format!("the bound of {sym} ({s}) {why}"))
                    })?,
                    _ => {
                        self.pos -= 1;
                        return self.err(format!(
                            "expected the bound of {sym} (an integer), found {}",
                            self.found()
                        ));
                    }
                };
                f.symbols.push(SymbolDecl { name: sym, max });
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RBracket)?;
        }
        self.expect(Tok::LParen)?;
        if !self.eat(&Tok::RParen) {
            loop {
                let aloc = self.loc();
                let an = match self.bump() {
                    Some((Tok::Value(v), _)) => v,
                    _ => {
                        self.pos -= 1;
                        return self.err(format!(
                            "expected an argument like `%x`, found {}",
                            self.found()
                        ));
                    }
                };
                self.expect(Tok::Colon)?;
                let ty = self.ty()?;
                if names.contains_key(&an) {
                    return Err(Diagnostic::new(
                        Some(aloc),
                        format!("argument %{an} is declared twice"),
                    ));
                }
                let id = f.add_arg(Some(&an), ty);
                f.values[id.index()].loc = Some(aloc);
                names.insert(an, id);
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RParen)?;
        }
        self.expect(Tok::Arrow)?;
        self.expect(Tok::LParen)?;
        if !self.eat(&Tok::RParen) {
            loop {
                f.result_types.push(self.ty()?);
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            self.expect(Tok::RParen)?;
        }
        self.expect(Tok::LBrace)?;
        loop {
            match self.peek() {
                Some(Tok::Label(_)) => {
                    if let Some((Tok::Label(l), _)) = self.bump() {
                        self.expect(Tok::Colon)?;
                        f.blocks.push(Block {
                            label: l,
                            ops: Vec::new(),
                        });
                    }
                }
                Some(Tok::Ident(w)) if w == "return" => {
                    let rloc = self.loc();
                    self.pos += 1;
                    f.return_loc = Some(rloc);
                    if matches!(self.peek(), Some(Tok::Value(_))) {
                        loop {
                            let v = self.use_value(&mut f, &mut names)?;
                            f.returns.push(v);
                            if !self.eat(&Tok::Comma) {
                                break;
                            }
                        }
                    }
                    if !matches!(self.peek(), Some(Tok::RBrace)) {
                        return self.err(format!(
                            "expected `}}` after `return` (return ends the function), found {}",
                            self.found()
                        ));
                    }
                    self.pos += 1;
                    break;
                }
                Some(Tok::Value(_)) => self.op(&mut f, &mut names)?,
                Some(Tok::RBrace) => return self.err("missing `return` before `}`"),
                _ => {
                    return self.err(format!(
                        "expected an operation like `%y = nn.add %a, %b : tensor<...>`, `return` or a block label, found {}",
                        self.found()
                    ));
                }
            }
        }
        if f.blocks.is_empty() {
            f.blocks.push(Block {
                label: "entry".into(),
                ops: Vec::new(),
            });
        }
        Ok(f)
    }

    fn use_value(
        &mut self,
        f: &mut Function,
        names: &mut HashMap<String, ValueId>,
    ) -> PResult<ValueId> {
        let loc = self.loc();
        match self.bump() {
            Some((Tok::Value(v), _)) => Ok(*names.entry(v.clone()).or_insert_with(|| {
                f.add_value(ValueData {
                    ty: TensorType::new(Vec::new(), ElemType::F32),
                    def: ValueDef::Undefined,
                    name: Some(v),
                    loc: Some(loc),
                })
            })),
            _ => {
                self.pos -= 1;
                self.err(format!(
                    "expected a value like `%x`, found {}",
                    self.found()
                ))
            }
        }
    }

    fn op(&mut self, f: &mut Function, names: &mut HashMap<String, ValueId>) -> PResult<()> {
        let mut results = Vec::new();
        loop {
            let loc = self.loc();
            match self.bump() {
                Some((Tok::Value(v), _)) => results.push((v, loc)),
                _ => {
                    self.pos -= 1;
                    return self.err(format!(
                        "expected a result name like `%y`, found {}",
                        self.found()
                    ));
                }
            }
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(Tok::Eq)?;
        let op_loc = self.loc();
        let kind = match self.bump() {
            Some((Tok::Ident(name), _)) => OpKind::from_name(&name).ok_or_else(|| {
                Diagnostic::new(
                    Some(op_loc),
                    format!("unknown operation `{name}` (see docs/ir.md for the op set)"),
                )
            })?,
            _ => {
                self.pos -= 1;
                return self.err(format!(
                    "expected an operation name like `nn.add`, found {}",
                    self.found()
                ));
            }
        };
        let mut operands = Vec::new();
        if matches!(self.peek(), Some(Tok::Value(_))) {
            loop {
                operands.push(self.use_value(f, names)?);
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
        }
        let attrs = if self.eat(&Tok::LBrace) {
            self.attrs()?
        } else {
            Attrs::new()
        };
        self.expect(Tok::Colon)?;
        let types_loc = self.loc();
        let mut types = Vec::new();
        loop {
            types.push(self.ty()?);
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        if types.len() != results.len() {
            return Err(Diagnostic::new(
                Some(types_loc),
                format!(
                    "{} but {}",
                    plural(results.len(), "result name"),
                    plural(types.len(), "result type")
                ),
            ));
        }
        let op_id = OpId(f.ops.len() as u32);
        let mut ids = Vec::with_capacity(results.len());
        for (i, ((name, loc), ty)) in results.into_iter().zip(types).enumerate() {
            let def = ValueDef::OpResult {
                op: op_id,
                index: i as u32,
            };
            let id = match names.get(&name) {
                Some(&id) if f.values[id.index()].def == ValueDef::Undefined => {
                    // A use came first; the verifier reports it as a use before the definition.
                    let v = &mut f.values[id.index()];
                    v.def = def;
                    v.ty = ty;
                    id
                }
                Some(&id) => {
                    let first = f.values[id.index()]
                        .loc
                        .map(|l| format!(" (first defined at line {})", l.line));
                    return Err(Diagnostic::new(
                        Some(loc),
                        format!(
                            "%{name} is defined twice{}; SSA values are defined once",
                            first.unwrap_or_default()
                        ),
                    ));
                }
                None => {
                    let id = f.add_value(ValueData {
                        ty,
                        def,
                        name: Some(name.clone()),
                        loc: Some(loc),
                    });
                    names.insert(name, id);
                    id
                }
            };
            ids.push(id);
        }
        f.ops.push(Operation {
            kind,
            operands,
            results: ids,
            attrs,
            loc: Some(op_loc),
        });
        if f.blocks.is_empty() {
            f.blocks.push(Block {
                label: "entry".into(),
                ops: Vec::new(),
            });
        }
        if let Some(b) = f.blocks.last_mut() {
            b.ops.push(op_id);
        }
        Ok(())
    }

    fn attrs(&mut self) -> PResult<Attrs> {
        let mut attrs = Attrs::new();
        if self.eat(&Tok::RBrace) {
            return Ok(attrs);
        }
        loop {
            let kloc = self.loc();
            let key = match self.bump() {
                Some((Tok::Ident(k), _)) => k,
                _ => {
                    self.pos -= 1;
                    return self.err(format!(
                        "expected an attribute name, found {}",
                        self.found()
                    ));
                }
            };
            self.expect(Tok::Eq)?;
            let value = self.attr_value()?;
            if attrs.0.insert(key.clone(), value).is_some() {
                return Err(Diagnostic::new(
                    Some(kloc),
                    format!("attribute `{key}` is given twice"),
                ));
            }
            if self.eat(&Tok::RBrace) {
                return Ok(attrs);
            }
            if !self.eat(&Tok::Comma) {
                return self.err(format!(
                    "expected `,` or `}}` in the attributes, found {}",
                    self.found()
                ));
            }
        }
    }

    /// A scalar number: `Ok(Attr::Int)` or `Ok(Attr::Float)`.
    fn number(&mut self) -> PResult<Option<Attr>> {
        let loc = self.loc();
        let neg = self.eat(&Tok::Minus);
        let sign = if neg { -1.0 } else { 1.0 };
        match self.peek().cloned() {
            Some(Tok::Int(s)) if !neg => {
                self.pos += 1;
                let v: i64 = s.parse().map_err(|_| {
                    Diagnostic::new(Some(loc), format!("integer `{s}` does not fit in 64 bits"))
                })?;
                Ok(Some(Attr::Int(v)))
            }
            Some(Tok::Float(s)) if !neg => {
                self.pos += 1;
                let v: f64 = s
                    .parse()
                    .map_err(|_| Diagnostic::new(Some(loc), format!("bad float literal `{s}`")))?;
                Ok(Some(Attr::Float(v)))
            }
            Some(Tok::Ident(w)) if w == "inf" => {
                self.pos += 1;
                Ok(Some(Attr::Float(sign * f64::INFINITY)))
            }
            Some(Tok::Ident(w)) if w == "nan" && !neg => {
                self.pos += 1;
                Ok(Some(Attr::Float(f64::NAN)))
            }
            Some(Tok::Int(_) | Tok::Float(_)) if neg => {
                self.err("write negative numbers without a space after `-` (e.g. `-1`)")
            }
            _ if neg => self.err(format!(
                "expected a number after `-`, found {}",
                self.found()
            )),
            _ => Ok(None),
        }
    }

    fn attr_value(&mut self) -> PResult<Attr> {
        let loc = self.loc();
        if let Some(n) = self.number()? {
            return Ok(n);
        }
        match self.bump() {
            Some((Tok::Ident(w), _)) if w == "true" => Ok(Attr::Bool(true)),
            Some((Tok::Ident(w), _)) if w == "false" => Ok(Attr::Bool(false)),
            Some((Tok::Ident(w), _)) => ElemType::from_name(&w).map(Attr::Type).ok_or_else(|| {
                Diagnostic::new(Some(loc), format!("unknown attribute value `{w}` (expected a number, a string, a list, true/false or an element type)"))
            }),
            Some((Tok::Str(s), _)) => unescape(&s).map(Attr::Str).map_err(|m| Diagnostic::new(Some(loc), m)),
            Some((Tok::LBracket, _)) => {
                let mut items = Vec::new();
                if !self.eat(&Tok::RBracket) {
                    loop {
                        let iloc = self.loc();
                        match self.number()? {
                            Some(n) => items.push(n),
                            None => {
                                return Err(Diagnostic::new(
                                    Some(iloc),
                                    format!("lists hold numbers only, found {}", self.found()),
                                ));
                            }
                        }
                        if self.eat(&Tok::RBracket) {
                            break;
                        }
                        if !self.eat(&Tok::Comma) {
                            return self.err(format!("expected `,` or `]` in the list, found {}", self.found()));
                        }
                    }
                }
                if items.iter().all(|a| matches!(a, Attr::Int(_))) {
                    Ok(Attr::Ints(items.iter().map(|a| if let Attr::Int(v) = a { *v } else { 0 }).collect()))
                } else {
                    Ok(Attr::Floats(
                        items
                            .iter()
                            .map(|a| match a {
                                Attr::Int(v) => *v as f64,
                                Attr::Float(v) => *v,
                                _ => 0.0,
                            })
                            .collect(),
                    ))
                }
            }
            _ => {
                self.pos -= 1;
                self.err(format!("expected an attribute value, found {}", self.found()))
            }
        }
    }
}

/// `n` and `word`, with an `s` unless `n` is 1.
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Decodes a string literal written with Rust-style escapes (`\"`, `\\`, `\n`, `\t`, `\u{..}`).
fn unescape(lit: &str) -> Result<String, String> {
    let inner = lit.get(1..lit.len().saturating_sub(1)).unwrap_or("");
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('\'') => out.push('\''),
            Some('u') => {
                let rest: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let hex = rest
                    .strip_prefix('{')
                    .ok_or("bad \\u escape: expected `\\u{...}`")?;
                let code =
                    u32::from_str_radix(hex, 16).map_err(|_| format!("bad \\u escape `{hex}`"))?;
                out.push(char::from_u32(code).ok_or(format!("\\u{{{hex}}} is not a character"))?);
            }
            other => {
                return Err(format!(
                    "unknown escape `\\{}` in string",
                    other.unwrap_or(' ')
                ));
            }
        }
    }
    Ok(out)
}
