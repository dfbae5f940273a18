//! A convolution whose input is read through a per-channel map, `conv(map(x))` with `map` a
//! batch norm and the ReLU after it ([`ChannelMap`]): the direct kernels apply the map as they
//! copy each image into their bordered planes, so `map(x)` is never stored; elsewhere it is
//! computed first ([`channel_map`]) and convolved. Both give the same bits: the kernels apply
//! the map with `channel_map`'s operations.

use super::{conv2d, conv2d_bwd, direct, Conv2dGeometry, Dims};
use crate::{channel_map, ChannelMap, Error, Float, Result, Tensor};

/// The f32 view of a map, if `T` is f32.
fn f32_map<T: Float>(map: &ChannelMap<T>) -> Option<direct::Map<'_>> {
    Some(direct::Map {
        scale: T::f32_slice(&map.scale)?,
        shift: T::f32_slice(&map.shift)?,
        relu: map.relu,
    })
}

/// Checks the sizes and says whether the direct kernels take this convolution with a map
/// (3×3, stride 1, padding 1, AVX-512).
fn dims<T: Float>(
    op: &'static str,
    x: &Tensor<T>,
    map: &ChannelMap<T>,
    w: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<(Dims, bool)> {
    let d = Dims::new(op, x, w, g)?;
    if map.scale.len() != d.ci || map.shift.len() != d.ci {
        return Err(Error::shape(
            op,
            format!(
                "input has {} channels but the map has {} factors and {} offsets",
                d.ci,
                map.scale.len(),
                map.shift.len()
            ),
        ));
    }
    Ok((d, d.direct() && d.stride == 1 && !d.empty()))
}

/// `conv2d(map(x), w)`: `x` N×Ci×H×W, `map` Ci channels.
pub fn conv2d_mapped<T: Float>(
    x: &Tensor<T>,
    map: &ChannelMap<T>,
    w: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<Tensor<T>> {
    let (d, direct) = dims("conv2d_mapped", x, map, w, g)?;
    if direct {
        if let (Some(xs), Some(ws), Some(m)) = (
            T::f32_slice(x.as_slice()),
            T::f32_slice(w.as_slice()),
            f32_map(map),
        ) {
            let y = direct::forward(xs, ws, d.direct_shape(), Some(m));
            if let Some(y) = T::from_f32_vec(y) {
                return Tensor::from_vec(&[d.n, d.co, d.ho, d.wo], y);
            }
        }
    }
    conv2d(&channel_map(x, map)?, w, g)
}

/// The backward pass of [`conv2d_mapped`]: from `dy` the gradient with respect to `map(x)`
/// (not `x`: the map's own backward pass takes it from there) and the weight gradient.
pub fn conv2d_mapped_bwd<T: Float>(
    x: &Tensor<T>,
    map: &ChannelMap<T>,
    w: &Tensor<T>,
    dy: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<(Tensor<T>, Tensor<T>)> {
    let (d, direct) = dims("conv2d_mapped_bwd", x, map, w, g)?;
    dy.expect_shape("conv2d_mapped_bwd", &[d.n, d.co, d.ho, d.wo])?;
    if direct {
        if let (Some(xs), Some(ws), Some(dys), Some(m)) = (
            T::f32_slice(x.as_slice()),
            T::f32_slice(w.as_slice()),
            T::f32_slice(dy.as_slice()),
            f32_map(map),
        ) {
            let (dx, dw) =
                direct::backward(xs, ws, dys, d.direct_shape(), Some(m), direct::Dx::New);
            if let (Some(dx), Some(dw)) = (dx.and_then(T::from_f32_vec), T::from_f32_vec(dw)) {
                return Ok((
                    Tensor::from_vec(x.shape(), dx)?,
                    Tensor::from_vec(w.shape(), dw)?,
                ));
            }
        }
    }
    conv2d_bwd(&channel_map(x, map)?, w, dy, g)
}
