//! Pooling on the device — the launchers of `kernels/pool.cu`: global average pooling
//! (N×C×H×W → N×C) and max pooling with its argmax indices, and their backward passes; the
//! device counterparts of `lucir_tensor::global_avg_pool`, `global_avg_pool_bwd`, `max_pool2d`
//! and `max_pool2d_bwd`. Inputs, outputs and indices stay on the device; the max-pool backward
//! pass gathers instead of scattering, so it needs no atomics and adds in the CPU op's order.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use crate::device::{driver, grid, i32_of, load, per_element};
use crate::kernels::{BLOCK, POOL};
use crate::{check_len, Error, Gpu, Result};

/// Planes per block of `global_avg_pool_fwd_f32`, one warp each (`POOL_WARPS` in
/// `kernels/pool.cu`).
const POOL_WARPS: u32 = BLOCK / 32;

/// The module's functions, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    gap_fwd: CudaFunction,
    gap_bwd: CudaFunction,
    max_fwd: CudaFunction,
    max_bwd: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [gap_fwd, gap_bwd, max_fwd, max_bwd] = load(ctx, &POOL)?;
        Ok(Self {
            gap_fwd,
            gap_bwd,
            max_fwd,
            max_bwd,
        })
    }
}

/// Window, stride and padding of a max pool (padding counts as −∞); the counterpart of
/// `lucir_tensor::MaxPoolGeometry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPoolWindow {
    /// Square window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Padding on each border.
    pub pad: usize,
}

impl MaxPoolWindow {
    /// Output size along a side of `size` elements, or an error when the window does not fit
    /// (the CPU op's rules).
    fn side(&self, op: &'static str, size: usize) -> Result<usize> {
        if self.stride == 0 || self.kernel == 0 || size == 0 || size + 2 * self.pad < self.kernel {
            return Err(Error::Shape {
                op,
                detail: format!("window {self:?} does not fit size {size}"),
            });
        }
        if self.pad >= self.kernel {
            return Err(Error::Shape {
                op,
                detail: format!("padding must be smaller than the window ({self:?})"),
            });
        }
        Ok((size + 2 * self.pad - self.kernel) / self.stride + 1)
    }

    /// Output dims (N, C, Ho, Wo) for input dims (N, C, H, W), reporting errors as `op`'s.
    fn dims_for(&self, op: &'static str, [n, c, h, w]: [usize; 4]) -> Result<[usize; 4]> {
        Ok([n, c, self.side(op, h)?, self.side(op, w)?])
    }

    /// Output dims (N, C, Ho, Wo) for input dims (N, C, H, W), or an error when the window
    /// does not fit (the CPU op's rules: a window and stride of at least 1, padding smaller
    /// than the window, the padded side at least the window).
    pub fn out_dims(&self, dims: [usize; 4]) -> Result<[usize; 4]> {
        self.dims_for("max_pool2d", dims)
    }
}

/// A max-pool forward pass, on the device.
#[derive(Debug)]
pub struct MaxPool {
    /// The pooled output, N×C×Ho×Wo.
    pub y: CudaSlice<f32>,
    /// Per output, the flat index into x of its maximum (the first in scan order on ties),
    /// N×C×Ho×Wo: what [`Gpu::max_pool2d_bwd`] routes the gradient by.
    pub argmax: CudaSlice<i32>,
    /// (N, C, Ho, Wo).
    pub dims: [usize; 4],
}

impl MaxPool {
    /// The argmax indices, read back (for tests and diagnostics).
    pub fn argmax(&self, gpu: &Gpu) -> Result<Vec<usize>> {
        let v = gpu
            .stream
            .clone_dtoh(&self.argmax)
            .map_err(driver("clone_dtoh"))?;
        let len = self.dims.iter().product();
        Ok(v.into_iter().take(len).map(|i| i as usize).collect())
    }
}

/// `[N·C, H, W, Ho, Wo, kernel, stride, pad]` as kernel arguments.
fn max_pool_args(
    op: &'static str,
    [n, c, h, w]: [usize; 4],
    [ho, wo]: [usize; 2],
    win: MaxPoolWindow,
) -> Result<[i32; 8]> {
    i32_of(op, n * c * h * w)?;
    i32_of(op, n * c * ho * wo)?;
    Ok([
        i32_of(op, n * c)?,
        i32_of(op, h)?,
        i32_of(op, w)?,
        i32_of(op, ho)?,
        i32_of(op, wo)?,
        i32_of(op, win.kernel)?,
        i32_of(op, win.stride)?,
        i32_of(op, win.pad)?,
    ])
}

