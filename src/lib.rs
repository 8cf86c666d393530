//! bitnetc: a compiler for ternary (BitNet b1.58) neural networks.
//!
//! This is the library facade. Today it re-exports the stages and reads `.bir` files with diagnostics
//! rendered for people; `compile` and `Session` for in-process (JIT) use land with the CPU backend.

pub use bitnet_backends as backends;
pub use bitnet_frontend as frontend;
pub use bitnet_ir as ir;
pub use bitnet_passes as passes;
pub use bitnet_runtime as runtime;

use bitnet_ir::diagnostic::render_all;
use bitnet_ir::{Module, text, verify};
use std::path::{Path, PathBuf};

/// Why a `.bir` file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BirError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not parse or verify; `rendered` holds every diagnostic as
    /// `file:line:col: error: message` with the offending line.
    #[error("{rendered}")]
    Invalid {
        /// The number of errors.
        count: usize,
        /// The diagnostics, ready to print.
        rendered: String,
    },
}

/// Reads, parses and verifies a `.bir` file.
pub fn load_bir(path: &Path) -> Result<Module, BirError> {
    let src = std::fs::read_to_string(path).map_err(|source| BirError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bir(&src, &path.display().to_string())
}

/// Parses and verifies IR text; `file` is the name diagnostics show.
pub fn parse_bir(src: &str, file: &str) -> Result<Module, BirError> {
    let module = text::parse(src, file).map_err(|d| BirError::Invalid {
        count: 1,
        rendered: d.render(file, Some(src)),
    })?;
    let diags = verify::verify_module(&module);
    if diags.is_empty() {
        Ok(module)
    } else {
        Err(BirError::Invalid {
            count: diags.len(),
            rendered: render_all(&diags, file, Some(src)),
        })
    }
}
