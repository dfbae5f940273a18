//! CUDA kernels for the three LUCIR head computations — cosine logits, margin ranking and
//! feature distillation (docs/design.md §3 "Gradients of the head", §5) — loaded through cudarc.
//!
//! This is the only crate that knows cudarc, and it knows nothing of `Tensor`: launchers take
//! host slices (row-major f32) and return host vectors, keeping what a backward pass needs on
//! the device between the two. One module per op, named as its kernel file: `kernels/<op>.cu`
//! ↔ `src/<op>.rs`. `cargo xtask kernels` compiles the kernels to the committed
//! `kernels/ptx/*.ptx`, which this crate embeds and loads once per device into typed handles.
//! Everything is behind the `cuda` feature (off by default); without it, or without a GPU,
//! [`Gpu::new`] returns a typed error and nothing panics.
//!
//! Shapes: B rows (batch), C classes, D feature width.

#[cfg(feature = "cuda")]
mod augment;
#[cfg(feature = "cuda")]
mod batch_norm;
#[cfg(feature = "cuda")]
mod conv2d;
#[cfg(feature = "cuda")]
mod cosine_logits;
#[cfg(feature = "cuda")]
mod device;
#[cfg(feature = "cuda")]
mod elementwise;
#[cfg(feature = "cuda")]
mod feature_distill;
#[cfg(feature = "cuda")]
mod im2col;
#[cfg(feature = "cuda")]
mod kd;
mod kernels;
#[cfg(feature = "cuda")]
mod linear;
#[cfg(feature = "cuda")]
mod margin_rank;
#[cfg(feature = "cuda")]
mod normalize;
#[cfg(feature = "cuda")]
mod pool;
#[cfg(feature = "cuda")]
mod reduce;
#[cfg(feature = "cuda")]
mod scale;
#[cfg(feature = "cuda")]
mod sgd;
#[cfg(feature = "cuda")]
mod softmax;

#[cfg(feature = "cuda")]
pub use batch_norm::{BatchNormGrads, BatchNormMode, BatchNormRelu, BatchNormStats, RunningStats};
#[cfg(feature = "cuda")]
pub use conv2d::ConvShape;
#[cfg(feature = "cuda")]
pub use cosine_logits::{CosineLogits, CosineLogitsGrads};
#[cfg(feature = "cuda")]
pub use device::Gpu;
/// A device buffer of f32 elements: what a device tensor holds.
#[cfg(feature = "cuda")]
pub type Buffer = cudarc::driver::CudaSlice<f32>;
/// A device buffer of i32: class labels, max-pool positions.
#[cfg(feature = "cuda")]
pub type IndexBuffer = cudarc::driver::CudaSlice<i32>;
/// A device buffer of bytes: a split's u8 images.
#[cfg(feature = "cuda")]
pub type ByteBuffer = cudarc::driver::CudaSlice<u8>;
#[cfg(feature = "cuda")]
pub use augment::{AugmentArgs, AugmentPick};
#[cfg(feature = "cuda")]
pub use feature_distill::FeatureDistill;
pub use kernels::{
    Kernel, BLOCK, COSINE_LOGITS, ELEMENTWISE, FEATURE_DISTILL, KERNELS, MARGIN_RANK, MAX_K,
    MR_ROWS, TILE,
};
pub use kernels::{
    AUGMENT, BATCH_NORM, BN_THREADS, KD, LINEAR, NORMALIZE, POOL, REDUCE, SCALE, SGD, SOFTMAX,
};
#[cfg(feature = "cuda")]
pub use margin_rank::{MarginRank, MarginRankArgs};
#[cfg(feature = "cuda")]
pub use pool::{MaxPool, MaxPoolWindow};
#[cfg(feature = "cuda")]
pub use sgd::{SgdSlot, SgdStep};
#[cfg(feature = "cuda")]
pub use softmax::{CrossEntropy, CrossEntropyFused};

/// What can go wrong reaching or using the GPU.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The crate was built without the `cuda` feature.
    #[error("lucir-cuda was built without the `cuda` feature")]
    NotCompiled,
    /// No CUDA driver library or no device.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// A CUDA library the device ops need cannot be loaded.
    #[error("{lib} not found: {hint}")]
    MissingLibrary {
        lib: &'static str,
        hint: &'static str,
    },
    /// A CUDA driver call failed.
    #[error("CUDA {op}: {detail}")]
    Driver { op: &'static str, detail: String },
    /// Inputs do not fit the launcher's shapes.
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
}

/// Result of a CUDA call.
pub type Result<T> = std::result::Result<T, Error>;

/// Stand-in for the GPU handle when the crate is built without CUDA support: it cannot be
/// made, so nothing that holds one can exist.
#[cfg(not(feature = "cuda"))]
#[derive(Debug)]
pub struct Gpu(std::convert::Infallible);

#[cfg(not(feature = "cuda"))]
impl Gpu {
    /// Always [`Error::NotCompiled`] in a build without the `cuda` feature.
    pub fn new(_ordinal: usize) -> Result<Self> {
        Err(Error::NotCompiled)
    }

    /// The device's name (never called: no stand-in exists).
    pub fn name(&self) -> String {
        match self.0 {}
    }

    /// Device memory in use and its total (never called: no stand-in exists).
    pub fn memory(&self) -> Result<(usize, usize)> {
        match self.0 {}
    }
}

/// Checks `len == rows·cols` for a named operand. An empty operand (`rows·cols = 0`) may
/// hold the one element every device buffer has at least (see `Gpu::upload`): nothing reads
/// it, and the launch that follows has no work (every kernel checks its index against the
/// sizes it is given), so an empty tensor gets an empty result as on the CPU.
#[cfg(feature = "cuda")]
pub(crate) fn check_len(
    op: &'static str,
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let placeholder = rows * cols == 0 && len == 1;
    if len != rows * cols && !placeholder {
        return Err(Error::Shape {
            op,
            detail: format!("{what} has {len} elements, expected {rows}×{cols}"),
        });
    }
    Ok(())
}

/// Errors unless every buffer holds at least `n` elements.
#[cfg(feature = "cuda")]
pub(crate) fn check_at_least(op: &'static str, n: usize, lens: &[usize]) -> Result<()> {
    match lens.iter().find(|&&l| l < n) {
        Some(l) => Err(Error::Shape {
            op,
            detail: format!("a buffer holds {l} elements, the op needs {n}"),
        }),
        None => Ok(()),
    }
}
