//! The error type of the tensor crate.

/// What can go wrong in a tensor op: always a shape or argument problem, named by op.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The shapes handed to `op` do not fit together.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    /// An argument is outside its allowed range.
    #[error("{op}: invalid argument: {detail}")]
    Argument { op: &'static str, detail: String },
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
