//! The error type of the data crate: every variant names the file (or setting) at fault.

use std::path::PathBuf;

/// What can go wrong reading data or setting up phases.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file was read but its contents are wrong.
    #[error("{}: {detail}", path.display())]
    Format { path: PathBuf, detail: String },
    /// The dataset folder is missing or incomplete.
    #[error("{0}")]
    Missing(String),
    /// A class order, phase split or memory setting is impossible.
    #[error("{0}")]
    Config(String),
    /// Building a tensor failed.
    #[error(transparent)]
    Tensor(#[from] lucir_tensor::Error),
}

/// Result of a data call.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn format(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
