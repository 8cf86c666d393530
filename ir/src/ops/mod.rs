//! The closed set of operations. Each op (or small family) lives in its own file with its doc
//! (math and text syntax), its type rule (`infer`) and its naive reference evaluation (`eval`).
//!
//! Adding an op: add a variant to `OpKind`, then follow the compiler: every `match` over `OpKind` in
//! this file (and later in backends) is exhaustive, with no `_ =>` arm. See `docs/adding-an-op.md`.

pub mod act_quant;
pub mod attention;
pub mod binary;
pub mod cast;
pub mod clip;
pub mod concat;
pub mod constant;
pub mod cross_entropy;
pub mod gather;
pub mod grad;
pub mod matmul;
pub mod norm;
pub mod reduce;
pub mod relu2_mul;
pub mod reshape;
pub mod rms_norm_quant;
pub mod rope;
pub mod silu_mul;
pub mod slice;
pub mod softmax;
pub mod stop_gradient;
pub mod ternary_matmul;
pub mod ternary_matmul_packed;
pub mod transpose;
pub mod unary;
pub mod vjp;
pub mod where_select;

use crate::attr::{AttrSpec, Attrs};
use crate::tensor::Tensor;
use crate::types::{ElemType, TensorType};
use crate::weights::WeightStore;

use binary::BinaryOp;
use unary::UnaryOp;

/// Every operation the IR knows. Text names are `dialect.op` (see `OpKind::name`).
#[allow(missing_docs)] // Each variant is documented in its op file, named in `spec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Equal,
    Neg,
    Sqrt,
    Reciprocal,
    Abs,
    Round,
    Relu,
    Relu2,
    Silu,
    Sigmoid,
    Tanh,
    Erf,
    Exp,
    Clip,
    Softmax,
    RmsNorm,
    LayerNorm,
    ReduceMean,
    ReduceMax,
    ReduceSum,
    Reshape,
    Unsqueeze,
    Squeeze,
    Expand,
    Transpose,
    Concat,
    Slice,
    Gather,
    Embedding,
    Cast,
    Where,
    MatMul,
    Rope,
    Attention,
    Constant,
    Weight,
    ActQuant,
    TernaryMatmul,
    RmsNormQuant,
    Relu2Mul,
    TernaryMatmulPacked,
    SiluMul,
    StopGradient,
    CrossEntropy,
    Vjp,
}

/// How many operands an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// Between the two bounds, inclusive.
    Between(usize, usize),
    /// At least this many.
    AtLeast(usize),
}

impl Arity {
    /// True if `n` operands are acceptable.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::Between(lo, hi) => (lo..=hi).contains(&n),
            Arity::AtLeast(k) => n >= k,
        }
    }

    /// Describes the arity for diagnostics ("2", "2 or 3", "at least 1").
    pub fn describe(self) -> String {
        match self {
            Arity::Exactly(k) => k.to_string(),
            Arity::Between(lo, hi) if hi == lo + 1 => format!("{lo} or {hi}"),
            Arity::Between(lo, hi) => format!("{lo} to {hi}"),
            Arity::AtLeast(k) => format!("at least {k}"),
        }
    }
}

/// The static description of an op: its name, operand and result counts, and attribute schema.
#[derive(Clone, Copy, Debug)]
pub struct OpSpec {
    /// Text name, `dialect.op`.
    pub name: &'static str,
    /// Operand count.
    pub operands: Arity,
    /// Result count.
    pub results: usize,
    /// Accepted attributes.
    pub attrs: &'static [AttrSpec],
}

/// What `infer` sees: operand types, attributes, and the result types the text declared
/// (used only by ops whose result shape is not a function of their operands: reshape, expand,
/// constants and weights).
pub struct InferCtx<'a> {
    /// Operand types.
    pub operands: &'a [TensorType],
    /// Attributes (already checked against the schema).
    pub attrs: &'a Attrs,
    /// Declared result types; may be empty when an op is built programmatically.
    pub declared: &'a [TensorType],
}

/// What `eval` sees: operand tensors, attributes, the concrete result types and the weight store.
pub struct EvalCtx<'a> {
    /// Operand tensors.
    pub inputs: &'a [&'a Tensor],
    /// Attributes.
    pub attrs: &'a Attrs,
    /// Concrete result shapes (symbols bound).
    pub result_shapes: &'a [Vec<usize>],
    /// Result element types.
    pub result_elems: &'a [ElemType],
    /// Where `nn.weight` reads from.
    pub weights: &'a dyn WeightStore,
}

