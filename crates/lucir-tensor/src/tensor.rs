//! The `Tensor` type: a contiguous row-major ndarray on the CPU, or an f32 buffer on a CUDA
//! device ([`crate::device`]), plus the checks every op needs.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::device::{CudaStorage, Device};
use crate::{Error, Float, Result};

/// A dense row-major tensor. On the CPU the storage is an `ndarray::ArrayD` that is always in
/// standard (C-contiguous) layout, so ops can work on plain slices; on a CUDA device it is an
/// f32 buffer of the same row-major layout.
#[derive(Clone, Debug)]
pub struct Tensor<T> {
    data: Data<T>,
}

/// The storage enum: which device holds the elements.
#[derive(Clone, Debug)]
enum Data<T> {
    Cpu(ArrayD<T>),
    Cuda(Vec<usize>, CudaStorage),
}

/// Equal shapes and elements; a device tensor is compared by its elements read back (a tensor
/// that cannot be read back equals nothing).
impl<T: Float> PartialEq for Tensor<T> {
    fn eq(&self, other: &Self) -> bool {
        match (&self.data, &other.data) {
            (Data::Cpu(a), Data::Cpu(b)) => a == b,
            _ => {
                self.shape() == other.shape()
                    && matches!((self.to_cpu(), other.to_cpu()), (Ok(a), Ok(b)) if a == b)
            }
        }
    }
}

