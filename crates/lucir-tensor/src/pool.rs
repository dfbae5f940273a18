//! Pooling: global average pooling (N×C×H×W → N×C) and max pooling (ResNet-18's stem).

use rayon::prelude::*;

use crate::device::CudaIndices;
use crate::{Error, Float, Result, Tensor};

/// `y[n,c] = mean over H×W of x[n,c]`.
pub fn global_avg_pool<T: Float>(x: &Tensor<T>) -> Result<Tensor<T>> {
    let [n, c, h, w] = x.dims4("global_avg_pool")?;
    if h * w == 0 {
        return Err(Error::shape("global_avg_pool", "empty spatial size"));
    }
    if !x.is_cpu() {
        return crate::cuda_ops::global_avg_pool(x, [n, c, h, w]);
    }
    let inv = T::one() / T::of_usize(h * w);
    let data = x
        .as_slice()
        .chunks(h * w)
        .map(|p| p.iter().copied().sum::<T>() * inv)
        .collect();
    Tensor::from_vec(&[n, c], data)
}

/// `dx[n,c,:,:] = dy[n,c] / (H·W)`; `shape` is the forward input's.
pub fn global_avg_pool_bwd<T: Float>(shape: &[usize], dy: &Tensor<T>) -> Result<Tensor<T>> {
    let [n, c, h, w]: [usize; 4] = shape.try_into().map_err(|_| {
        Error::shape(
            "global_avg_pool_bwd",
            format!("input shape {shape:?} is not 4-D"),
        )
    })?;
    dy.expect_shape("global_avg_pool_bwd", &[n, c])?;
    if !dy.is_cpu() && h * w > 0 {
        return crate::cuda_ops::global_avg_pool_bwd(dy, [n, c, h, w]);
    }
    if !dy.is_cpu() {
        return Tensor::zeros_on(&dy.device(), shape);
    }
    let mut dx = Tensor::zeros(shape);
    if h * w == 0 {
        return Ok(dx);
    }
    let inv = T::one() / T::of_usize(h * w);
    for (p, g) in dx.as_slice_mut().chunks_mut(h * w).zip(dy.as_slice()) {
        p.fill(*g * inv);
    }
    Ok(dx)
}

/// Window, stride and padding of a max pool (padding counts as −∞).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPoolGeometry {
    /// Square window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Padding on each border.
    pub pad: usize,
}

impl MaxPoolGeometry {
    fn out(&self, op: &'static str, size: usize) -> Result<usize> {
        // An empty side is refused too: its windows would hold only padding, with no input
        // position for the backward pass to route to.
        if self.stride == 0 || self.kernel == 0 || size == 0 || size + 2 * self.pad < self.kernel {
            return Err(Error::arg(
                op,
                format!("window {self:?} does not fit size {size}"),
            ));
        }
        if self.pad >= self.kernel {
            return Err(Error::arg(op, "padding must be smaller than the window"));
        }
        Ok((size + 2 * self.pad - self.kernel) / self.stride + 1)
    }
}

/// Per output of a max pool, the flat index into its input of the maximum: what the backward
/// pass routes the gradient by, on the device of the pooled tensor.
#[derive(Clone, Debug)]
pub enum MaxPoolArgmax {
    /// In host memory.
    Cpu(Vec<usize>),
    /// On a CUDA device (i32).
    Cuda(CudaIndices),
}

/// Max pool: returns `y` (N×C×Ho×Wo) and, per output, the flat index into `x` of its maximum
/// (the first one in scan order on ties).
pub fn max_pool2d<T: Float>(
    x: &Tensor<T>,
    g: MaxPoolGeometry,
) -> Result<(Tensor<T>, MaxPoolArgmax)> {
    let [n, c, h, w] = x.dims4("max_pool2d")?;
    let (ho, wo) = (g.out("max_pool2d", h)?, g.out("max_pool2d", w)?);
    if !x.is_cpu() {
        return crate::cuda_ops::max_pool2d(x, g, [n, c, h, w]);
    }
    let (y, arg) = max_pool2d_cpu(x, g, [n, c, h, w], [ho, wo]);
    Ok((y, MaxPoolArgmax::Cpu(arg)))
}

