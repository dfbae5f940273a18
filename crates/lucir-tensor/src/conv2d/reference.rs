//! The naive references of the convolution: direct loops over every output and kernel tap,
//! the obviously-right twins [`super::conv2d`] and [`super::conv2d_bwd`] are tested against.

use super::{Conv2dGeometry, Dims};
use crate::{Float, Result, Tensor};

/// Direct 7-loop convolution; the reference for [`super::conv2d`].
pub fn conv2d_ref<T: Float>(x: &Tensor<T>, w: &Tensor<T>, g: Conv2dGeometry) -> Result<Tensor<T>> {
    crate::device::on_cpu("conv2d_ref", &[x, w])?;
    let d = Dims::new("conv2d_ref", x, w, g)?;
    let (xv, wv) = (x.as_slice(), w.as_slice());
    let mut y = Tensor::zeros(&[d.n, d.co, d.ho, d.wo]);
    let yv = y.as_slice_mut();
    for n in 0..d.n {
        for o in 0..d.co {
            for oy in 0..d.ho {
                for ox in 0..d.wo {
                    let mut acc = T::zero();
                    for i in 0..d.ci {
                        for ki in 0..d.kh {
                            for kj in 0..d.kw {
                                if let (Some(iy), Some(ix)) =
                                    (d.src(oy, ki, d.h), d.src(ox, kj, d.w))
                                {
                                    acc += wv[((o * d.ci + i) * d.kh + ki) * d.kw + kj]
                                        * xv[((n * d.ci + i) * d.h + iy) * d.w + ix];
                                }
                            }
                        }
                    }
                    yv[((n * d.co + o) * d.ho + oy) * d.wo + ox] = acc;
                }
            }
        }
    }
    Ok(y)
}

/// Direct-loop backward; the reference for [`super::conv2d_bwd`].
pub fn conv2d_bwd_ref<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<(Tensor<T>, Tensor<T>)> {
    crate::device::on_cpu("conv2d_bwd_ref", &[x, w, dy])?;
    let d = Dims::new("conv2d_bwd_ref", x, w, g)?;
    dy.expect_shape("conv2d_bwd_ref", &[d.n, d.co, d.ho, d.wo])?;
    let (xv, wv, dyv) = (x.as_slice(), w.as_slice(), dy.as_slice());
    let mut dx = Tensor::zeros(x.shape());
    let mut dw = Tensor::zeros(w.shape());
    let (dxv, dwv) = (dx.as_slice_mut(), dw.as_slice_mut());
    for n in 0..d.n {
        for o in 0..d.co {
            for oy in 0..d.ho {
                for ox in 0..d.wo {
                    let g = dyv[((n * d.co + o) * d.ho + oy) * d.wo + ox];
                    for i in 0..d.ci {
                        for ki in 0..d.kh {
                            for kj in 0..d.kw {
                                if let (Some(iy), Some(ix)) =
                                    (d.src(oy, ki, d.h), d.src(ox, kj, d.w))
                                {
                                    let wi = ((o * d.ci + i) * d.kh + ki) * d.kw + kj;
                                    let xi = ((n * d.ci + i) * d.h + iy) * d.w + ix;
                                    dwv[wi] += g * xv[xi];
                                    dxv[xi] += g * wv[wi];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok((dx, dw))
}