impl EvalCtx<'_> {
    /// Operand `i` (the verifier guarantees the count).
    pub fn input(&self, i: usize) -> Result<&Tensor, String> {
        self.inputs
            .get(i)
            .copied()
            .ok_or_else(|| format!("missing operand {i}"))
    }
}

/// One result, as `eval` returns it.
pub type EvalResult = Result<Vec<Tensor>, String>;

/// What a gradient rule (`vjp`) sees. Cotangents are f64, row-major, one per element of the value
/// they belong to, whatever its element type: gradients are computed in f64 and narrowed by the caller.
pub struct VjpCtx<'a> {
    /// Operand tensors, as the forward pass saw them.
    pub inputs: &'a [&'a Tensor],
    /// The op's results, as the forward pass computed them.
    pub outputs: &'a [&'a Tensor],
    /// The cotangent of each result; `None` where nothing downstream depends on that result.
    pub cotangents: &'a [Option<&'a [f64]>],
    /// Attributes.
    pub attrs: &'a Attrs,
}

impl VjpCtx<'_> {
    /// Operand `i`.
    pub fn input(&self, i: usize) -> Result<&Tensor, String> {
        self.inputs
            .get(i)
            .copied()
            .ok_or_else(|| format!("missing operand {i}"))
    }

    /// Result `i`.
    pub fn output(&self, i: usize) -> Result<&Tensor, String> {
        self.outputs
            .get(i)
            .copied()
            .ok_or_else(|| format!("missing result {i}"))
    }

    /// The cotangent of result `i`, or zeros of its size when nothing depends on it.
    pub fn cotangent(&self, i: usize) -> Result<std::borrow::Cow<'_, [f64]>, String> {
        match self.cotangents.get(i) {
            Some(Some(g)) => Ok(std::borrow::Cow::Borrowed(*g)),
            Some(None) => Ok(std::borrow::Cow::Owned(vec![0.0; self.output(i)?.numel()])),
            None => Err(format!("missing cotangent {i}")),
        }
    }
}

/// The cotangent of each operand, as a gradient rule returns it: `None` for an operand no gradient
/// flows to (integers, booleans, positions, and operands the math does not depend on smoothly).
pub type VjpResult = Result<Vec<Option<Vec<f64>>>, String>;

impl OpKind {
    /// Every op, in declaration order.
    pub const ALL: [OpKind; 52] = [
        OpKind::Add,
        OpKind::Sub,
        OpKind::Mul,
        OpKind::Div,
        OpKind::Pow,
        OpKind::Max,
        OpKind::Min,
        OpKind::Equal,
        OpKind::Neg,
        OpKind::Sqrt,
        OpKind::Reciprocal,
        OpKind::Abs,
        OpKind::Round,
        OpKind::Relu,
        OpKind::Relu2,
        OpKind::Silu,
        OpKind::Sigmoid,
        OpKind::Tanh,
        OpKind::Erf,
        OpKind::Exp,
        OpKind::Clip,
        OpKind::Softmax,
        OpKind::RmsNorm,
        OpKind::LayerNorm,
        OpKind::ReduceMean,
        OpKind::ReduceMax,
        OpKind::ReduceSum,
        OpKind::Reshape,
        OpKind::Unsqueeze,
        OpKind::Squeeze,
        OpKind::Expand,
        OpKind::Transpose,
        OpKind::Concat,
        OpKind::Slice,
        OpKind::Gather,
        OpKind::Embedding,
        OpKind::Cast,
        OpKind::Where,
        OpKind::MatMul,
        OpKind::Rope,
        OpKind::Attention,
        OpKind::Constant,
        OpKind::Weight,
        OpKind::ActQuant,
        OpKind::TernaryMatmul,
        OpKind::RmsNormQuant,
        OpKind::Relu2Mul,
        OpKind::TernaryMatmulPacked,
        OpKind::SiluMul,
        OpKind::StopGradient,
        OpKind::CrossEntropy,
        OpKind::Vjp,
    ];

