//! Row-wise log-softmax and cross-entropy on the device — the launchers of
//! `kernels/softmax.cu`: `log_softmax_rows` forward and backward (the device counterparts of
//! `lucir_tensor::log_softmax_rows` and `log_softmax_rows_bwd`), and the mean cross-entropy of
//! B×C logits against integer labels, `L = −(1/B)·Σ_b log softmax(z_b)[y_b]` with
//! `∂z = g·(softmax(z) − onehot(y))/B` (as `lucir_autograd`'s `Tape::cross_entropy`), either
//! as a forward pass that keeps the log-probabilities for a later backward pass or fused with
//! its gradient when the upstream gradient is known. Everything stays on the device, the loss
//! included (a one-float buffer, summed over rows in a fixed order).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use crate::device::{driver, grid, i32_of, load, per_row, NULL};
use crate::kernels::{BLOCK, SOFTMAX};
use crate::{check_len, Gpu, Result};

/// The module's functions, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    log_softmax_fwd: CudaFunction,
    log_softmax_bwd: CudaFunction,
    xent_fwd: CudaFunction,
    xent_bwd: CudaFunction,
    xent_mean: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [log_softmax_fwd, log_softmax_bwd, xent_fwd, xent_bwd, xent_mean] =
            load(ctx, &SOFTMAX)?;
        Ok(Self {
            log_softmax_fwd,
            log_softmax_bwd,
            xent_fwd,
            xent_bwd,
            xent_mean,
        })
    }
}

/// A cross-entropy forward pass, on the device.
#[derive(Debug)]
pub struct CrossEntropy {
    /// (B, C).
    pub dims: [usize; 2],
    /// Log-probabilities `log softmax(z)`, B×C: what [`Gpu::cross_entropy_bwd`] needs.
    pub log_p: CudaSlice<f32>,
    /// Per-row losses `−log_p[b, y_b]`, B floats (NaN for a label outside `[0, C)`).
    pub row_loss: CudaSlice<f32>,
    /// The mean of the row losses, one float (0 when B = 0).
    pub loss: CudaSlice<f32>,
}

/// A cross-entropy forward pass fused with its gradient, on the device.
#[derive(Debug)]
pub struct CrossEntropyFused {
    /// Per-row losses `−log softmax(z_b)[y_b]`, B floats (NaN for a label outside `[0, C)`).
    pub row_loss: CudaSlice<f32>,
    /// The mean of the row losses, one float (0 when B = 0).
    pub loss: CudaSlice<f32>,
    /// `∂L/∂z·g = (g/B)·(softmax(z) − onehot(y))`, B×C.
    pub dz: CudaSlice<f32>,
}

impl Gpu {
    /// `y_bc = z_bc − log Σ_k exp z_bk` of z (B×C), numerically stable (the row maximum is
    /// subtracted first).
    pub fn log_softmax_rows_fwd(
        &self,
        z: &CudaSlice<f32>,
        [b, c]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "log_softmax_rows_fwd";
        check_len(op, "z", z.len(), b, c)?;
        i32_of(op, b * c)?;
        let (bi, ci) = (i32_of(op, b)?, i32_of(op, c)?);
        let mut y = self.output::<f32>(b * c)?;
        let mut l = self.stream.launch_builder(&self.softmax.log_softmax_fwd);
        l.arg(z).arg(&bi).arg(&ci).arg(&mut y);
        // SAFETY: z and y hold B×C floats (checked; y allocated so); block b reads and writes
        // row b only.
        unsafe { l.launch(per_row(b)) }.map_err(driver(op))?;
        Ok(y)
    }

    /// `dz = dy − softmax(z)·Σ_k dy_k` per row, from the forward output `y` (log-probabilities,
    /// B×C) and `dy` (B×C).
    pub fn log_softmax_rows_bwd(
        &self,
        y: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        [b, c]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "log_softmax_rows_bwd";
        check_len(op, "y", y.len(), b, c)?;
        check_len(op, "dy", dy.len(), b, c)?;
        i32_of(op, b * c)?;
        let (bi, ci) = (i32_of(op, b)?, i32_of(op, c)?);
        let mut dz = self.output::<f32>(b * c)?;
        let mut l = self.stream.launch_builder(&self.softmax.log_softmax_bwd);
        l.arg(y).arg(dy).arg(&bi).arg(&ci).arg(&mut dz);
        // SAFETY: y, dy and dz hold B×C floats (checked; dz allocated so); block b reads and
        // writes row b only.
        unsafe { l.launch(per_row(b)) }.map_err(driver(op))?;
        Ok(dz)
    }

