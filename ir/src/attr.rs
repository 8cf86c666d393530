//! Attributes: the compile-time parameters of an op (`{axis = -1, eps = 1e-5}`).
//!
//! Attributes are kept in a sorted map so the printer is deterministic. Each op declares the
//! attributes it accepts (`AttrSpec`); the verifier rejects unknown, missing and mistyped ones.

use crate::types::ElemType;
use std::collections::BTreeMap;
use std::fmt;

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float (printed so that it parses back to the same bits).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string (weight names).
    Str(String),
    /// An element type (`to = f32`).
    Type(ElemType),
    /// A list of integers (axes, permutations, slice bounds).
    Ints(Vec<i64>),
    /// A list of floats (literal constants).
    Floats(Vec<f64>),
}

/// The kind of an attribute, as an op's schema states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// `Attr::Int`.
    Int,
    /// `Attr::Float`; an integer literal is accepted and widened.
    Float,
    /// `Attr::Bool`.
    Bool,
    /// `Attr::Str`.
    Str,
    /// `Attr::Type`.
    Type,
    /// `Attr::Ints`.
    Ints,
    /// `Attr::Floats` or `Attr::Ints` (literal constant values).
    Numbers,
}

impl AttrKind {
    /// What the kind is called in diagnostics.
    pub fn describe(self) -> &'static str {
        match self {
            AttrKind::Int => "an integer",
            AttrKind::Float => "a float",
            AttrKind::Bool => "a boolean",
            AttrKind::Str => "a string",
            AttrKind::Type => "an element type",
            AttrKind::Ints => "a list of integers",
            AttrKind::Numbers => "a list of numbers",
        }
    }

    /// True if `attr` is acceptable for this kind.
    pub fn accepts(self, attr: &Attr) -> bool {
        matches!(
            (self, attr),
            (AttrKind::Int, Attr::Int(_))
                | (AttrKind::Float, Attr::Float(_) | Attr::Int(_))
                | (AttrKind::Bool, Attr::Bool(_))
                | (AttrKind::Str, Attr::Str(_))
                | (AttrKind::Type, Attr::Type(_))
                | (AttrKind::Ints, Attr::Ints(_))
                | (AttrKind::Numbers, Attr::Ints(_) | Attr::Floats(_))
        )
    }
}

/// One entry of an op's attribute schema.
#[derive(Clone, Copy, Debug)]
pub struct AttrSpec {
    /// The attribute's name.
    pub name: &'static str,
    /// Its kind.
    pub kind: AttrKind,
    /// Whether the op needs it.
    pub required: bool,
}

impl AttrSpec {
    /// A required attribute.
    pub const fn req(name: &'static str, kind: AttrKind) -> Self {
        AttrSpec {
            name,
            kind,
            required: true,
        }
    }

    /// An optional attribute.
    pub const fn opt(name: &'static str, kind: AttrKind) -> Self {
        AttrSpec {
            name,
            kind,
            required: false,
        }
    }
}

/// The attributes of one op, sorted by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs(pub BTreeMap<String, Attr>);

impl Attrs {
    /// No attributes.
    pub fn new() -> Self {
        Attrs(BTreeMap::new())
    }

    /// Adds or replaces an attribute (builder style).
    pub fn with(mut self, name: &str, value: Attr) -> Self {
        self.0.insert(name.to_string(), value);
        self
    }

    /// The attribute `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.get(name)
    }

    /// An integer attribute, or `default` when absent.
    pub fn int_or(&self, name: &str, default: i64) -> i64 {
        match self.get(name) {
            Some(Attr::Int(v)) => *v,
            _ => default,
        }
    }

    /// A float attribute (integers widen), if present.
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name) {
            Some(Attr::Float(v)) => Some(*v),
            Some(Attr::Int(v)) => Some(*v as f64),
            _ => None,
        }
    }

    /// A float attribute, or `default` when absent.
    pub fn float_or(&self, name: &str, default: f64) -> f64 {
        self.float(name).unwrap_or(default)
    }

    /// A boolean attribute, or `default` when absent.
    pub fn bool_or(&self, name: &str, default: bool) -> bool {
        match self.get(name) {
            Some(Attr::Bool(v)) => *v,
            _ => default,
        }
    }

    /// An integer-list attribute, if present.
    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }

    /// A string attribute, if present.
    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Attr::Str(v)) => Some(v),
            _ => None,
        }
    }

    /// An element-type attribute, if present.
    pub fn elem_type(&self, name: &str) -> Option<ElemType> {
        match self.get(name) {
            Some(Attr::Type(t)) => Some(*t),
            _ => None,
        }
    }

    /// True when there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes a float so that it parses back to the same value (`1.0`, `1e-5`, `inf`, `-inf`, `nan`).
pub fn write_float(f: &mut impl fmt::Write, v: f64) -> fmt::Result {
    if v.is_nan() {
        f.write_str("nan")
    } else if v.is_infinite() {
        f.write_str(if v > 0.0 { "inf" } else { "-inf" })
    } else {
        // `{:?}` is the shortest representation that round-trips and always has a `.` or an `e`.
        write!(f, "{v:?}")
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Float(v) => write_float(f, *v),
            Attr::Bool(v) => write!(f, "{v}"),
            Attr::Str(s) => write!(f, "{s:?}"),
            Attr::Type(t) => write!(f, "{t}"),
            Attr::Ints(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Attr::Floats(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_float(f, *x)?;
                }
                f.write_str("]")
            }
        }
    }
}
