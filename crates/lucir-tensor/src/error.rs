//! The error type of the tensor crate.

/// What can go wrong in a tensor op: a shape or argument problem named by op, or a device one.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The shapes handed to `op` do not fit together.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    /// An argument is outside its allowed range.
    #[error("{op}: invalid argument: {detail}")]
    Argument { op: &'static str, detail: String },
    /// The op cannot run where its operands are (mixed devices, or no CUDA arm yet).
    #[error("{op}: {detail}")]
    Device { op: &'static str, detail: String },
    /// The CUDA device failed, or cannot be used in this build or on this machine.
    #[error(transparent)]
    Cuda(#[from] lucir_cuda::Error),
}

/// Result of a tensor op.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Shape {
            op,
            detail: detail.into(),
        }
    }

    pub(crate) fn arg(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Argument {
            op,
            detail: detail.into(),
        }
    }
}
