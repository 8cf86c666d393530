//! bitnet-ir: the intermediate representation of bitnetc.
//!
//! A module holds functions; a function holds SSA values and operations in arenas, ordered by blocks;
//! values are typed tensors whose dimensions are static or bounded symbols. Operations form a closed
//! set (`ops::OpKind`): the `nn.*` dialect that importers produce and the `bit.*` ternary dialect that
//! passes lower to. Three guarantees rest here: a deterministic text form (`text`), a verifier that finds
//! every error (`verify`), and a reference interpreter that is the numerical oracle (`interp`), whose
//! reverse sweep (`autodiff`) differentiates a loss through every op's gradient rule.

pub mod absmean;
pub mod attr;
pub mod autodiff;
pub mod builder;
pub mod diagnostic;
pub mod error;
pub mod frozen;
pub mod interp;
pub mod module;
pub mod ops;
pub mod shape;
pub mod tensor;
pub mod text;
pub mod types;
pub mod verify;
pub mod weights;

pub use attr::{Attr, Attrs};
pub use diagnostic::Diagnostic;
pub use error::IrError;
pub use module::{Function, Module, OpId, ValueId};
pub use ops::OpKind;
pub use tensor::{Data, Tensor};
pub use types::{Dim, ElemType, TensorType};
pub use weights::{MemoryWeights, NoWeights, StoredFile, WeightError, WeightStore};

/// Parses and verifies a module: the entry point for `.bir` files.
pub fn parse_and_verify(src: &str, file: &str) -> Result<Module, IrError> {
    let m = text::parse(src, file).map_err(IrError::Parse)?;
    let diags = verify::verify_module(&m);
    if diags.is_empty() {
        Ok(m)
    } else {
        Err(IrError::Invalid(diags))
    }
}
