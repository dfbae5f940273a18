//! The error type of the method crate.

/// What can go wrong while learning.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A network op failed.
    #[error(transparent)]
    Nn(#[from] lucir_nn::Error),
    /// Recording or differentiating failed.
    #[error(transparent)]
    Autograd(#[from] lucir_autograd::Error),
    /// A tensor op failed.
    #[error(transparent)]
    Tensor(#[from] lucir_tensor::Error),
    /// A data setting failed.
    #[error(transparent)]
    Data(#[from] lucir_data::Error),
    /// The configuration is impossible.
    #[error("{0}")]
    Config(String),
    /// A checkpoint does not fit the run restoring it.
    #[error("{}: {detail}", path.display())]
    Checkpoint {
        path: std::path::PathBuf,
        detail: String,
    },
    /// A CUDA head op failed.
    #[error("CUDA head op: {0}")]
    Cuda(String),
    /// The learner was driven out of its lifecycle order (a bug, not bad input).
    #[error("internal: {0}")]
    Internal(&'static str),
    /// Training diverged: a loss or parameter is not finite.
    #[error(
        "training diverged in phase {phase}, epoch {epoch}, step {step}: {what} is not finite"
    )]
    Diverged {
        phase: usize,
        epoch: usize,
        step: usize,
        what: String,
    },
    /// The observer asked to stop (e.g. Ctrl-C) or failed.
    #[error("{0}")]
    Stopped(String),
    /// The observer asked to stop for a preemption ([`crate::Observer::preempted`]): the
    /// learner was checkpointed after its last step and the run can be resumed exactly.
    #[error("{0}")]
    Preempted(String),
}

/// Result of a method call.
pub type Result<T> = std::result::Result<T, Error>;
