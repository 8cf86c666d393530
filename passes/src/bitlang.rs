//! The e-graph language over the IR's dataflow that BitLinear recognition works in, and the e-class
//! analysis that tells rules what a leaf is (a scalar, a ternary weight, a float weight…).
//!
//! Each IR value becomes one e-node: ops the language knows become their node (with attribute checks:
//! a `reduce_max` counts as `rmax` only over the last axis with `keepdims`), everything else becomes an
//! opaque `Leaf` named after the value (`v12`). Missing clip bounds are ±inf. Lowered forms:
//! - `(as x eps form)`: the per-token scale `127 / max(max|x|, eps)` (form 0) or
//!   `(1 / max(max|x|, eps))·127` (form 1; the two can differ by an ulp, so they stay distinct);
//! - `(aq x eps form)`: the int8 values `clamp(round(x·s), -128, 127)` (as floats);
//! - `(afq x eps form)`: the fake-quantized activations `aq / as`;
//! - `(wq w eps)`: master weights ternarized by absmean (floor `eps`), `T·γ` in `w`'s orientation;
//! - `(bl x eps form W scale)`: a lowered BitLinear, `acc(aq, T) / as · γ_W · scale`, where `W` says where the
//!   ternary weight comes from: `(tw w)` a ternary `[N, K]` weight; `(dnk w)` / `(dkn w)` a float
//!   `[N, K]` / `[K, N]` weight holding {-γ, 0, +γ}; `(mnk w eps)` / `(mkn w eps)` float master weights;
//! - `(blq x eps form W)`: the integer product before scaling (HF `bitlinear`, ONNX int8 form);
//! - `(inv s)`, `(smul a b)`: scalar scale arithmetic.

use egg::{Analysis, DidMerge, EGraph, Id, Symbol};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// A float literal in the language (compared by bits, so NaN-free literals hash and compare exactly).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Num(pub u64);

impl Num {
    /// The literal `v`.
    pub fn new(v: f64) -> Self {
        Num(v.to_bits())
    }

    /// Its value.
    pub fn value(self) -> f64 {
        f64::from_bits(self.0)
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        bitnet_ir::attr::write_float(f, self.value())
    }
}

impl FromStr for Num {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inf" => Ok(Num::new(f64::INFINITY)),
            "-inf" => Ok(Num::new(f64::NEG_INFINITY)),
            _ => s.parse::<f64>().map(Num::new).map_err(|e| e.to_string()),
        }
    }
}

mod lang {
    #![allow(missing_docs)]
    use super::Num;
    use egg::{Id, Symbol, define_language};

    define_language! {
        /// See the module header.
        pub enum BitLang {
            "abs" = Abs([Id; 1]),
            "rmax" = RMax([Id; 1]),
            "rmean" = RMean([Id; 1]),
            "clip" = Clip([Id; 3]),
            "recip" = Recip([Id; 1]),
            "mul" = Mul([Id; 2]),
            "div" = Div([Id; 2]),
            "round" = Round([Id; 1]),
            "max" = Max([Id; 2]),
            "min" = Min([Id; 2]),
            "matmul" = MatMul([Id; 2]),
            "t" = T([Id; 1]),
            "f32" = F32([Id; 1]),
            "i8" = I8([Id; 1]),
            "as" = ActScale([Id; 3]),
            "aq" = ActInt([Id; 3]),
            "afq" = ActFake([Id; 3]),
            "wq" = WeightQuant([Id; 2]),
            "tw" = TernaryW([Id; 1]),
            "dnk" = DenseNK([Id; 1]),
            "dkn" = DenseKN([Id; 1]),
            "mnk" = MasterNK([Id; 2]),
            "mkn" = MasterKN([Id; 2]),
            "bl" = BitLinear([Id; 5]),
            "blq" = BitLinearInt([Id; 4]),
            "inv" = Inv([Id; 1]),
            "smul" = ScaleMul([Id; 2]),
            Num(Num),
            Leaf(Symbol),
        }
    }
}

pub use lang::BitLang;

/// What the importer knows about a leaf value.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LeafInfo {
    /// It holds one element (a scale).
    pub scalar: bool,
    /// It is an `nn.weight` of type ternary, rank 2.
    pub ternary_weight: bool,
    /// It is a rank-2 float constant whose values are exactly {-γ, 0, +γ} (γ given).
    pub dense_ternary: Option<f32>,
    /// It is a rank-2 float `nn.weight` (master weights may be ternarized from it).
    pub float_weight: bool,
}

/// The per-class facts rules check.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Facts {
    /// Every value in the class holds one element.
    pub scalar: bool,
    /// The class holds a leaf with these facts (weights are leaves).
    pub leaf: Option<LeafInfo>,
}

/// The analysis: leaf facts come from the IR (`leaves`), scalarity propagates through scale math.
#[derive(Default)]
pub struct Meta {
    /// Facts about each leaf symbol.
    pub leaves: HashMap<Symbol, LeafInfo>,
}

impl Analysis<BitLang> for Meta {
    type Data = Facts;

    fn make(egraph: &mut EGraph<BitLang, Self>, enode: &BitLang, _id: Id) -> Facts {
        let scalar = |id: &Id| egraph[*id].data.scalar;
        match enode {
            BitLang::Num(_) => Facts {
                scalar: true,
                leaf: None,
            },
            BitLang::Leaf(s) => {
                let info = egraph.analysis.leaves.get(s).copied().unwrap_or_default();
                Facts {
                    scalar: info.scalar,
                    leaf: Some(info),
                }
            }
            BitLang::Mul(c) | BitLang::Div(c) | BitLang::ScaleMul(c) => Facts {
                scalar: c.iter().all(scalar),
                leaf: None,
            },
            BitLang::Recip([c])
            | BitLang::Inv([c])
            | BitLang::F32([c])
            | BitLang::Abs([c])
            | BitLang::RMean([c]) => Facts {
                scalar: scalar(c) || matches!(enode, BitLang::RMean(_)),
                leaf: None,
            },
            BitLang::Clip([x, _, _]) => Facts {
                scalar: scalar(x),
                leaf: None,
            },
            _ => Facts::default(),
        }
    }

    fn merge(&mut self, to: &mut Facts, from: Facts) -> DidMerge {
        let before = *to;
        to.scalar |= from.scalar;
        if to.leaf.is_none() {
            to.leaf = from.leaf;
        }
        DidMerge(*to != before, *to != from)
    }
}
