//! `TrainError`: what can go wrong in a training run, each naming the file, flag or tensor.

use std::path::PathBuf;

/// A training error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's content is not what a run needs.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An option is out of range or inconsistent.
    #[error("{0}")]
    Options(String),
    /// Building or running the training graph failed.
    #[error("{0}")]
    Graph(String),
    /// Importing the initial model failed.
    #[error(transparent)]
    Frontend(#[from] bitnet_frontend::FrontendError),
}

impl TrainError {
    /// A format error about `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        TrainError::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
