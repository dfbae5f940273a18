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
fn strides(t: Transpose, rows: usize, cols: usize) -> (isize, isize) {
    match t {
        // (row stride, column stride)
        Transpose::No => (cols as isize, 1),
        Transpose::Yes => (1, rows as isize),
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

/// [`gemm`] for callers that have already validated the lengths (checked again in debug builds).
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
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(T::zero());
        }
        return;
    }
    let (a_rs, a_cs) = strides(ta, m, k);
    let (b_rs, b_cs) = strides(tb, k, n);
    // SAFETY: the lengths were checked above, so every index the strides reach for an
    // `m×k`, `k×n` and `m×n` matrix lies inside `a`, `b` and `c`; `c` is borrowed mutably
    // and cannot alias `a` or `b`. `T` is f32 or f64, both supported by `gemm`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Naive triple loop with the same contract as [`gemm`]; the obviously-right reference.
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
                acc += a[i * a_rs as usize + p * a_cs as usize]
                    * b[p * b_rs as usize + j * b_cs as usize];
            }
            let dst = &mut c[i * n + j];
            *dst = if accumulate { *dst + acc } else { acc };
        }
    }
    Ok(())
}

/// Matrix product of two 2-D tensors: `(M×K)·(K×N) → M×N`, with optional transposes.
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
