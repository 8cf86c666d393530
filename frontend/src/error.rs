//! The error type of `bitnet-frontend`: every variant names the file, and the tensor or field.

use std::path::PathBuf;

/// Everything that can go wrong reading a user's file.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not in the expected format, or is corrupt.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the tensor or field.
        message: String,
    },
}

impl FrontendError {
    /// A format error for `path`.
    pub fn format(path: &std::path::Path, message: impl Into<String>) -> Self {
        FrontendError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