impl<T: Float> Tensor<T> {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self {
            data: Data::Cpu(ArrayD::zeros(IxDyn(shape))),
        }
    }

    /// A tensor of `shape` whose elements `fill` writes, allocated without zeroing (for outputs
    /// every element of which an op computes); returns what `fill` returns too.
    ///
    /// # Safety
    /// `fill` must write every element of the slice it is given (if it panics instead, nothing
    /// uninitialised is read: the buffer is dropped empty).
    pub(crate) unsafe fn filled<R>(
        shape: &[usize],
        fill: impl FnOnce(&mut [std::mem::MaybeUninit<T>]) -> R,
    ) -> (Self, R) {
        // SAFETY: `fill` writes every element (this function's contract).
        let (v, r) = unsafe { filled_vec(shape.iter().product(), fill) };
        let data = ArrayD::from_shape_vec(IxDyn(shape), v).expect("n is the shape's element count");
        (
            Self {
                data: Data::Cpu(data),
            },
            r,
        )
    }

    /// A tensor of zeros on `device`.
    pub fn zeros_on(device: &Device, shape: &[usize]) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self::zeros(shape)),
            Device::Cuda(gpu) => crate::cuda_ops::zeros(gpu, shape),
        }
    }

    /// A tensor of `shape` filled with `value` on `device` (f32 on a CUDA device).
    pub fn full_on(device: &Device, shape: &[usize], value: T) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self::full(shape, value)),
            Device::Cuda(gpu) => crate::cuda_ops::full(gpu, shape, value.as_f64() as f32),
        }
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: T) -> Self {
        Self {
            data: Data::Cpu(ArrayD::from_elem(IxDyn(shape), value)),
        }
    }

    /// A one-element tensor of shape `[1]`.
    pub fn scalar(value: T) -> Self {
        Self::full(&[1], value)
    }

    /// Wraps `data` (row-major) as a tensor of `shape`; errors when the lengths differ.
    pub fn from_vec(shape: &[usize], data: Vec<T>) -> Result<Self> {
        let want: usize = shape.iter().product();
        if want != data.len() {
            return Err(Error::shape(
                "Tensor::from_vec",
                format!("shape {shape:?} needs {want} elements, got {}", data.len()),
            ));
        }
        let data = ArrayD::from_shape_vec(IxDyn(shape), data)
            .map_err(|e| Error::shape("Tensor::from_vec", e.to_string()))?;
        Ok(Self {
            data: Data::Cpu(data),
        })
    }

    /// Builds a tensor from an ndarray of any layout (copied into standard layout).
    pub fn from_ndarray(array: ArrayD<T>) -> Self {
        let shape = array.shape().to_vec();
        let data: Vec<T> = array.iter().copied().collect();
        Self {
            data: Data::Cpu(
                ArrayD::from_shape_vec(IxDyn(&shape), data)
                    .expect("element count equals the shape's product"),
            ),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match &self.data {
            Data::Cpu(a) => a.shape(),
            Data::Cuda(shape, _) => shape,
        }
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape().len()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements in row-major order.
    ///
    /// # Panics
    /// On a device tensor: the host-side accessors ([`Tensor::as_slice`],
    /// [`Tensor::as_slice_mut`], [`Tensor::into_vec`], [`Tensor::view`], [`Tensor::map`],
    /// [`Tensor::cast`], [`Tensor::sum_sq`], [`Tensor::all_finite`]) are for CPU code; every
    /// op checks the device first, and code that wants a device tensor's elements reads them
    /// back with [`Tensor::to_cpu`].
    pub fn as_slice(&self) -> &[T] {
        self.cpu("Tensor::as_slice")
            .as_slice()
            .expect("tensor storage is contiguous by construction")
    }

    /// The elements in row-major order, mutably (CPU only, see [`Tensor::as_slice`]).
    pub fn as_slice_mut(&mut self) -> &mut [T] {
        match &mut self.data {
            Data::Cpu(a) => a
                .as_slice_mut()
                .expect("tensor storage is contiguous by construction"),
            Data::Cuda(..) => panic!("{}", Self::host_only("Tensor::as_slice_mut")),
        }
    }

    /// Takes the elements out (CPU only, see [`Tensor::as_slice`]).
    pub fn into_vec(self) -> Vec<T> {
        match self.data {
            Data::Cpu(a) => {
                let (v, offset) = a.into_raw_vec_and_offset();
                debug_assert!(offset.unwrap_or(0) == 0);
                v
            }
            Data::Cuda(..) => panic!("{}", Self::host_only("Tensor::into_vec")),
        }
    }

    /// An ndarray view, for interop (CPU only, see [`Tensor::as_slice`]).
    pub fn view(&self) -> ArrayViewD<'_, T> {
        self.cpu("Tensor::view").view()
    }

    /// The ndarray of a CPU tensor; panics naming `what` on a device tensor.
    fn cpu(&self, what: &'static str) -> &ArrayD<T> {
        match &self.data {
            Data::Cpu(a) => a,
            Data::Cuda(..) => panic!("{}", Self::host_only(what)),
        }
    }

    fn host_only(what: &str) -> String {
        format!("{what} reads host memory, and this tensor is on a CUDA device (use to_cpu)")
    }

    /// Where the elements live.
    pub fn device(&self) -> Device {
        match &self.data {
            Data::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Data::Cuda(_, c) => Device::Cuda(c.gpu.clone()),
            #[cfg(not(feature = "cuda"))]
            Data::Cuda(_, c) => match *c {},
        }
    }

    /// Whether the elements are in host memory.
    pub fn is_cpu(&self) -> bool {
        matches!(self.data, Data::Cpu(_))
    }

    /// The device storage of a device tensor.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn cuda(&self) -> Option<&CudaStorage> {
        match &self.data {
            Data::Cpu(_) => None,
            Data::Cuda(_, c) => Some(c),
        }
    }

    /// The device storage of a device tensor, mutably.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn cuda_mut(&mut self) -> Option<&mut CudaStorage> {
        match &mut self.data {
            Data::Cpu(_) => None,
            Data::Cuda(_, c) => Some(c),
        }
    }

    /// A device tensor of `shape` over `storage` (its buffer holds at least the shape's
    /// element count).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn from_cuda(shape: &[usize], storage: CudaStorage) -> Self {
        Self {
            data: Data::Cuda(shape.to_vec(), storage),
        }
    }

    /// A copy on `device` (a clone when it is there already). Device tensors are f32: moving an
    /// f64 tensor to a CUDA device is an error.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        match device {
            Device::Cpu => self.to_cpu(),
            Device::Cuda(gpu) => {
                if self.device() == *device {
                    return Ok(self.clone());
                }
                let host = self.to_cpu()?;
                let Some(v) = T::f32_slice(host.as_slice()) else {
                    return Err(Error::Device {
                        op: "Tensor::to_device",
                        detail: format!(
                            "{} tensors stay on the cpu (device tensors are f32)",
                            T::NAME
                        ),
                    });
                };
                crate::cuda_ops::upload(gpu, self.shape(), v)
            }
        }
    }

    /// The tensor moved to `device`: itself, without a copy, when it is there already.
    pub fn into_device(self, device: &Device) -> Result<Self> {
        if self.device() == *device {
            return Ok(self);
        }
        self.to_device(device)
    }

    /// The tensor in host memory: borrowed when it is there already, else read back.
    pub fn host(&self) -> Result<std::borrow::Cow<'_, Self>> {
        Ok(match &self.data {
            Data::Cpu(_) => std::borrow::Cow::Borrowed(self),
            Data::Cuda(..) => std::borrow::Cow::Owned(self.to_cpu()?),
        })
    }

    /// A copy in host memory (a clone when it is there already).
    pub fn to_cpu(&self) -> Result<Self> {
        match &self.data {
            Data::Cpu(_) => Ok(self.clone()),
            Data::Cuda(shape, c) => crate::cuda_ops::download(shape, c),
        }
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        let have = self.shape().to_vec();
        let want: usize = shape.iter().product();
        if want != self.len() {
            return Err(Error::shape(
                "Tensor::reshape",
                format!("cannot view {have:?} as {shape:?}"),
            ));
        }
        match self.data {
            Data::Cpu(_) => Self::from_vec(shape, self.into_vec()),
            Data::Cuda(_, c) => Ok(Self::from_cuda(shape, c)),
        }
    }

    /// Converts the element type (f32 ↔ f64; CPU only, see [`Tensor::as_slice`]).
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor {
            data: Data::Cpu(self.cpu("Tensor::cast").mapv(|v| U::of(v.as_f64()))),
        }
    }

    /// Applies `f` to every element (CPU only, see [`Tensor::as_slice`]).
    pub fn map(&self, f: impl Fn(T) -> T) -> Self {
        Self {
            data: Data::Cpu(self.cpu("Tensor::map").mapv(f)),
        }
    }

    /// The only element of a one-element tensor (read back from a device).
    pub fn item(&self) -> Result<T> {
        if !self.is_cpu() {
            return self.to_cpu()?.item();
        }
        match self.as_slice() {
            [v] => Ok(*v),
            _ => Err(Error::shape(
                "Tensor::item",
                format!("expected one element, shape is {:?}", self.shape()),
            )),
        }
    }

    /// `self += other`, elementwise; shapes must match.
    pub fn add_assign(&mut self, other: &Tensor<T>) -> Result<()> {
        self.expect_shape("Tensor::add_assign", other.shape())?;
        if crate::device::common("Tensor::add_assign", &[self, other])? != Device::Cpu {
            return crate::cuda_ops::add_assign(self, other);
        }
        crate::simd::zip_apply(self.as_slice_mut(), other.as_slice(), |a, b| a + b);
        Ok(())
    }

    /// `Σ x²` in f64 (CPU only, see [`Tensor::as_slice`]).
    pub fn sum_sq(&self) -> f64 {
        self.as_slice()
            .iter()
            .map(|v| v.as_f64() * v.as_f64())
            .sum()
    }

    /// Whether every element is finite (CPU only, see [`Tensor::as_slice`]).
    pub fn all_finite(&self) -> bool {
        self.as_slice().iter().all(|v| v.is_finite())
    }

    /// Errors unless the shape is exactly `shape`.
    pub fn expect_shape(&self, op: &'static str, shape: &[usize]) -> Result<()> {
        if self.shape() != shape {
            return Err(Error::shape(
                op,
                format!("expected {shape:?}, got {:?}", self.shape()),
            ));
        }
        Ok(())
    }

    /// Errors unless the tensor has `n` dimensions; returns the shape.
    pub fn expect_ndim(&self, op: &'static str, n: usize) -> Result<&[usize]> {
        if self.ndim() != n {
            return Err(Error::shape(
                op,
                format!("expected {n} dimensions, got shape {:?}", self.shape()),
            ));
        }
        Ok(self.shape())
    }

    /// The shape as `[rows, cols]` of a matrix.
    pub fn dims2(&self, op: &'static str) -> Result<[usize; 2]> {
        let s = self.expect_ndim(op, 2)?;
        Ok([s[0], s[1]])
    }

    /// The shape as `[N, C, H, W]` of an image batch.
    pub fn dims4(&self, op: &'static str) -> Result<[usize; 4]> {
        let s = self.expect_ndim(op, 4)?;
        Ok([s[0], s[1], s[2], s[3]])
    }
}

/// A vector of `n` elements that `fill` writes, allocated without zeroing; returns what `fill`
/// returns too. [`Tensor::filled`] and the f32-only direct convolution kernels use it.
///
/// # Safety
/// `fill` must write every element of the slice it is given (if it panics instead, nothing
/// uninitialised is read: the buffer is dropped empty).
pub(crate) unsafe fn filled_vec<T, R>(
    n: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<T>]) -> R,
) -> (Vec<T>, R) {
    let mut v: Vec<T> = Vec::with_capacity(n);
    let r = fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: `fill` wrote all n elements (the caller's contract).
    unsafe { v.set_len(n) };
    (v, r)
}
