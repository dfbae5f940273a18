//! Row L2 normalisation on the device — the launchers of `kernels/normalize.cu`.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, PushKernelArg};

use crate::device::{driver, i32_of, per_row};
use crate::kernels::NORMALIZE;
use crate::{check_len, Gpu, Result};

/// The module's two functions, resolved once when the device is opened.
pub(crate) type Kernels = crate::device::FwdBwd;

/// Loads them.
pub(crate) fn kernels(ctx: &Arc<CudaContext>) -> Result<Kernels> {
    Kernels::load(ctx, &NORMALIZE)
}

impl Gpu {
    /// `(v̄, n)`: the rows of `v` (B×D) over their clamped norms, and the norms (B). With D = 0
    /// the norms are 1, as on the CPU.
    pub fn l2_normalize_rows_fwd(
        &self,
        v: &CudaSlice<f32>,
        [b, d]: [usize; 2],
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        let op = "l2_normalize_rows_fwd";
        check_len(op, "v", v.len().min(b * d), b, d)?;
        let mut y = self.output::<f32>(b * d)?;
        if d == 0 || b == 0 {
            return Ok((y, self.upload(&vec![1.0f32; b.max(1)])?));
        }
        let mut norms = self.output::<f32>(b)?;
        let (bi, di) = (i32_of(op, b)?, i32_of(op, d)?);
        let mut l = self.stream.launch_builder(&self.normalize.fwd);
        l.arg(v).arg(&bi).arg(&di).arg(&mut y).arg(&mut norms);
        // SAFETY: v and y hold B×D floats, norms B (checked/allocated); block b writes row b
        // of y and norms[b] only.
        unsafe { l.launch(per_row(b)) }.map_err(driver(op))?;
        Ok((y, norms))
    }

    /// The backward pass from the forward's `y` and `norms` and the gradient `g` (B×D).
    pub fn l2_normalize_rows_bwd(
        &self,
        y: &CudaSlice<f32>,
        norms: &CudaSlice<f32>,
        g: &CudaSlice<f32>,
        [b, d]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "l2_normalize_rows_bwd";
        check_len(op, "y", y.len().min(b * d), b, d)?;
        check_len(op, "g", g.len().min(b * d), b, d)?;
        check_len(op, "norms", norms.len().min(b), b, 1)?;
        let mut dx = self.output::<f32>(b * d)?;
        if d == 0 || b == 0 {
            return Ok(dx);
        }
        let (bi, di) = (i32_of(op, b)?, i32_of(op, d)?);
        let mut l = self.stream.launch_builder(&self.normalize.bwd);
        l.arg(y).arg(norms).arg(g).arg(&bi).arg(&di).arg(&mut dx);
        // SAFETY: y, g and dx hold B×D floats, norms B (checked); block b writes row b of dx.
        unsafe { l.launch(per_row(b)) }.map_err(driver(op))?;
        Ok(dx)
    }
}
