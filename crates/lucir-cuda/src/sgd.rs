//! One SGD-with-momentum update of a parameter on the device — the launcher of
//! `kernels/sgd.cu`, with the CPU optimiser's roundings.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, PushKernelArg};

use crate::device::{driver, grid_stride, load};
use crate::kernels::SGD;
use crate::{Error, Gpu, Result};

/// The module's function, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    update: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [update] = load(ctx, &SGD)?;
        Ok(Self { update })
    }
}

/// Hyper-parameters of one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f32,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f32,
    /// Momentum μ.
    pub momentum: f32,
    /// The parameter's first step: the velocity becomes the decayed gradient.
    pub first: bool,
}

impl Gpu {
    /// `d = g + wd·p; v = μ·v + d (v = d when first); p −= lr·v` over the first `n`
    /// elements, in place on `p` and `v`.
    pub fn sgd_update(
        &self,
        p: &mut CudaSlice<f32>,
        g: &CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        n: usize,
        s: SgdStep,
    ) -> Result<()> {
        let op = "sgd_update";
        if [p.len(), g.len(), v.len()].iter().any(|&l| l < n) {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "p, g, v hold {}, {}, {} elements; the update needs {n}",
                    p.len(),
                    g.len(),
                    v.len()
                ),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let (n64, first) = (n as i64, i32::from(s.first));
        let mut l = self.stream.launch_builder(&self.sgd.update);
        l.arg(p)
            .arg(g)
            .arg(v)
            .arg(&n64)
            .arg(&s.lr)
            .arg(&s.weight_decay)
            .arg(&s.momentum)
            .arg(&first);
        // SAFETY: p, g and v hold at least n floats (checked); each index below n is touched
        // by one thread.
        unsafe { l.launch(grid_stride(n)) }.map_err(driver(op))?;
        Ok(())
    }
}