    /// Launches `cross_entropy_fwd_f32`: per-row losses, and the log-probabilities and/or the
    /// gradient scaled by `k` into the outputs given.
    fn cross_entropy_launch(
        &self,
        (z, labels): (&CudaSlice<f32>, &CudaSlice<i32>),
        [b, c]: [usize; 2],
        k: f32,
        row_loss: &mut CudaSlice<f32>,
        [log_p, dz]: [Option<&mut CudaSlice<f32>>; 2],
    ) -> Result<()> {
        let op = "cross_entropy_fwd";
        check_len(op, "z", z.len(), b, c)?;
        check_len(op, "labels", labels.len(), b, 1)?;
        i32_of(op, b * c)?;
        let (bi, ci) = (i32_of(op, b)?, i32_of(op, c)?);
        let mut l = self.stream.launch_builder(&self.softmax.xent_fwd);
        l.arg(z).arg(labels).arg(&bi).arg(&ci).arg(&k).arg(row_loss);
        for out in [log_p, dz] {
            match out {
                Some(o) => l.arg(o),
                None => l.arg(&NULL),
            };
        }
        // SAFETY: z holds B×C floats and labels B ints (checked), row_loss B floats, log_p and
        // dz (or null) B×C floats (allocated so by the callers); block b reads label b (a label
        // outside [0, C) is never used as an index) and row b of z, and writes row_loss[b] and
        // row b of each output.
        unsafe { l.launch(per_row(b)) }.map_err(driver(op))?;
        Ok(())
    }

    /// The mean of `row_loss` (B floats) into a new one-float buffer, summed in a fixed order.
    fn cross_entropy_mean(&self, row_loss: &CudaSlice<f32>, b: usize) -> Result<CudaSlice<f32>> {
        let op = "cross_entropy_mean";
        let bi = i32_of(op, b)?;
        let mut loss = self.output::<f32>(1)?;
        let mut l = self.stream.launch_builder(&self.softmax.xent_mean);
        l.arg(row_loss).arg(&bi).arg(&mut loss);
        // SAFETY: row_loss holds B floats (written by the forward pass), loss one float, which
        // the single block's thread 0 writes.
        unsafe { l.launch(per_row(1)) }.map_err(driver(op))?;
        Ok(loss)
    }

    /// Mean cross-entropy of logits z (B×C) against `labels` (B ints in `[0, C)`, on the
    /// device): the per-row losses, their mean, and the log-probabilities for
    /// [`Gpu::cross_entropy_bwd`].
    pub fn cross_entropy_fwd(
        &self,
        z: &CudaSlice<f32>,
        labels: &CudaSlice<i32>,
        [b, c]: [usize; 2],
    ) -> Result<CrossEntropy> {
        let mut row_loss = self.output::<f32>(b)?;
        let mut log_p = self.output::<f32>(b * c)?;
        self.cross_entropy_launch(
            (z, labels),
            [b, c],
            0.0,
            &mut row_loss,
            [Some(&mut log_p), None],
        )?;
        let loss = self.cross_entropy_mean(&row_loss, b)?;
        Ok(CrossEntropy {
            dims: [b, c],
            log_p,
            row_loss,
            loss,
        })
    }

    /// ∂L/∂z (B×C) from a cross-entropy forward pass's log-probabilities `log_p` (B×C) and
    /// the same `labels`, times the upstream gradient `g` (one float on the device):
    /// `(g/B)·(exp(log_p) − onehot(y))`.
    pub fn cross_entropy_bwd(
        &self,
        log_p: &CudaSlice<f32>,
        labels: &CudaSlice<i32>,
        g: &CudaSlice<f32>,
        [b, c]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "cross_entropy_bwd";
        check_len(op, "log_p", log_p.len(), b, c)?;
        check_len(op, "labels", labels.len(), b, 1)?;
        check_len(op, "g", g.len(), 1, 1)?;
        let (bi, ci) = (i32_of(op, b)?, i32_of(op, c)?);
        i32_of(op, b * c)?;
        let mut dz = self.output::<f32>(b * c)?;
        let mut l = self.stream.launch_builder(&self.softmax.xent_bwd);
        l.arg(log_p)
            .arg(labels)
            .arg(&bi)
            .arg(&ci)
            .arg(g)
            .arg(&mut dz);
        let cfg = LaunchConfig {
            grid_dim: (grid(b * c, BLOCK), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: log_p and dz hold B×C floats, labels B ints, g one float (checked); thread
        // i < B·C reads log_p[i], label i / C and g, and writes dz[i] only.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        Ok(dz)
    }

    /// Mean cross-entropy of logits z (B×C) against `labels` (B ints in `[0, C)`) and its
    /// gradient times the upstream gradient `g`, in one pass over the logits.
    pub fn cross_entropy_fused(
        &self,
        z: &CudaSlice<f32>,
        labels: &CudaSlice<i32>,
        g: f32,
        [b, c]: [usize; 2],
    ) -> Result<CrossEntropyFused> {
        let k = g / b.max(1) as f32;
        let mut row_loss = self.output::<f32>(b)?;
        let mut dz = self.output::<f32>(b * c)?;
        self.cross_entropy_launch((z, labels), [b, c], k, &mut row_loss, [None, Some(&mut dz)])?;
        let loss = self.cross_entropy_mean(&row_loss, b)?;
        Ok(CrossEntropyFused { row_loss, loss, dz })
    }
}
