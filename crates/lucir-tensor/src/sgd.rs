//! SGD-with-momentum updates of parameter tensors (PyTorch's convention), on the CPU or a
//! CUDA device: `d = g + wd·p; v = μ·v + d` (`v = d` on the first step); `p −= lr·v`. The
//! optimiser (lucir-autograd's `Sgd`) keeps the velocities and calls [`sgd_update_many`] per
//! parameter group: on the CPU one [`sgd_update`] per tensor, on a device one launch.

use crate::device::{common, Device};
use crate::{cuda_ops, Float, Result, Tensor};

/// Hyper-parameters of one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdHyper {
    /// Learning rate.
    pub lr: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Momentum μ.
    pub momentum: f64,
}

/// Updates `p` in place from its gradient `g` and its velocity `v` (`None` on the first step)
/// and returns the new velocity. All on one device, one shape.
pub fn sgd_update<T: Float>(
    p: &mut Tensor<T>,
    g: &Tensor<T>,
    v: Option<Tensor<T>>,
    h: SgdHyper,
) -> Result<Tensor<T>> {
    g.expect_shape("sgd_update", p.shape())?;
    if let Some(v) = &v {
        v.expect_shape("sgd_update", p.shape())?;
    }
    let mut operands = vec![&*p, g];
    operands.extend(v.as_ref());
    if common("sgd_update", &operands)? != Device::Cpu {
        return cuda_ops::sgd_update(p, g, v, h);
    }
    let (mu, lr, wd) = (T::of(h.momentum), T::of(h.lr), T::of(h.weight_decay));
    let mut d = g.clone();
    for (dv, pv) in d.as_slice_mut().iter_mut().zip(p.as_slice()) {
        *dv += wd * *pv;
    }
    let v = match v {
        Some(mut v) => {
            for (vv, dv) in v.as_slice_mut().iter_mut().zip(d.as_slice()) {
                *vv = mu * *vv + *dv;
            }
            v
        }
        None => d,
    };
    for (pv, vv) in p.as_slice_mut().iter_mut().zip(v.as_slice()) {
        *pv -= lr * *vv;
    }
    Ok(v)
}

/// One tensor of a grouped update: the parameter, its gradient, and its velocity (`None`
/// before its first step).
#[derive(Debug)]
pub struct SgdTarget<'a, T> {
    /// The parameter, updated in place.
    pub p: &'a mut Tensor<T>,
    /// Its gradient (the parameter's shape).
    pub g: &'a Tensor<T>,
    /// Its velocity.
    pub v: Option<Tensor<T>>,
}

/// [`sgd_update`] of every target with hyper-parameters `h`; returns the new velocities, in
/// order. On the CPU one `sgd_update` per target, in order; on a device one launch for all
/// (the same bits as one `sgd_update` each). All targets on one device.
pub fn sgd_update_many<T: Float>(
    targets: Vec<SgdTarget<'_, T>>,
    h: SgdHyper,
) -> Result<Vec<Tensor<T>>> {
    let mut operands: Vec<&Tensor<T>> = Vec::new();
    for t in &targets {
        t.g.expect_shape("sgd_update_many", t.p.shape())?;
        if let Some(v) = &t.v {
            v.expect_shape("sgd_update_many", t.p.shape())?;
        }
        operands.extend([&*t.p, t.g]);
        operands.extend(t.v.as_ref());
    }
    if common("sgd_update_many", &operands)? != Device::Cpu {
        return cuda_ops::sgd_update_many(targets, h);
    }
    targets
        .into_iter()
        .map(|t| sgd_update(t.p, t.g, t.v, h))
        .collect()
}
