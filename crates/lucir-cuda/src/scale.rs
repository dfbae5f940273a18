//! Multiplication by a scalar held on the device, and the dot product its gradient needs —
//! the launchers of `kernels/scale.cu`.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, PushKernelArg};

use crate::device::{driver, grid_stride, load, one_block};
use crate::kernels::SCALE;
use crate::{check_at_least, Gpu, Result};

/// The module's functions, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    fwd: CudaFunction,
    dot: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [fwd, dot] = load(ctx, &SCALE)?;
        Ok(Self { fwd, dot })
    }
}

impl Gpu {
    /// `x·s` over the first `n` elements, `s` one float on the device.
    pub fn scale_fwd(
        &self,
        x: &CudaSlice<f32>,
        s: &CudaSlice<f32>,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        let op = "scale_fwd";
        check_at_least(op, n, &[x.len()])?;
        check_at_least(op, 1, &[s.len()])?;
        let mut y = self.output::<f32>(n)?;
        if n == 0 {
            return Ok(y);
        }
        let n64 = n as i64;
        let mut l = self.stream.launch_builder(&self.scale.fwd);
        l.arg(x).arg(s).arg(&n64).arg(&mut y);
        // SAFETY: x and y hold at least n floats, s one (checked); each index is one thread's.
        unsafe { l.launch(grid_stride(n)) }.map_err(driver(op))?;
        Ok(y)
    }

    /// `Σ a·b` over the first `n` elements, into one float on the device.
    pub fn scale_dot(
        &self,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        let op = "scale_dot";
        check_at_least(op, n, &[a.len(), b.len()])?;
        let mut out = self.output::<f32>(1)?;
        let n64 = n as i64;
        let mut l = self.stream.launch_builder(&self.scale.dot);
        l.arg(a).arg(b).arg(&n64).arg(&mut out);
        let cfg = one_block();
        // SAFETY: a and b hold at least n floats (checked), out one, written by thread 0.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        Ok(out)
    }
}