    /// The op's static description.
    pub fn spec(self) -> OpSpec {
        match self {
            OpKind::Add => binary::spec(BinaryOp::Add),
            OpKind::Sub => binary::spec(BinaryOp::Sub),
            OpKind::Mul => binary::spec(BinaryOp::Mul),
            OpKind::Div => binary::spec(BinaryOp::Div),
            OpKind::Pow => binary::spec(BinaryOp::Pow),
            OpKind::Max => binary::spec(BinaryOp::Max),
            OpKind::Min => binary::spec(BinaryOp::Min),
            OpKind::Equal => binary::spec(BinaryOp::Equal),
            OpKind::Neg => unary::spec(UnaryOp::Neg),
            OpKind::Sqrt => unary::spec(UnaryOp::Sqrt),
            OpKind::Reciprocal => unary::spec(UnaryOp::Reciprocal),
            OpKind::Abs => unary::spec(UnaryOp::Abs),
            OpKind::Round => unary::spec(UnaryOp::Round),
            OpKind::Relu => unary::spec(UnaryOp::Relu),
            OpKind::Relu2 => unary::spec(UnaryOp::Relu2),
            OpKind::Silu => unary::spec(UnaryOp::Silu),
            OpKind::Sigmoid => unary::spec(UnaryOp::Sigmoid),
            OpKind::Tanh => unary::spec(UnaryOp::Tanh),
            OpKind::Erf => unary::spec(UnaryOp::Erf),
            OpKind::Exp => unary::spec(UnaryOp::Exp),
            OpKind::Clip => clip::SPEC,
            OpKind::Softmax => softmax::SPEC,
            OpKind::RmsNorm => norm::RMS_NORM,
            OpKind::LayerNorm => norm::LAYER_NORM,
            OpKind::ReduceMean => reduce::spec(reduce::ReduceOp::Mean),
            OpKind::ReduceMax => reduce::spec(reduce::ReduceOp::Max),
            OpKind::ReduceSum => reduce::spec(reduce::ReduceOp::Sum),
            OpKind::Reshape => reshape::RESHAPE,
            OpKind::Unsqueeze => reshape::UNSQUEEZE,
            OpKind::Squeeze => reshape::SQUEEZE,
            OpKind::Expand => reshape::EXPAND,
            OpKind::Transpose => transpose::SPEC,
            OpKind::Concat => concat::SPEC,
            OpKind::Slice => slice::SPEC,
            OpKind::Gather => gather::GATHER,
            OpKind::Embedding => gather::EMBEDDING,
            OpKind::Cast => cast::SPEC,
            OpKind::Where => where_select::SPEC,
            OpKind::MatMul => matmul::SPEC,
            OpKind::Rope => rope::SPEC,
            OpKind::Attention => attention::SPEC,
            OpKind::Constant => constant::CONSTANT,
            OpKind::Weight => constant::WEIGHT,
            OpKind::ActQuant => act_quant::SPEC,
            OpKind::TernaryMatmul => ternary_matmul::SPEC,
            OpKind::RmsNormQuant => rms_norm_quant::SPEC,
            OpKind::Relu2Mul => relu2_mul::SPEC,
            OpKind::SiluMul => silu_mul::SPEC,
            OpKind::TernaryMatmulPacked => ternary_matmul_packed::SPEC,
            OpKind::StopGradient => stop_gradient::SPEC,
            OpKind::CrossEntropy => cross_entropy::SPEC,
            OpKind::Vjp => vjp::SPEC,
        }
    }

    /// The text name (`nn.add`, `bit.act_quant`).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The attribute schema of this op with these attributes: `spec().attrs`, except for `nn.vjp`,
    /// which also takes the attributes of the op it differentiates.
    pub fn attr_specs(self, attrs: &Attrs) -> Vec<AttrSpec> {
        if self == OpKind::Vjp {
            vjp::attr_specs(attrs)
        } else {
            self.spec().attrs.to_vec()
        }
    }

