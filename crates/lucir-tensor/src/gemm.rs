//! Matrix multiply: `C (M×N) (+)= op(A) (M×K) · op(B) (K×N)` through the `gemm` crate, single
//! threaded (callers parallelise over images), with a naive `gemm_ref` beside it.

use crate::{Error, Float, Result, Tensor};

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    /// Use the operand as stored (row-major `rows × cols`).
    No,
    /// Use the transpose of the stored matrix.
    Yes,
}

fn check(op: &'static str, [m, n, k]: [usize; 3], a: usize, b: usize, c: usize) -> Result<()> {
    if a != m * k || b != k * n || c != m * n {
        return Err(Error::shape(
            op,
            format!(
                "M={m} N={n} K={k} needs A {} B {} C {} elements, got {a} {b} {c}",
                m * k,
                k * n,
                m * n
            ),
        ));
    }
    Ok(())
}

/// Row and column strides of a stored row-major matrix used as an `rows × cols` operand.
fn strides(t: Transpose, rows: usize, cols: usize) -> (usize, usize) {
    match t {
        // (row stride, column stride)
        Transpose::No => (cols, 1),
        Transpose::Yes => (1, rows),
    }
}

/// `C = op(A)·op(B)`, or `C += op(A)·op(B)` when `accumulate`; all slices row-major.
///
/// `A` holds `M×K` (or `K×M` when transposed), `B` holds `K×N` (or `N×K`), `C` holds `M×N`.
pub fn gemm<T: Float>(
    [m, n, k]: [usize; 3],
    a: &[T],
    ta: Transpose,
    b: &[T],
    tb: Transpose,
    c: &mut [T],
    accumulate: bool,
) -> Result<()> {
    check("gemm", [m, n, k], a.len(), b.len(), c.len())?;
    gemm_unchecked([m, n, k], a, ta, b, tb, c, accumulate);
    Ok(())
}

/// [`gemm`] for callers that have already validated the lengths; they are asserted again here
/// (in every build), since the kernels below index the slices without bounds checks.
pub(crate) fn gemm_unchecked<T: Float>(
    [m, n, k]: [usize; 3],
    a: &[T],
    ta: Transpose,
    b: &[T],
    tb: Transpose,
    c: &mut [T],
    accumulate: bool,
) {
    assert!(
        a.len() == m * k && b.len() == k * n && c.len() == m * n,
        "gemm operand lengths were validated by the caller"
    );
    gemm_strided(
        [m, n, k],
        StridedMatrix::new(a, strides(ta, m, k)),
        StridedMatrix::new(b, strides(tb, k, n)),
        StridedMatrixMut::new(c, (n, 1)),
        accumulate,
    );
}

/// A matrix stored in a slice with any (row, column) strides, in elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StridedMatrix<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

impl<'a, T> StridedMatrix<'a, T> {
    pub(crate) fn new(data: &'a [T], (rs, cs): (usize, usize)) -> Self {
        Self { data, rs, cs }
    }

    /// Whether every element of a `rows × cols` matrix lies inside the slice.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        fits(self.data.len(), rows, cols, self.rs, self.cs)
    }
}

/// The mutable counterpart of [`StridedMatrix`], for the destination.
#[derive(Debug)]
pub(crate) struct StridedMatrixMut<'a, T> {
    data: &'a mut [T],
    rs: usize,
    cs: usize,
}

impl<'a, T> StridedMatrixMut<'a, T> {
    pub(crate) fn new(data: &'a mut [T], (rs, cs): (usize, usize)) -> Self {
        Self { data, rs, cs }
    }
}

fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

/// `C = A·B` (or `C += A·B` when `accumulate`) for `A` M×K, `B` K×N, `C` M×N given with
/// explicit strides. Panics if an operand does not fit its slice.
pub(crate) fn gemm_strided<T: Float>(
    [m, n, k]: [usize; 3],
    a: StridedMatrix<'_, T>,
    b: StridedMatrix<'_, T>,
    c: StridedMatrixMut<'_, T>,
    accumulate: bool,
) {
    assert!(
        a.fits(m, k) && b.fits(k, n) && fits(c.data.len(), m, n, c.rs, c.cs),
        "gemm operands fit their slices"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.rs + j * c.cs] = T::zero();
                }
            }
        }
        return;
    }
    // SAFETY: the assertion above keeps every index the strides reach for an `m×k`, `k×n` and
    // `m×n` matrix inside `a`, `b` and `c`; `c` is borrowed mutably and cannot alias `a` or `b`.
    // `T` is f32 or f64, both supported by `gemm`. Strides are below `isize::MAX` because they
    // index into slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data.as_mut_ptr(),
            c.cs as isize,
            c.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Naive triple loop with the same contract as [`gemm()`]; the obviously-right reference.
pub fn gemm_ref<T: Float>(
    [m, n, k]: [usize; 3],
    a: &[T],
    ta: Transpose,
    b: &[T],
    tb: Transpose,
    c: &mut [T],
    accumulate: bool,
) -> Result<()> {
    check("gemm_ref", [m, n, k], a.len(), b.len(), c.len())?;
    let (a_rs, a_cs) = strides(ta, m, k);
    let (b_rs, b_cs) = strides(tb, k, n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = T::zero();
            for p in 0..k {
                acc += a[i * a_rs + p * a_cs] * b[p * b_rs + j * b_cs];
            }
            let dst = &mut c[i * n + j];
            *dst = if accumulate { *dst + acc } else { acc };
        }
    }
    Ok(())
}

/// Matrix product of two 2-D tensors: `(M×K)·(K×N) → M×N`, with optional transposes (on the
/// CPU, or through cuBLAS on a CUDA device).
pub fn matmul<T: Float>(
    a: &Tensor<T>,
    ta: Transpose,
    b: &Tensor<T>,
    tb: Transpose,
) -> Result<Tensor<T>> {
    let [ar, ac] = a.dims2("matmul")?;
    let [br, bc] = b.dims2("matmul")?;
    let (m, ka) = if ta == Transpose::No {
        (ar, ac)
    } else {
        (ac, ar)
    };
    let (kb, n) = if tb == Transpose::No {
        (br, bc)
    } else {
        (bc, br)
    };
    if ka != kb {
        return Err(Error::shape(
            "matmul",
            format!(
                "inner dimensions differ: {:?}{} · {:?}{}",
                a.shape(),
                if ta == Transpose::Yes { "ᵀ" } else { "" },
                b.shape(),
                if tb == Transpose::Yes { "ᵀ" } else { "" }
            ),
        ));
    }
    if crate::device::common("matmul", &[a, b])? != crate::Device::Cpu {
        return crate::cuda_ops::matmul([m, n, ka], a, ta, b, tb);
    }
    let mut c = Tensor::zeros(&[m, n]);
    gemm(
        [m, n, ka],
        a.as_slice(),
        ta,
        b.as_slice(),
        tb,
        c.as_slice_mut(),
        false,
    )?;
    Ok(c)
}
