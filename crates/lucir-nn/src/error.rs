//! The error type of the network crate.

use std::path::PathBuf;

/// What can go wrong building, running, saving or loading a network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor op rejected its inputs.
    #[error(transparent)]
    Tensor(#[from] lucir_tensor::Error),
    /// Recording or differentiating failed.
    #[error(transparent)]
    Autograd(#[from] lucir_autograd::Error),
    /// A layer or network was configured impossibly.
    #[error("{0}")]
    Config(String),
    /// Reading or writing a state file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A state file is not what the module expects.
    #[error("{}: {detail}", path.display())]
    State { path: PathBuf, detail: String },
}

/// Result of a network call.
pub type Result<T> = std::result::Result<T, Error>;