    /// The op with text name `name`.
    pub fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The result types of this op applied to operands of the given types.
    /// Errors say what is wrong without the op name (the caller adds location and name).
    pub fn infer(self, cx: &InferCtx) -> Result<Vec<TensorType>, String> {
        match self {
            OpKind::Add => binary::infer(BinaryOp::Add, cx),
            OpKind::Sub => binary::infer(BinaryOp::Sub, cx),
            OpKind::Mul => binary::infer(BinaryOp::Mul, cx),
            OpKind::Div => binary::infer(BinaryOp::Div, cx),
            OpKind::Pow => binary::infer(BinaryOp::Pow, cx),
            OpKind::Max => binary::infer(BinaryOp::Max, cx),
            OpKind::Min => binary::infer(BinaryOp::Min, cx),
            OpKind::Equal => binary::infer(BinaryOp::Equal, cx),
            OpKind::Neg => unary::infer(UnaryOp::Neg, cx),
            OpKind::Sqrt => unary::infer(UnaryOp::Sqrt, cx),
            OpKind::Reciprocal => unary::infer(UnaryOp::Reciprocal, cx),
            OpKind::Abs => unary::infer(UnaryOp::Abs, cx),
            OpKind::Round => unary::infer(UnaryOp::Round, cx),
            OpKind::Relu => unary::infer(UnaryOp::Relu, cx),
            OpKind::Relu2 => unary::infer(UnaryOp::Relu2, cx),
            OpKind::Silu => unary::infer(UnaryOp::Silu, cx),
            OpKind::Sigmoid => unary::infer(UnaryOp::Sigmoid, cx),
            OpKind::Tanh => unary::infer(UnaryOp::Tanh, cx),
            OpKind::Erf => unary::infer(UnaryOp::Erf, cx),
            OpKind::Exp => unary::infer(UnaryOp::Exp, cx),
            OpKind::Clip => clip::infer(cx),
            OpKind::Softmax => softmax::infer(cx),
            OpKind::RmsNorm => norm::infer_rms(cx),
            OpKind::LayerNorm => norm::infer_layer(cx),
            OpKind::ReduceMean => reduce::infer(reduce::ReduceOp::Mean, cx),
            OpKind::ReduceMax => reduce::infer(reduce::ReduceOp::Max, cx),
            OpKind::ReduceSum => reduce::infer(reduce::ReduceOp::Sum, cx),
            OpKind::Reshape => reshape::infer_reshape(cx),
            OpKind::Unsqueeze => reshape::infer_unsqueeze(cx),
            OpKind::Squeeze => reshape::infer_squeeze(cx),
            OpKind::Expand => reshape::infer_expand(cx),
            OpKind::Transpose => transpose::infer(cx),
            OpKind::Concat => concat::infer(cx),
            OpKind::Slice => slice::infer(cx),
            OpKind::Gather => gather::infer_gather(cx),
            OpKind::Embedding => gather::infer_embedding(cx),
            OpKind::Cast => cast::infer(cx),
            OpKind::Where => where_select::infer(cx),
            OpKind::MatMul => matmul::infer(cx),
            OpKind::Rope => rope::infer(cx),
            OpKind::Attention => attention::infer(cx),
            OpKind::Constant => constant::infer_constant(cx),
            OpKind::Weight => constant::infer_weight(cx),
            OpKind::ActQuant => act_quant::infer(cx),
            OpKind::TernaryMatmul => ternary_matmul::infer(cx),
            OpKind::RmsNormQuant => rms_norm_quant::infer(cx),
            OpKind::Relu2Mul => relu2_mul::infer(cx),
            OpKind::SiluMul => silu_mul::infer(cx),
            OpKind::TernaryMatmulPacked => ternary_matmul_packed::infer(cx),
            OpKind::StopGradient => stop_gradient::infer(cx),
            OpKind::CrossEntropy => cross_entropy::infer(cx),
            OpKind::Vjp => vjp::infer(cx),
        }
    }

