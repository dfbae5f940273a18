//! Elementwise ops: ReLU and addition (any shape).

use rayon::prelude::*;

use crate::{simd, Float, Result, Tensor};

/// Below this many elements elementwise ops stay on the calling thread.
const PAR_MIN: usize = 1 << 15;

fn zip_map<T: Float>(a: &[T], b: &[T], out: &mut [T], f: impl Fn(T, T) -> T + Sync + Copy) {
    if out.len() < PAR_MIN {
        simd::zip_map(a, b, out, f);
    } else {
        out.par_chunks_mut(PAR_MIN)
            .zip(a.par_chunks(PAR_MIN).zip(b.par_chunks(PAR_MIN)))
            .for_each(|(o, (x, y))| simd::zip_map(x, y, o, f));
    }
}

/// `y = max(x, 0)`.
pub fn relu<T: Float>(x: &Tensor<T>) -> Tensor<T> {
    let mut y = Tensor::zeros(x.shape());
    let xv = x.as_slice();
    zip_map(xv, xv, y.as_slice_mut(), |v, _| v.max(T::zero()));
    y
}

/// `dx = dy · [y > 0]`, from the forward output `y`; `dy` is consumed and masked in place.
pub fn relu_bwd<T: Float>(y: &Tensor<T>, mut dy: Tensor<T>) -> Result<Tensor<T>> {
    dy.expect_shape("relu_bwd", y.shape())?;
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
    let mut y = Tensor::zeros(a.shape());
    zip_map(a.as_slice(), b.as_slice(), y.as_slice_mut(), |x, y| {
        let s = x + y;
        if s > T::zero() {
            s
        } else {
            T::zero()
        }
    });
    Ok(y)
}

/// `a + b`, shapes equal.
pub fn add<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    b.expect_shape("add", a.shape())?;
    let mut y = Tensor::zeros(a.shape());
    zip_map(a.as_slice(), b.as_slice(), y.as_slice_mut(), |x, y| x + y);
    Ok(y)
}
