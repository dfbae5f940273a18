//! The bias of a fully connected layer on the device — the launchers of `kernels/linear.cu`
//! (the layer's products are [`Gpu::gemm`]).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, PushKernelArg};

use crate::device::{driver, i32_of, per_element};
use crate::kernels::LINEAR;
use crate::{check_len, Gpu, Result};

/// The module's two functions, resolved once when the device is opened.
pub(crate) type Kernels = crate::device::FwdBwd;

/// Loads them.
pub(crate) fn kernels(ctx: &Arc<CudaContext>) -> Result<Kernels> {
    Kernels::load(ctx, &LINEAR)
}

impl Gpu {
    /// `y[r, j] += b[j]` in place: `y` rows×cols, `b` cols.
    pub fn linear_bias_fwd(
        &self,
        y: &mut CudaSlice<f32>,
        b: &CudaSlice<f32>,
        [rows, cols]: [usize; 2],
    ) -> Result<()> {
        let op = "linear_bias_fwd";
        check_len(op, "y", y.len().min(rows * cols), rows, cols)?;
        check_len(op, "b", b.len().min(cols), cols, 1)?;
        if rows * cols == 0 {
            return Ok(());
        }
        let (ri, ci) = (i32_of(op, rows)?, i32_of(op, cols)?);
        i32_of(op, rows * cols)?;
        let mut l = self.stream.launch_builder(&self.linear.fwd);
        l.arg(y).arg(b).arg(&ri).arg(&ci);
        // SAFETY: y holds rows×cols floats and b cols (checked); thread i < rows·cols touches
        // y[i] and reads b[i % cols].
        unsafe { l.launch(per_element(rows * cols)) }.map_err(driver(op))?;
        Ok(())
    }

    /// `db[j] = Σ_r g[r, j]` (`g` rows×cols), summed in row order.
    pub fn linear_bias_bwd(
        &self,
        g: &CudaSlice<f32>,
        [rows, cols]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "linear_bias_bwd";
        check_len(op, "g", g.len().min(rows * cols), rows, cols)?;
        let mut db = self.zeros::<f32>(cols)?;
        if rows * cols == 0 {
            return Ok(db);
        }
        let (ri, ci) = (i32_of(op, rows)?, i32_of(op, cols)?);
        let mut l = self.stream.launch_builder(&self.linear.bwd);
        l.arg(g).arg(&ri).arg(&ci).arg(&mut db);
        // SAFETY: g holds rows×cols floats and db cols (checked); thread j < cols writes db[j].
        unsafe { l.launch(per_element(cols)) }.map_err(driver(op))?;
        Ok(db)
    }
}