    /// Evaluates the op naively and exactly (the reference semantics every backend must match).
    pub fn eval(self, cx: &EvalCtx) -> EvalResult {
        match self {
            OpKind::Add => binary::eval(BinaryOp::Add, cx),
            OpKind::Sub => binary::eval(BinaryOp::Sub, cx),
            OpKind::Mul => binary::eval(BinaryOp::Mul, cx),
            OpKind::Div => binary::eval(BinaryOp::Div, cx),
            OpKind::Pow => binary::eval(BinaryOp::Pow, cx),
            OpKind::Max => binary::eval(BinaryOp::Max, cx),
            OpKind::Min => binary::eval(BinaryOp::Min, cx),
            OpKind::Equal => binary::eval(BinaryOp::Equal, cx),
            OpKind::Neg => unary::eval(UnaryOp::Neg, cx),
            OpKind::Sqrt => unary::eval(UnaryOp::Sqrt, cx),
            OpKind::Reciprocal => unary::eval(UnaryOp::Reciprocal, cx),
            OpKind::Abs => unary::eval(UnaryOp::Abs, cx),
            OpKind::Round => unary::eval(UnaryOp::Round, cx),
            OpKind::Relu => unary::eval(UnaryOp::Relu, cx),
            OpKind::Relu2 => unary::eval(UnaryOp::Relu2, cx),
            OpKind::Silu => unary::eval(UnaryOp::Silu, cx),
            OpKind::Sigmoid => unary::eval(UnaryOp::Sigmoid, cx),
            OpKind::Tanh => unary::eval(UnaryOp::Tanh, cx),
            OpKind::Erf => unary::eval(UnaryOp::Erf, cx),
            OpKind::Exp => unary::eval(UnaryOp::Exp, cx),
            OpKind::Clip => clip::eval(cx),
            OpKind::Softmax => softmax::eval(cx),
            OpKind::RmsNorm => norm::eval_rms(cx),
            OpKind::LayerNorm => norm::eval_layer(cx),
            OpKind::ReduceMean => reduce::eval(reduce::ReduceOp::Mean, cx),
            OpKind::ReduceMax => reduce::eval(reduce::ReduceOp::Max, cx),
            OpKind::ReduceSum => reduce::eval(reduce::ReduceOp::Sum, cx),
            OpKind::Reshape | OpKind::Unsqueeze | OpKind::Squeeze => reshape::eval_view(cx),
            OpKind::Expand => reshape::eval_expand(cx),
            OpKind::Transpose => transpose::eval(cx),
            OpKind::Concat => concat::eval(cx),
            OpKind::Slice => slice::eval(cx),
            OpKind::Gather => gather::eval_gather(cx),
            OpKind::Embedding => gather::eval_embedding(cx),
            OpKind::Cast => cast::eval(cx),
            OpKind::Where => where_select::eval(cx),
            OpKind::MatMul => matmul::eval(cx),
            OpKind::Rope => rope::eval(cx),
            OpKind::Attention => attention::eval(cx),
            OpKind::Constant => constant::eval_constant(cx),
            OpKind::Weight => constant::eval_weight(cx),
            OpKind::ActQuant => act_quant::eval(cx),
            OpKind::TernaryMatmul => ternary_matmul::eval(cx),
            OpKind::RmsNormQuant => rms_norm_quant::eval(cx),
            OpKind::Relu2Mul => relu2_mul::eval(cx),
            OpKind::SiluMul => silu_mul::eval(cx),
            OpKind::TernaryMatmulPacked => ternary_matmul_packed::eval(cx),
            OpKind::StopGradient => stop_gradient::eval(cx),
            OpKind::CrossEntropy => cross_entropy::eval(cx),
            OpKind::Vjp => vjp::eval(cx),
        }
    }

