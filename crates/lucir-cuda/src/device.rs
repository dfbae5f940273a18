//! The device handle: one CUDA context and stream, every kernel module loaded once into typed
//! handles, and the transfer helpers the op launchers share (built with the `cuda` feature
//! only).

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use crate::conv2d::CudnnState;
use crate::kernels::{ptx, Kernel, BLOCK};
use crate::{cosine_logits, elementwise, feature_distill, margin_rank, Error, Result};

/// Maps a driver error of operation `op` to [`Error::Driver`].
pub(crate) fn driver(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::Driver {
        op,
        detail: e.to_string(),
    }
}

/// Blocks of `per` threads covering `n` items (at least one).
pub(crate) fn grid(n: usize, per: u32) -> u32 {
    (n as u32).div_ceil(per).max(1)
}

/// `v` as a 32-bit kernel argument.
pub(crate) fn i32_of(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Shape {
        op,
        detail: format!("{v} does not fit a 32-bit kernel argument"),
    })
}

/// Most blocks a grid-stride launch uses (enough to fill any current card several times).
const MAX_BLOCKS: u32 = 65_535 * 4;

/// One thread per element of `n`, blocks of [`BLOCK`].
pub(crate) fn per_element(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid(n, BLOCK), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid-stride loop over `n` elements: [`per_element`] capped at `MAX_BLOCKS` blocks.
pub(crate) fn grid_stride(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid(n, BLOCK).min(MAX_BLOCKS), 1, 1),
        ..per_element(n)
    }
}

