//! Where a tensor's elements live: the [`Device`] a run chooses once, and the CUDA storage arm
//! of [`Tensor`] (docs/design.md §5, "Training on the GPU: one definition through a storage
//! enum").
//!
//! A tensor holds either an ndarray on the CPU or an f32 buffer on a CUDA device. Each op
//! matches on that: the CPU arm is the CPU code (its bits are the reference), the CUDA arm calls
//! the device launcher of `lucir-cuda`, and an op whose CUDA arm is not written yet says so
//! ([`Error::Device`]) instead of computing anything. Without the `cuda` feature the CUDA arm's
//! type [`CudaStorage`] is uninhabited, so no device tensor can exist and every match on it
//! compiles away; [`Device::cuda`] then returns `Error::Cuda(NotCompiled)`.

use std::sync::Arc;

use crate::{Error, Float, Result, Tensor};

/// The GPU handle a device tensor belongs to (one per run).
pub type Gpu = Arc<lucir_cuda::Gpu>;

/// Where tensors live.
#[derive(Clone, Debug, Default)]
pub enum Device {
    /// Host memory, the CPU ops.
    #[default]
    Cpu,
    /// A CUDA device's memory, its launchers (f32 only).
    Cuda(Gpu),
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Cuda(a), Device::Cuda(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Device {
    /// Opens CUDA device `ordinal`: `Error::Cuda` naming what is missing (no `cuda` feature in
    /// this build, no driver, no device, no cuBLAS) when it cannot.
    pub fn cuda(ordinal: usize) -> Result<Self> {
        Ok(Device::Cuda(Arc::new(lucir_cuda::Gpu::new(ordinal)?)))
    }

    /// `"cpu"` or `"cuda"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda(_) => "cuda",
        }
    }
}

/// The elements of a device tensor: an f32 buffer and the GPU it lives on. The buffer is
/// shared between clones and copied when one of them writes to it while shared
/// (`CudaStorage::buf_mut`): cloning a device tensor (a tape keeping a value, a layer's
/// statistics handed to its backward pass) costs no device memory and no launch, and a copy
/// that finds the device out of memory returns that error instead of panicking.
#[cfg(feature = "cuda")]
#[derive(Clone, Debug)]
pub struct CudaStorage {
    pub(crate) gpu: Gpu,
    pub(crate) buf: Arc<lucir_cuda::Buffer>,
}

/// The elements of a device tensor; uninhabited in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
#[derive(Clone, Debug)]
pub enum CudaStorage {}

/// Indices on a device (a max pool's positions): an i32 buffer.
#[cfg(feature = "cuda")]
#[derive(Clone, Debug)]
pub struct CudaIndices(pub(crate) lucir_cuda::IndexBuffer);

/// Indices on a device; uninhabited in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
#[derive(Clone, Debug)]
pub enum CudaIndices {}

/// The error of an op that has no CUDA arm yet, or whose operands are on different devices.
pub(crate) fn unsupported(op: &'static str, device: &Device) -> Error {
    Error::Device {
        op,
        detail: format!("has no {} implementation yet", device.kind()),
    }
}

/// Errors unless every operand is on the CPU: the guard of an op whose CUDA arm is not written.
pub(crate) fn on_cpu<T: Float>(op: &'static str, operands: &[&Tensor<T>]) -> Result<()> {
    match operands.iter().find(|t| !t.is_cpu()) {
        Some(t) => Err(unsupported(op, &t.device())),
        None => Ok(()),
    }
}

/// The device all operands are on: an error naming `op` when they differ.
pub(crate) fn common<T: Float>(op: &'static str, operands: &[&Tensor<T>]) -> Result<Device> {
    let first = operands.first().map(|t| t.device()).unwrap_or_default();
    for t in operands.iter().skip(1) {
        let d = t.device();
        if d != first {
            return Err(Error::Device {
                op,
                detail: format!("operands on {} and {}", first.kind(), d.kind()),
            });
        }
    }
    Ok(first)
}

#[cfg(feature = "cuda")]
impl CudaStorage {
    /// Storage over a buffer of `gpu`.
    pub(crate) fn new(gpu: Gpu, buf: lucir_cuda::Buffer) -> Self {
        Self {
            gpu,
            buf: Arc::new(buf),
        }
    }

    /// Storage over a buffer that other storage may share.
    pub(crate) fn shared(gpu: Gpu, buf: Arc<lucir_cuda::Buffer>) -> Self {
        Self { gpu, buf }
    }

    /// The buffer, to write to: copied first when another tensor shares it (an error, not a
    /// panic, when the device has no memory left for the copy).
    pub(crate) fn buf_mut(&mut self) -> Result<&mut lucir_cuda::Buffer> {
        if Arc::get_mut(&mut self.buf).is_none() {
            self.buf = Arc::new(self.gpu.copy(&self.buf)?);
        }
        Arc::get_mut(&mut self.buf).ok_or(Error::Device {
            op: "CudaStorage::buf_mut",
            detail: "a freshly copied buffer is shared".into(),
        })
    }

    /// The buffer of a tensor on the device, for ops that read it.
    pub(crate) fn of<'a, T: Float>(op: &'static str, t: &'a Tensor<T>) -> Result<&'a CudaStorage> {
        t.cuda().ok_or_else(|| Error::Device {
            op,
            detail: "operand is on the cpu, the others on cuda".into(),
        })
    }
}