    /// The op's gradient rule (vector-Jacobian product): given its operands, its results and the
    /// cotangent of each result, the cotangent of each operand (see `VjpCtx`). Every op has a rule;
    /// ops that cannot be differentiated say why.
    pub fn vjp(self, cx: &VjpCtx) -> VjpResult {
        match self {
            OpKind::Add => binary::vjp(BinaryOp::Add, cx),
            OpKind::Sub => binary::vjp(BinaryOp::Sub, cx),
            OpKind::Mul => binary::vjp(BinaryOp::Mul, cx),
            OpKind::Div => binary::vjp(BinaryOp::Div, cx),
            OpKind::Pow => binary::vjp(BinaryOp::Pow, cx),
            OpKind::Max => binary::vjp(BinaryOp::Max, cx),
            OpKind::Min => binary::vjp(BinaryOp::Min, cx),
            OpKind::Equal => binary::vjp(BinaryOp::Equal, cx),
            OpKind::Neg => unary::vjp(UnaryOp::Neg, cx),
            OpKind::Sqrt => unary::vjp(UnaryOp::Sqrt, cx),
            OpKind::Reciprocal => unary::vjp(UnaryOp::Reciprocal, cx),
            OpKind::Abs => unary::vjp(UnaryOp::Abs, cx),
            OpKind::Round => unary::vjp(UnaryOp::Round, cx),
            OpKind::Relu => unary::vjp(UnaryOp::Relu, cx),
            OpKind::Relu2 => unary::vjp(UnaryOp::Relu2, cx),
            OpKind::Silu => unary::vjp(UnaryOp::Silu, cx),
            OpKind::Sigmoid => unary::vjp(UnaryOp::Sigmoid, cx),
            OpKind::Tanh => unary::vjp(UnaryOp::Tanh, cx),
            OpKind::Erf => unary::vjp(UnaryOp::Erf, cx),
            OpKind::Exp => unary::vjp(UnaryOp::Exp, cx),
            OpKind::Clip => clip::vjp(cx),
            OpKind::Softmax => softmax::vjp(cx),
            OpKind::RmsNorm => norm::vjp_rms(cx),
            OpKind::LayerNorm => norm::vjp_layer(cx),
            OpKind::ReduceMean => reduce::vjp(reduce::ReduceOp::Mean, cx),
            OpKind::ReduceMax => reduce::vjp(reduce::ReduceOp::Max, cx),
            OpKind::ReduceSum => reduce::vjp(reduce::ReduceOp::Sum, cx),
            OpKind::Reshape | OpKind::Unsqueeze | OpKind::Squeeze => {
                grad::vjp_data_movement(self, cx, &[0])
            }
            OpKind::Expand => grad::vjp_data_movement(self, cx, &[0]),
            OpKind::Transpose => grad::vjp_data_movement(self, cx, &[0]),
            OpKind::Concat => concat::vjp(cx),
            OpKind::Slice => slice::vjp(cx),
            OpKind::Gather => gather::vjp_gather(cx),
            OpKind::Embedding => gather::vjp_embedding(cx),
            OpKind::Cast => cast::vjp(cx),
            OpKind::Where => where_select::vjp(cx),
            OpKind::MatMul => matmul::vjp(cx),
            OpKind::Rope => rope::vjp(cx),
            OpKind::Attention => attention::vjp(cx),
            OpKind::Constant => constant::vjp_constant(cx),
            OpKind::Weight => constant::vjp_weight(cx),
            OpKind::ActQuant => act_quant::vjp(cx),
            OpKind::TernaryMatmul => ternary_matmul::vjp(cx),
            OpKind::RmsNormQuant => rms_norm_quant::vjp(cx),
            OpKind::Relu2Mul => relu2_mul::vjp(cx),
            OpKind::SiluMul => silu_mul::vjp(cx),
            OpKind::TernaryMatmulPacked => ternary_matmul_packed::vjp(cx),
            OpKind::StopGradient => stop_gradient::vjp(cx),
            OpKind::CrossEntropy => cross_entropy::vjp(cx),
            OpKind::Vjp => vjp::vjp(cx),
        }
    }
}

/// Operand `i`'s type (the verifier checks arity before calling `infer`).
pub(crate) fn operand(cx: &InferCtx, i: usize) -> Result<TensorType, String> {
    cx.operands
        .get(i)
        .cloned()
        .ok_or_else(|| format!("missing operand {i}"))
}

/// Declared result `i`'s type, for ops whose result type is given in the text.
pub(crate) fn declared(cx: &InferCtx, i: usize) -> Result<TensorType, String> {
    cx.declared
        .get(i)
        .cloned()
        .ok_or_else(|| "the result type must be written (`: tensor<...>`)".to_string())
}

/// Requires a float element type.
pub(crate) fn require_float(what: &str, ty: &TensorType) -> Result<(), String> {
    if ty.elem.is_float() {
        Ok(())
    } else {
        Err(format!(
            "{what} must have a float element type (f32, f64, f16 or bf16), found {ty}"
        ))
    }
}

/// Builds one output tensor of the given shape and data.
pub(crate) fn one(shape: &[usize], data: crate::tensor::Data) -> EvalResult {
    Tensor::new(shape.to_vec(), data)
        .map(|t| vec![t])
        .ok_or_else(|| format!("internal: result data does not match shape {shape:?}"))
}

/// The concrete shape of result `i`.
pub(crate) fn result_shape<'a>(cx: &'a EvalCtx, i: usize) -> Result<&'a [usize], String> {
    cx.result_shapes
        .get(i)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("missing result {i}"))
}

/// The element type of result `i`.
pub(crate) fn result_elem(cx: &EvalCtx, i: usize) -> Result<ElemType, String> {
    cx.result_elems
        .get(i)
        .copied()
        .ok_or_else(|| format!("missing result {i}"))
}
