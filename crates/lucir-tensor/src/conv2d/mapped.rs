//! A convolution whose input is read through a per-channel map, `conv(map(x))` with `map` a
//! batch norm and the ReLU after it ([`ChannelMap`]): the direct kernels apply the map as they
//! copy each image into their bordered planes, so `map(x)` is never stored; elsewhere it is
//! computed first ([`channel_map`]) and convolved. Both give the same bits: the kernels apply
//! the map with `channel_map`'s operations.

use super::{conv2d, conv2d_bwd, direct_backward, direct_forward, Conv2dGeometry, Dims, InputGrad};
use crate::{channel_map, ChannelMap, Error, Float, Result, Tensor};

/// Checks the sizes: those of the convolution, and one map entry per input channel.
fn dims<T: Float>(
    op: &'static str,
    x: &Tensor<T>,
    map: &ChannelMap<T>,
    w: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<Dims> {
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
    Ok(d)
}

/// `conv2d(map(x), w)`: `x` N×Ci×H×W, `map` Ci channels.
pub fn conv2d_mapped<T: Float>(
    x: &Tensor<T>,
    map: &ChannelMap<T>,
    w: &Tensor<T>,
    g: Conv2dGeometry,
) -> Result<Tensor<T>> {
    crate::device::on_cpu("conv2d_mapped", &[x, w])?;
    let d = dims("conv2d_mapped", x, map, w, g)?;
    if let Some(y) = direct_forward(&d, x, w, Some(map))? {
        return Ok(y);
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
    let op = "conv2d_mapped_bwd";
    crate::device::on_cpu(op, &[x, w, dy])?;
    let d = dims(op, x, map, w, g)?;
    dy.expect_shape(op, &[d.n, d.co, d.ho, d.wo])?;
    if let Some((Some(dx), dw)) =
        direct_backward(&d, [x, w, dy], Some(map), (InputGrad::New, true))?
    {
        return Ok((dx, dw));
    }
    conv2d_bwd(&channel_map(x, map)?, w, dy, g)
}
