//! The error type of `bitnet-backends`.

/// Everything that can go wrong while generating code.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The module uses an op this backend has no kernel for (yet).
    #[error("the {backend} backend has no kernel for {op} ({detail})")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The op's text name.
        op: &'static str,
        /// What about it is unsupported.
        detail: String,
    },
    /// A backend that was not compiled in.
    #[error("bitnetc was built without the {backend} backend (rebuild with --features {backend})")]
    NotCompiled {
        /// The backend.
        backend: &'static str,
    },
    /// Cranelift rejected generated code: a compiler bug.
    #[error("internal error generating {kernel}: {message}")]
    Codegen {
        /// The kernel.
        kernel: String,
        /// Cranelift's message.
        message: String,
    },
    /// The module is not in the form the backend expects (not planned, not verified): a compiler bug
    /// or a pipeline without the required passes.
    #[error("{0}")]
    Input(String),
}
