//! Elementwise ops: ReLU and addition (any shape), on the CPU or a CUDA device.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::device::{common, Device};
use crate::{cuda_ops, simd, Float, Result, Tensor};

/// Below this many elements elementwise ops stay on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// `f(a, b)` elementwise into a new tensor of `shape` (allocated without zeroing: every
/// element is written), in parallel above [`PAR_MIN`] elements.
fn zip_map<T: Float>(
    shape: &[usize],
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> T + Sync + Copy,
) -> Tensor<T> {
    let fill = |out: &mut [MaybeUninit<T>]| {
        if out.len() < PAR_MIN {
            simd::zip_map(a, b, out, f);
        } else {
            out.par_chunks_mut(PAR_MIN)
                .zip(a.par_chunks(PAR_MIN).zip(b.par_chunks(PAR_MIN)))
                .for_each(|(o, (x, y))| simd::zip_map(x, y, o, f));
        }
    };
    // SAFETY: `simd::zip_map` writes every element of each chunk, and the chunks cover the
    // buffer (`a` and `b` are at least as long: the callers check the shapes).
    unsafe { Tensor::filled(shape, fill) }.0
}

/// `y = max(x, 0)`.
pub fn relu<T: Float>(x: &Tensor<T>) -> Result<Tensor<T>> {
    if !x.is_cpu() {
        return cuda_ops::relu(x);
    }
    let xv = x.as_slice();
    Ok(zip_map(x.shape(), xv, xv, |v, _| v.max(T::zero())))
}

/// `dx = dy · [y > 0]`, from the forward output `y`; `dy` is consumed and masked in place.
pub fn relu_bwd<T: Float>(y: &Tensor<T>, mut dy: Tensor<T>) -> Result<Tensor<T>> {
    dy.expect_shape("relu_bwd", y.shape())?;
    if common("relu_bwd", &[y, &dy])? != Device::Cpu {
        return cuda_ops::relu_bwd(y, dy);
    }
    let mask = |g: &mut [T], y: &[T]| simd::zip_apply(g, y, simd::masked);
    let (g, yv) = (dy.as_slice_mut(), y.as_slice());
    if g.len() < PAR_MIN {
        mask(g, yv);
    } else {
        g.par_chunks_mut(PAR_MIN)
            .zip(yv.par_chunks(PAR_MIN))
            .for_each(|(g, y)| mask(g, y));
    }
    Ok(dy)
}

/// `y = max(a + b, 0)` in one pass (a residual connection and the ReLU after it); shapes equal.
/// Its backward is [`relu_bwd`] on `y`, shared by both inputs.
pub fn add_relu<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    b.expect_shape("add_relu", a.shape())?;
    if common("add_relu", &[a, b])? != Device::Cpu {
        return cuda_ops::add_relu(a, b);
    }
    Ok(zip_map(a.shape(), a.as_slice(), b.as_slice(), |x, y| {
        let s = x + y;
        if s > T::zero() {
            s
        } else {
            T::zero()
        }
    }))
}

/// `a + b`, shapes equal.
pub fn add<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    b.expect_shape("add", a.shape())?;
    if common("add", &[a, b])? != Device::Cpu {
        return cuda_ops::add(a, b);
    }
    Ok(zip_map(a.shape(), a.as_slice(), b.as_slice(), |x, y| x + y))
}
