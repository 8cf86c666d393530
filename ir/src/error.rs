//! The error type of `bitnet-ir`.

use crate::diagnostic::Diagnostic;
use crate::weights::WeightError;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    /// The text does not parse.
    #[error("{}", .0.message)]
    Parse(Diagnostic),
    /// The module does not verify; every error is listed.
    #[error("the IR is invalid ({} error(s)); the first: {}", .0.len(), .0.first().map_or("", |d| d.message.as_str()))]
    Invalid(Vec<Diagnostic>),
    /// The module has no function of that name.
    #[error("no function @{0} in the module")]
    NoFunction(String),
    /// The wrong number of inputs was given.
    #[error("@{func} takes {expected} input(s), {found} given")]
    InputCount {
        /// The function.
        func: String,
        /// How many it takes.
        expected: usize,
        /// How many were given.
        found: usize,
    },
    /// An input does not match its argument's type or binds a symbol beyond its bound.
    #[error("input %{name}: {message}")]
    Input {
        /// The argument's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// An op failed at run time (index out of range, context overflow, division by zero...).
    #[error("{op} ({at}): {message}")]
    Eval {
        /// The op's text name.
        op: &'static str,
        /// Where: `line N` for IR from text, else the op's first result (`%logits`).
        at: String,
        /// What went wrong.
        message: String,
    },
    /// A weight could not be loaded.
    #[error(transparent)]
    Weight(#[from] WeightError),
}
