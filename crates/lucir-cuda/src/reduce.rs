//! The device-side sum that turns per-row losses into a loss — the launcher of
//! `kernels/reduce.cu`.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, PushKernelArg};

use crate::device::{driver, i32_of, load, one_block};
use crate::kernels::REDUCE;
use crate::{check_len, Gpu, Result};

/// The module's function, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    sum_scaled: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [sum_scaled] = load(ctx, &REDUCE)?;
        Ok(Self { sum_scaled })
    }
}

impl Gpu {
    /// `(mul·Σ x) / div` of the first `n` elements, into one float on the device.
    pub fn sum_scaled(
        &self,
        x: &CudaSlice<f32>,
        n: usize,
        (mul, div): (f32, f32),
    ) -> Result<CudaSlice<f32>> {
        let op = "sum_scaled";
        check_len(op, "x", x.len().min(n), n, 1)?;
        let ni = i32_of(op, n)?;
        let mut out = self.output::<f32>(1)?;
        let mut l = self.stream.launch_builder(&self.reduce.sum_scaled);
        l.arg(x).arg(&ni).arg(&mul).arg(&div).arg(&mut out);
        // SAFETY: x holds at least n floats (checked), out one, written by thread 0.
        unsafe { l.launch(one_block()) }.map_err(driver(op))?;
        Ok(out)
    }
}
