//! CUDA kernels for the three LUCIR head computations — cosine logits, margin ranking and
//! feature distillation (docs/design.md §3 "Gradients of the head", §5) — loaded through cudarc.
//!
//! This is the only crate that knows cudarc, and it knows nothing of `Tensor`: launchers take
//! and return host slices (row-major f32). The kernels live in `kernels/*.cu`; `cargo xtask
//! kernels` compiles them to the committed `kernels/ptx/*.ptx`, which this crate embeds and
//! loads once per device. Everything is behind the `cuda` feature (off by default); without it,
//! or without a GPU, [`Gpu::new`] returns a typed error and nothing panics.
//!
//! Shapes: B rows (batch), C classes, D feature width.

#[cfg(feature = "cuda")]
mod gpu;
mod kernels;

pub use kernels::{Kernel, BLOCK, KERNELS, MAX_K, TILE};

/// What can go wrong reaching or using the GPU.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The crate was built without the `cuda` feature.
    #[error("lucir-cuda was built without the `cuda` feature")]
    NotCompiled,
    /// No CUDA driver library or no device.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// A CUDA driver call failed.
    #[error("CUDA {op}: {detail}")]
    Driver { op: &'static str, detail: String },
    /// Inputs do not fit the launcher's shapes.
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
}

/// Result of a CUDA call.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(feature = "cuda")]
pub use gpu::Gpu;

/// Stand-in for the GPU handle when the crate is built without CUDA support.
#[cfg(not(feature = "cuda"))]
#[derive(Debug)]
pub struct Gpu(());

#[cfg(not(feature = "cuda"))]
impl Gpu {
    /// Always [`Error::NotCompiled`] in a build without the `cuda` feature.
    pub fn new(_ordinal: usize) -> Result<Self> {
        Err(Error::NotCompiled)
    }
}

/// Forward outputs of the cosine head.
#[derive(Clone, Debug, PartialEq)]
pub struct CosineFwd {
    /// Unscaled cosines, B×C.
    pub cos: Vec<f32>,
    /// Logits σ·cos, B×C.
    pub z: Vec<f32>,
    /// max(‖F_b‖, ε), B.
    pub f_norm: Vec<f32>,
    /// max(‖Θ_c‖, ε), C.
    pub t_norm: Vec<f32>,
}

/// Backward outputs of the cosine head.
#[derive(Clone, Debug, PartialEq)]
pub struct CosineBwd {
    /// ∂L/∂F, B×D.
    pub df: Vec<f32>,
    /// ∂L/∂Θ, C×D.
    pub dtheta: Vec<f32>,
    /// ∂L/∂σ.
    pub dsigma: f32,
}

/// Checks `len == rows·cols` for a named operand.
#[cfg(feature = "cuda")]
pub(crate) fn check_len(
    op: &'static str,
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
) -> Result<()> {
    if len != rows * cols {
        return Err(Error::Shape {
            op,
            detail: format!("{what} has {len} elements, expected {rows}×{cols}"),
        });
    }
    Ok(())
}