/// One block of [`BLOCK`] threads per row of `b` (at least one block).
pub(crate) fn per_row(b: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (b.max(1) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of 1024 threads: a whole-buffer reduction into one value.
pub(crate) fn one_block() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1024, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The functions of a module with one forward and one backward kernel, in that order.
#[derive(Debug)]
pub(crate) struct FwdBwd {
    pub(crate) fwd: CudaFunction,
    pub(crate) bwd: CudaFunction,
}

impl FwdBwd {
    pub(crate) fn load(ctx: &Arc<CudaContext>, k: &Kernel) -> Result<Self> {
        let [fwd, bwd] = load(ctx, k)?;
        Ok(Self { fwd, bwd })
    }
}

/// A null device pointer, for optional kernel inputs.
pub(crate) static NULL: u64 = 0;

/// One CUDA device with every kernel module loaded (once, at construction).
#[derive(Debug)]
pub struct Gpu {
    ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    /// cuDNN, opened at the first convolution (`conv2d.rs`).
    pub(crate) cudnn: OnceLock<Result<Mutex<CudnnState>>>,
    /// Convolutions through im2col and cuBLAS even where cuDNN loads (`im2col.rs`).
    pub(crate) im2col_forced: AtomicBool,
    /// Floats of column matrix per chunk of images there (`im2col.rs`).
    pub(crate) im2col_chunk: AtomicUsize,
    pub(crate) im2col: crate::im2col::Kernels,
    pub(crate) elementwise: elementwise::Kernels,
    pub(crate) linear: crate::linear::Kernels,
    pub(crate) sgd: crate::sgd::Kernels,
    pub(crate) normalize: crate::normalize::Kernels,
    pub(crate) scale: crate::scale::Kernels,
    pub(crate) reduce: crate::reduce::Kernels,
    pub(crate) kd: crate::kd::Kernels,
    pub(crate) augment: crate::augment::Kernels,
    pub(crate) cosine_logits: cosine_logits::Kernels,
    pub(crate) margin_rank: margin_rank::Kernels,
    pub(crate) feature_distill: feature_distill::Kernels,
    pub(crate) batch_norm: crate::batch_norm::Kernels,
    pub(crate) pool: crate::pool::Kernels,
    pub(crate) softmax: crate::softmax::Kernels,
}

impl Gpu {
    /// Opens device `ordinal`. Probes for the driver library first, so a machine without CUDA
    /// gets [`Error::NoDevice`] instead of a panic.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only checks whether the driver library can be loaded; no CUDA call is made.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::NoDevice(
                "the CUDA driver library (libcuda) is not installed".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::NoDevice(e.to_string()))?;
        // Everything runs in order on one stream of our own, so cudarc's per-buffer events
        // (two created, recorded and destroyed for every allocation, to order buffers between
        // streams) buy nothing and cost driver calls on every launch. Tracking is off before
        // the first buffer exists.
        // SAFETY: no buffer is ever used on a second stream: every launch, copy, cuBLAS and
        // cuDNN call of this handle goes to `stream`.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own rather than the legacy default stream, which cannot be captured
        // into a CUDA graph and synchronises with every other stream of the context.
        let stream = ctx.new_stream().map_err(driver("cuStreamCreate"))?;
        // SAFETY: only checks whether the cuBLAS library can be loaded (cudarc panics on first
        // use of a library it cannot load).
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::MissingLibrary {
                lib: "cuBLAS (libcublas.so.12)",
                hint: "put the folder that holds it (a CUDA toolkit's lib64, or a PyTorch \
                       install's site-packages/nvidia/cublas/lib) on LD_LIBRARY_PATH",
            });
        }
        let blas = CudaBlas::new(stream.clone()).map_err(|e| Error::Driver {
            op: "cublasCreate",
            detail: e.to_string(),
        })?;
        Ok(Self {
            blas,
            cudnn: OnceLock::new(),
            im2col_forced: AtomicBool::new(false),
            im2col_chunk: AtomicUsize::new(crate::im2col::COL_FLOATS),
            im2col: crate::im2col::Kernels::load(&ctx)?,
            elementwise: elementwise::Kernels::load(&ctx)?,
            linear: crate::linear::kernels(&ctx)?,
            sgd: crate::sgd::Kernels::load(&ctx)?,
            normalize: crate::normalize::kernels(&ctx)?,
            scale: crate::scale::Kernels::load(&ctx)?,
            reduce: crate::reduce::Kernels::load(&ctx)?,
            kd: crate::kd::Kernels::load(&ctx)?,
            augment: crate::augment::Kernels::load(&ctx)?,
            cosine_logits: cosine_logits::Kernels::load(&ctx)?,
            margin_rank: margin_rank::kernels(&ctx)?,
            feature_distill: feature_distill::kernels(&ctx)?,
            batch_norm: crate::batch_norm::Kernels::load(&ctx)?,
            pool: crate::pool::Kernels::load(&ctx)?,
            softmax: crate::softmax::Kernels::load(&ctx)?,
            ctx,
            stream,
        })
    }

    /// The device's name.
    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "CUDA device".into())
    }

    /// Device memory in use (all of the card's, by every process) and its total, in bytes.
    pub fn memory(&self) -> Result<(usize, usize)> {
        let (free, total) = self.ctx.mem_get_info().map_err(driver("mem_get_info"))?;
        Ok((total - free, total))
    }

    /// Waits until every launch so far has finished (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver("synchronize"))
    }

    /// Copies `v` to a new device buffer: the transfer every launcher makes of its inputs
    /// (public for benchmarks that separate transfers from kernels).
    pub fn upload<T: DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        if v.is_empty() {
            // No zero-byte allocation: an empty tensor gets a one-element buffer nothing reads.
            // SAFETY: the buffer is never read (its tensor has no element).
            return unsafe { self.stream.alloc::<T>(1) }.map_err(driver("alloc"));
        }
        self.stream.clone_htod(v).map_err(driver("clone_htod"))
    }

    /// A device buffer of `n` (at least one) elements whose contents are undefined: for
    /// outputs a kernel writes in full (a caller that reads it before writing reads garbage,
    /// never out of bounds).
    pub fn output<T: DeviceRepr>(&self, n: usize) -> Result<CudaSlice<T>> {
        // SAFETY: callers pass buffers only to kernels that write every element before anything
        // reads them (each launcher says so at its launch).
        unsafe { self.stream.alloc(n.max(1)) }.map_err(driver("alloc"))
    }

    /// A zeroed device buffer of `n` (at least one) elements: for outputs a kernel accumulates
    /// into.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(n.max(1))
            .map_err(driver("alloc_zeros"))
    }

    /// A copy of device buffer `v` in a new buffer of the same length.
    pub fn copy<T: DeviceRepr>(&self, v: &CudaSlice<T>) -> Result<CudaSlice<T>> {
        self.stream.clone_dtod(v).map_err(driver("clone_dtod"))
    }

    /// The first `n` elements of a device buffer: the transfer every launcher makes of its
    /// outputs (public for benchmarks).
    pub fn download(&self, v: &CudaSlice<f32>, n: usize) -> Result<Vec<f32>> {
        let mut out = self.stream.clone_dtoh(v).map_err(driver("clone_dtoh"))?;
        out.truncate(n);
        Ok(out)
    }
}

/// The functions of kernel module `k`, in the order of `k.functions`.
pub(crate) fn load<const N: usize>(
    ctx: &Arc<CudaContext>,
    k: &Kernel,
) -> Result<[CudaFunction; N]> {
    let text = ptx(k.name).ok_or_else(|| Error::Driver {
        op: "load_module",
        detail: format!("no PTX for {}", k.name),
    })?;
    let module = ctx
        .load_module(Ptx::from_src(text))
        .map_err(driver("load_module"))?;
    let functions = k
        .functions
        .iter()
        .map(|f| module.load_function(f).map_err(driver("load_function")))
        .collect::<Result<Vec<_>>>()?;
    let found = functions.len();
    functions.try_into().map_err(|_| Error::Driver {
        op: "load_module",
        detail: format!("{} lists {found} functions, its launcher takes {N}", k.name),
    })
}
