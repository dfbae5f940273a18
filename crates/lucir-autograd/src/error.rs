//! The error type of the autograd crate.

/// What can go wrong while recording or differentiating.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// A tensor op rejected its inputs.
    #[error(transparent)]
    Tensor(#[from] lucir_tensor::Error),
    /// A class label is not a valid column of the logits.
    #[error("{op}: label {label} at row {row} is not a class (there are {classes})")]
    Label {
        op: &'static str,
        row: usize,
        label: usize,
        classes: usize,
    },
    /// An argument is invalid (wrong count, non-scalar loss, bad hyper-parameter…).
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
}

/// Result of an autograd call.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            detail: detail.into(),
        }
    }
}
