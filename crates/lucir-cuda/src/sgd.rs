//! SGD-with-momentum updates of parameters on the device — the launchers of `kernels/sgd.cu`,
//! with the CPU optimiser's roundings: one tensor, or a whole parameter group in one launch.

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg,
};

use crate::device::{driver, grid, grid_stride, load};
use crate::kernels::BLOCK;
use crate::kernels::SGD;
use crate::{Error, Gpu, Result};

/// The module's function, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    update: CudaFunction,
    many: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [update, many] = load(ctx, &SGD)?;
        Ok(Self { update, many })
    }
}

/// One tensor of a grouped update: its parameter, gradient and velocity buffers, each holding
/// at least `n` floats, and whether it is the parameter's first step.
#[derive(Debug)]
pub struct SgdSlot<'a> {
    /// The parameter, updated in place.
    pub p: &'a mut CudaSlice<f32>,
    /// Its gradient.
    pub g: &'a CudaSlice<f32>,
    /// Its velocity, updated in place (not read on the first step).
    pub v: &'a mut CudaSlice<f32>,
    /// Elements updated.
    pub n: usize,
    /// The parameter's first step.
    pub first: bool,
}

/// Most thread blocks a grouped update gives one tensor (its grid-stride loop covers the rest).
const MANY_BLOCKS: u32 = 1024;

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

    /// [`Gpu::sgd_update`] of every tensor in `slots` with one learning rate, decay and
    /// momentum (`first` per slot), in one launch: the slots' buffers go to the device as a
    /// table of addresses. The same bits as one `sgd_update` per slot.
    pub fn sgd_update_many(
        &self,
        slots: &mut [SgdSlot<'_>],
        lr: f32,
        weight_decay: f32,
        momentum: f32,
    ) -> Result<()> {
        let op = "sgd_update_many";
        let mut table = Vec::with_capacity(5 * slots.len());
        let mut widest = 0;
        for s in slots.iter_mut() {
            if [s.p.len(), s.g.len(), s.v.len()].iter().any(|&l| l < s.n) {
                return Err(Error::Shape {
                    op,
                    detail: format!(
                        "p, g, v hold {}, {}, {} elements; the update needs {}",
                        s.p.len(),
                        s.g.len(),
                        s.v.len(),
                        s.n
                    ),
                });
            }
            // With one stream and no per-buffer events (device.rs) the guards order nothing.
            let (p, _) = s.p.device_ptr_mut(&self.stream);
            let (g, _) = s.g.device_ptr(&self.stream);
            let (v, _) = s.v.device_ptr_mut(&self.stream);
            table.extend([p, g, v, s.n as u64, u64::from(s.first)]);
            widest = widest.max(s.n);
        }
        if widest == 0 {
            return Ok(());
        }
        let tensors = u32::try_from(slots.len())
            .ok()
            .filter(|&t| t <= 65_535)
            .ok_or_else(|| Error::Shape {
                op,
                detail: format!("{} tensors in one launch (at most 65535)", slots.len()),
            })?;
        let table = self.upload(&table)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(widest, BLOCK).min(MANY_BLOCKS), tensors, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(&self.sgd.many);
        l.arg(&table).arg(&lr).arg(&weight_decay).arg(&momentum);
        // SAFETY: the table holds 5 u64 per slot: the addresses of p, g and v, which hold at
        // least n floats each (checked) and live (borrowed by `slots`) until the launch is
        // queued, after which their buffers are freed only in stream order; row y of the grid
        // updates slot y's elements, each index by one thread. The slots' parameters are
        // distinct buffers (each `&mut`), so no element is written by two rows.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        Ok(())
    }
}
