//! The `Tensor` type: a contiguous row-major ndarray plus the checks every op needs.

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::{Error, Float, Result};

/// A dense row-major tensor. The storage is an `ndarray::ArrayD` that is always in standard
/// (C-contiguous) layout, so ops can work on plain slices.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    data: ArrayD<T>,
}

impl<T: Float> Tensor<T> {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self {
            data: ArrayD::zeros(IxDyn(shape)),
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
        (Self { data }, r)
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: T) -> Self {
        Self {
            data: ArrayD::from_elem(IxDyn(shape), value),
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
        Ok(Self { data })
    }

    /// Builds a tensor from an ndarray of any layout (copied into standard layout).
    pub fn from_ndarray(array: ArrayD<T>) -> Self {
        let shape = array.shape().to_vec();
        let data: Vec<T> = array.iter().copied().collect();
        Self {
            data: ArrayD::from_shape_vec(IxDyn(&shape), data)
                .expect("element count equals the shape's product"),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.data.ndim()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements in row-major order.
    pub fn as_slice(&self) -> &[T] {
        self.data
            .as_slice()
            .expect("tensor storage is contiguous by construction")
    }

    /// The elements in row-major order, mutably.
    pub fn as_slice_mut(&mut self) -> &mut [T] {
        self.data
            .as_slice_mut()
            .expect("tensor storage is contiguous by construction")
    }

    /// Takes the elements out.
    pub fn into_vec(self) -> Vec<T> {
        let (v, offset) = self.data.into_raw_vec_and_offset();
        debug_assert!(offset.unwrap_or(0) == 0);
        v
    }

    /// An ndarray view, for interop.
    pub fn view(&self) -> ArrayViewD<'_, T> {
        self.data.view()
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
        Self::from_vec(shape, self.into_vec())
    }

    /// Converts the element type (f32 ↔ f64).
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor {
            data: self.data.mapv(|v| U::of(v.as_f64())),
        }
    }

    /// Applies `f` to every element.
    pub fn map(&self, f: impl Fn(T) -> T) -> Self {
        Self {
            data: self.data.mapv(f),
        }
    }

    /// The only element of a one-element tensor.
    pub fn item(&self) -> Result<T> {
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
        crate::simd::zip_apply(self.as_slice_mut(), other.as_slice(), |a, b| a + b);
        Ok(())
    }

    /// `Σ x²` in f64.
    pub fn sum_sq(&self) -> f64 {
        self.as_slice()
            .iter()
            .map(|v| v.as_f64() * v.as_f64())
            .sum()
    }

    /// Whether every element is finite.
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