fn max_pool2d_cpu<T: Float>(
    x: &Tensor<T>,
    g: MaxPoolGeometry,
    [n, c, h, w]: [usize; 4],
    [ho, wo]: [usize; 2],
) -> (Tensor<T>, Vec<usize>) {
    let mut y = Tensor::zeros(&[n, c, ho, wo]);
    let mut arg = vec![0usize; n * c * ho * wo];
    if y.is_empty() {
        return (y, arg);
    }
    let xv = x.as_slice();
    y.as_slice_mut()
        .par_chunks_mut(ho * wo)
        .zip(arg.par_chunks_mut(ho * wo))
        .enumerate()
        .for_each(|(p, (yp, ap))| {
            let base = p * h * w;
            for oy in 0..ho {
                for ox in 0..wo {
                    let (mut best, mut at) = (T::neg_infinity(), base);
                    for ki in 0..g.kernel {
                        for kj in 0..g.kernel {
                            let (iy, ix) = (oy * g.stride + ki, ox * g.stride + kj);
                            if iy < g.pad || ix < g.pad || iy - g.pad >= h || ix - g.pad >= w {
                                continue;
                            }
                            let k = base + (iy - g.pad) * w + ix - g.pad;
                            if xv[k] > best {
                                best = xv[k];
                                at = k;
                            }
                        }
                    }
                    yp[oy * wo + ox] = best;
                    ap[oy * wo + ox] = at;
                }
            }
        });
    (y, arg)
}

/// Max-pool backward: routes each `dy` to the input position that won the forward max.
pub fn max_pool2d_bwd<T: Float>(
    shape: &[usize],
    argmax: &MaxPoolArgmax,
    g: MaxPoolGeometry,
    dy: &Tensor<T>,
) -> Result<Tensor<T>> {
    let argmax = match argmax {
        MaxPoolArgmax::Cpu(a) if dy.is_cpu() => a,
        MaxPoolArgmax::Cuda(a) if !dy.is_cpu() => {
            return crate::cuda_ops::max_pool2d_bwd(shape, a, g, dy);
        }
        _ => {
            return Err(Error::Device {
                op: "max_pool2d_bwd",
                detail: "the positions and the gradient are on different devices".into(),
            })
        }
    };
    if argmax.len() != dy.len() {
        return Err(Error::shape(
            "max_pool2d_bwd",
            format!("{} indices for {} gradients", argmax.len(), dy.len()),
        ));
    }
    let mut dx = Tensor::zeros(shape);
    let len = dx.len();
    let dxv = dx.as_slice_mut();
    for (&k, g) in argmax.iter().zip(dy.as_slice()) {
        if k >= len {
            return Err(Error::arg("max_pool2d_bwd", "index outside the input"));
        }
        dxv[k] += *g;
    }
    Ok(dx)
}

/// Naive max pool; the reference for [`max_pool2d`] (values only).
pub fn max_pool2d_ref<T: Float>(x: &Tensor<T>, g: MaxPoolGeometry) -> Result<Tensor<T>> {
    crate::device::on_cpu("max_pool2d_ref", &[x])?;
    let [n, c, h, w] = x.dims4("max_pool2d_ref")?;
    let (ho, wo) = (g.out("max_pool2d_ref", h)?, g.out("max_pool2d_ref", w)?);
    let mut y = Tensor::full(&[n, c, ho, wo], T::neg_infinity());
    let xv = x.as_slice();
    let yv = y.as_slice_mut();
    for p in 0..n * c {
        for oy in 0..ho {
            for ox in 0..wo {
                for ki in 0..g.kernel {
                    for kj in 0..g.kernel {
                        let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                        let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            let v = xv[p * h * w + iy as usize * w + ix as usize];
                            let o = &mut yv[p * ho * wo + oy * wo + ox];
                            *o = o.max(v);
                        }
                    }
                }
            }
        }
    }
    Ok(y)
}