impl Gpu {
    /// `y[n,c] = mean over H×W of x[n,c]`: x N×C×H×W → y N×C.
    pub fn global_avg_pool_fwd(
        &self,
        x: &CudaSlice<f32>,
        [n, c, h, w]: [usize; 4],
    ) -> Result<CudaSlice<f32>> {
        let op = "global_avg_pool_fwd";
        if h * w == 0 {
            return Err(Error::Shape {
                op,
                detail: "empty spatial size".into(),
            });
        }
        check_len(op, "x", x.len(), n * c, h * w)?;
        i32_of(op, n * c * h * w)?;
        let (pi, hwi) = (i32_of(op, n * c)?, i32_of(op, h * w)?);
        // As the CPU op: 1/(H·W) in f32 (through f64), then each plane's sum times it.
        let inv = 1.0f32 / ((h * w) as f64) as f32;
        let mut y = self.output::<f32>(n * c)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(n * c, POOL_WARPS), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(&self.pool.gap_fwd);
        l.arg(x).arg(&pi).arg(&hwi).arg(&inv).arg(&mut y);
        // SAFETY: x holds N·C planes of H·W floats (checked), y N·C floats; warp p < N·C reads
        // plane p and writes y[p] only.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        Ok(y)
    }

    /// `dx[n,c,:,:] = dy[n,c]/(H·W)`: dy N×C → dx N×C×H×W (`dims` the forward input's).
    pub fn global_avg_pool_bwd(
        &self,
        dy: &CudaSlice<f32>,
        [n, c, h, w]: [usize; 4],
    ) -> Result<CudaSlice<f32>> {
        let op = "global_avg_pool_bwd";
        check_len(op, "dy", dy.len(), n, c)?;
        let total = n * c * h * w;
        let (ti, hwi) = (i32_of(op, total)?, i32_of(op, (h * w).max(1))?);
        let inv = 1.0f32 / ((h * w).max(1) as f64) as f32;
        let mut dx = self.output::<f32>(total)?;
        let mut l = self.stream.launch_builder(&self.pool.gap_bwd);
        l.arg(dy).arg(&ti).arg(&hwi).arg(&inv).arg(&mut dx);
        // SAFETY: dy holds N·C floats (checked) and dx N·C·H·W; thread i < N·C·H·W reads
        // dy[i / (H·W)] < N·C and writes dx[i] only.
        unsafe { l.launch(per_element(total)) }.map_err(driver(op))?;
        Ok(dx)
    }

    /// Max pool of x (N×C×H×W) over `window`: the output (N×C×Ho×Wo) and, per output, the flat
    /// index into x of its maximum (the first in scan order on ties).
    pub fn max_pool2d_fwd(
        &self,
        x: &CudaSlice<f32>,
        window: MaxPoolWindow,
        dims: [usize; 4],
    ) -> Result<MaxPool> {
        let op = "max_pool2d_fwd";
        let [n, c, h, w] = dims;
        let out = window.dims_for(op, dims)?;
        let [_, _, ho, wo] = out;
        check_len(op, "x", x.len(), n * c, h * w)?;
        let a = max_pool_args(op, dims, [ho, wo], window)?;
        let total = n * c * ho * wo;
        let mut y = self.output::<f32>(total)?;
        let mut argmax = self.output::<i32>(total)?;
        let mut l = self.stream.launch_builder(&self.pool.max_fwd);
        l.arg(x);
        for v in &a {
            l.arg(v);
        }
        l.arg(&mut y).arg(&mut argmax);
        // SAFETY: x holds N×C×H×W floats (checked), y and argmax N×C×Ho×Wo elements; thread
        // o < N·C·Ho·Wo reads x inside its plane's image and writes y[o] and argmax[o] only.
        unsafe { l.launch(per_element(total)) }.map_err(driver(op))?;
        Ok(MaxPool {
            y,
            argmax,
            dims: out,
        })
    }

    /// Max-pool backward: dx (N×C×H×W, `dims` the forward input's) gets each `dy` (N×C×Ho×Wo)
    /// at the input position `argmax` (from [`Gpu::max_pool2d_fwd`] with the same `window`)
    /// names; positions that won several windows get the sum, in output order. An index that is
    /// not inside its output's window routes nothing.
    pub fn max_pool2d_bwd(
        &self,
        argmax: &CudaSlice<i32>,
        dy: &CudaSlice<f32>,
        window: MaxPoolWindow,
        dims: [usize; 4],
    ) -> Result<CudaSlice<f32>> {
        let op = "max_pool2d_bwd";
        let [n, c, h, w] = dims;
        let [_, _, ho, wo] = window.dims_for(op, dims)?;
        check_len(op, "dy", dy.len(), n * c, ho * wo)?;
        check_len(op, "argmax", argmax.len(), n * c, ho * wo)?;
        let a = max_pool_args(op, dims, [ho, wo], window)?;
        let total = n * c * h * w;
        let mut dx = self.output::<f32>(total)?;
        let mut l = self.stream.launch_builder(&self.pool.max_bwd);
        l.arg(dy).arg(argmax);
        for v in &a {
            l.arg(v);
        }
        l.arg(&mut dx);
        // SAFETY: dy and argmax hold N×C×Ho×Wo elements (checked), dx N×C×H×W floats; thread
        // i < N·C·H·W reads the outputs of its plane whose windows hold it (rows and columns
        // clamped to Ho and Wo) and writes dx[i] only.
        unsafe { l.launch(per_element(total)) }.map_err(driver(op))?;
        Ok(dx)
    }
}
