//! Batch normalisation on the device — the launchers of `kernels/batch_norm.cu`: training mode
//! (batch statistics, which the forward pass returns on the device for the backward pass and the
//! running-statistics update), evaluation mode (running statistics), the residual add and the
//! ReLU that end a residual block fused in, and the backward pass of each. The device
//! counterparts of `lucir_tensor::batch_norm_train`, `batch_norm_train_add`,
//! `batch_norm_stats`, `batch_norm_eval`, `batch_norm_train_bwd` and `batch_norm_eval_bwd`, and
//! of `lucir_nn::BatchNorm2d`'s running-statistics update.
//!
//! Everything stays on the device: inputs, outputs and per-channel statistics are device
//! buffers. Every per-channel sum is taken in a fixed order (one block per channel), so the same
//! inputs give the same bits on every run. Shapes: x N×C×H×W f32 row-major, per-channel
//! vectors C.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use crate::device::{driver, i32_of, load, per_element, NULL};
use crate::kernels::{BATCH_NORM, BN_THREADS};
use crate::{check_len, Error, Gpu, Result};

/// The module's functions, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    stats: CudaFunction,
    eval_affine: CudaFunction,
    fwd: CudaFunction,
    running: CudaFunction,
    bwd_reduce: CudaFunction,
    bwd: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [stats, eval_affine, fwd, running, bwd_reduce, bwd] = load(ctx, &BATCH_NORM)?;
        Ok(Self {
            stats,
            eval_affine,
            fwd,
            running,
            bwd_reduce,
            bwd,
        })
    }
}

/// Per-channel statistics of one training-mode forward pass, on the device (the counterpart of
/// `lucir_tensor::BatchNormStats`, whose tensors share these buffers: handing the statistics to
/// the backward pass copies nothing).
#[derive(Clone, Debug)]
pub struct BatchNormStats {
    /// Batch mean per channel, C floats.
    pub mean: Arc<CudaSlice<f32>>,
    /// Biased batch variance per channel (divided by N·H·W), C floats.
    pub var: Arc<CudaSlice<f32>>,
    /// `1/√(var + ε)` per channel, C floats.
    pub inv_std: Arc<CudaSlice<f32>>,
    /// Elements per channel, N·H·W.
    pub count: usize,
}

/// Running statistics (device buffers of C floats) and ε: what evaluation mode normalises with.
#[derive(Clone, Copy, Debug)]
pub struct RunningStats<'a> {
    /// Running mean per channel.
    pub mean: &'a CudaSlice<f32>,
    /// Running (unbiased) variance per channel.
    pub var: &'a CudaSlice<f32>,
    /// Added to the variance.
    pub eps: f32,
}

/// The statistics a batch norm's backward pass normalised with.
#[derive(Clone, Copy, Debug)]
pub enum BatchNormMode<'a> {
    /// Training mode: the batch's, from [`Gpu::batch_norm_train_fwd`] or
    /// [`Gpu::batch_norm_stats`].
    Train(&'a BatchNormStats),
    /// Evaluation mode: running statistics (constants).
    Eval(RunningStats<'a>),
}

/// The ReLU after a batch norm, as its backward pass sees it.
#[derive(Clone, Copy, Debug)]
pub enum BatchNormRelu<'a> {
    /// No ReLU.
    Off,
    /// A ReLU fused into the batch norm: the mask `x·scale + shift > 0` is recomputed from x, γ,
    /// β and the statistics, with the forward pass's operations (the same bits decide), as
    /// `lucir_tensor::batch_norm_train_bwd` with `relu`.
    Fused,
    /// A ReLU after the residual add: the mask is `y > 0` of this stored output (N×C×H×W), and
    /// the masked gradient is also the residual's, as the fused batch-norm-add node's backward.
    Output(&'a CudaSlice<f32>),
}

/// Gradients of a batch norm, on the device.
#[derive(Debug)]
pub struct BatchNormGrads {
    /// ∂L/∂x, N×C×H×W.
    pub dx: CudaSlice<f32>,
    /// ∂L/∂γ, C.
    pub dgamma: CudaSlice<f32>,
    /// ∂L/∂β, C.
    pub dbeta: CudaSlice<f32>,
    /// With [`BatchNormRelu::Output`], `dy` masked by the ReLU: the gradient of the residual
    /// (without a ReLU the residual's gradient is `dy` itself).
    pub dres: Option<CudaSlice<f32>>,
}

/// Checks the per-channel vectors of a batch norm over `c` channels.
fn check_channels(op: &'static str, c: usize, vs: &[(&str, &CudaSlice<f32>)]) -> Result<()> {
    vs.iter()
        .try_for_each(|(what, v)| check_len(op, what, v.len(), c, 1))
}

/// N·H·W, the elements per channel, or an error if there are none (as the CPU op) or no
/// channel (where the CPU op returns empty statistics: the device refuses it).
fn per_channel(op: &'static str, [n, c, h, w]: [usize; 4]) -> Result<usize> {
    match (n * h * w, c) {
        (0, _) | (_, 0) => Err(Error::Shape {
            op,
            detail: format!("no elements per channel in N×C×H×W = {n}×{c}×{h}×{w}"),
        }),
        (m, _) => Ok(m),
    }
}

/// One block per channel.
fn per_channel_cfg(c: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (c.max(1) as u32, 1, 1),
        block_dim: (BN_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl Gpu {
    /// Launches `batch_norm_stats_f32` for x (N×C×H×W): mean, variance and `1/√(var + ε)` per
    /// channel, and with `(γ, β)` the training map's scale and shift.
    fn batch_norm_stats_launch(
        &self,
        x: &CudaSlice<f32>,
        affine: Option<(&CudaSlice<f32>, &CudaSlice<f32>)>,
        eps: f32,
        [n, c, h, w]: [usize; 4],
    ) -> Result<(BatchNormStats, Option<[CudaSlice<f32>; 2]>)> {
        let op = "batch_norm_stats";
        let count = per_channel(op, [n, c, h, w])?;
        check_len(op, "x", x.len(), n * c, h * w)?;
        i32_of(op, n * c * h * w)?;
        let (ni, ci, hwi) = (i32_of(op, n)?, i32_of(op, c)?, i32_of(op, h * w)?);
        let [mut mean, mut var, mut inv_std] = [self.output(c)?, self.output(c)?, self.output(c)?];
        let mut map = match affine {
            Some(_) => Some([self.output::<f32>(c)?, self.output::<f32>(c)?]),
            None => None,
        };
        let mut l = self.stream.launch_builder(&self.batch_norm.stats);
        l.arg(x);
        match affine {
            Some((gamma, beta)) => l.arg(gamma).arg(beta),
            None => l.arg(&NULL).arg(&NULL),
        };
        l.arg(&ni).arg(&ci).arg(&hwi).arg(&eps);
        l.arg(&mut mean).arg(&mut var).arg(&mut inv_std);
        match &mut map {
            Some([scale, shift]) => l.arg(scale).arg(shift),
            None => l.arg(&NULL).arg(&NULL),
        };
        // SAFETY: x holds N×C×H×W floats (checked), γ and β C floats (checked by the callers);
        // block c writes element c of each of the five C-float outputs (scale and shift only
        // when γ is given, null otherwise), and the grid has exactly C blocks.
        unsafe { l.launch(per_channel_cfg(c)) }.map_err(driver(op))?;
        let stats = BatchNormStats {
            mean: Arc::new(mean),
            var: Arc::new(var),
            inv_std: Arc::new(inv_std),
            count,
        };
        Ok((stats, map))
    }

    /// Launches `batch_norm_fwd_f32`: `y = x·scale + shift (+ res)`, then `max(·, 0)` if `relu`.
    fn batch_norm_map_launch(
        &self,
        op: &'static str,
        (x, res): (&CudaSlice<f32>, Option<&CudaSlice<f32>>),
        [scale, shift]: &[CudaSlice<f32>; 2],
        relu: bool,
        [n, c, h, w]: [usize; 4],
    ) -> Result<CudaSlice<f32>> {
        let total = n * c * h * w;
        check_len(op, "x", x.len(), n * c, h * w)?;
        if let Some(r) = res {
            check_len(op, "the residual", r.len(), n * c, h * w)?;
        }
        let (ti, ci, hwi) = (i32_of(op, total)?, i32_of(op, c)?, i32_of(op, h * w)?);
        let relu_i = i32::from(relu);
        let mut y = self.output::<f32>(total)?;
        let mut l = self.stream.launch_builder(&self.batch_norm.fwd);
        l.arg(x);
        match res {
            Some(r) => l.arg(r),
            None => l.arg(&NULL),
        };
        l.arg(scale)
            .arg(shift)
            .arg(&ti)
            .arg(&ci)
            .arg(&hwi)
            .arg(&relu_i);
        l.arg(&mut y);
        // SAFETY: x, the residual (or null) and y hold N×C×H×W floats (checked; y allocated so),
        // scale and shift C floats; thread i < N·C·H·W writes y[i] and nothing else.
        unsafe { l.launch(per_element(total)) }.map_err(driver(op))?;
        Ok(y)
    }

    /// Batch statistics of x (N×C×H×W): per-channel mean, biased variance and `1/√(var + ε)`,
    /// the values [`Gpu::batch_norm_train_fwd`] normalises with.
    pub fn batch_norm_stats(
        &self,
        x: &CudaSlice<f32>,
        eps: f32,
        dims: [usize; 4],
    ) -> Result<BatchNormStats> {
        Ok(self.batch_norm_stats_launch(x, None, eps, dims)?.0)
    }

    /// Training-mode forward: `y = γ·(x − μ)/√(σ² + ε) + β` with the batch's statistics, plus
    /// `residual` when given, then `max(·, 0)` when `relu`; returns y (N×C×H×W) and the
    /// statistics.
    pub fn batch_norm_train_fwd(
        &self,
        x: &CudaSlice<f32>,
        (gamma, beta): (&CudaSlice<f32>, &CudaSlice<f32>),
        eps: f32,
        residual: Option<&CudaSlice<f32>>,
        relu: bool,
        dims: [usize; 4],
    ) -> Result<(CudaSlice<f32>, BatchNormStats)> {
        let op = "batch_norm_train_fwd";
        check_channels(op, dims[1], &[("γ", gamma), ("β", beta)])?;
        let (stats, map) = self.batch_norm_stats_launch(x, Some((gamma, beta)), eps, dims)?;
        let map = map.ok_or_else(|| Error::Driver {
            op,
            detail: "the statistics pass wrote no map".into(),
        })?;
        let y = self.batch_norm_map_launch(op, (x, residual), &map, relu, dims)?;
        Ok((y, stats))
    }

    /// Evaluation-mode forward with running statistics, plus `residual` when given, then
    /// `max(·, 0)` when `relu`: y, N×C×H×W.
    pub fn batch_norm_eval_fwd(
        &self,
        x: &CudaSlice<f32>,
        (gamma, beta): (&CudaSlice<f32>, &CudaSlice<f32>),
        running: RunningStats<'_>,
        residual: Option<&CudaSlice<f32>>,
        relu: bool,
        dims: [usize; 4],
    ) -> Result<CudaSlice<f32>> {
        let op = "batch_norm_eval_fwd";
        let c = dims[1];
        check_channels(
            op,
            c,
            &[
                ("γ", gamma),
                ("β", beta),
                ("the running mean", running.mean),
                ("the running variance", running.var),
            ],
        )?;
        let ci = i32_of(op, c)?;
        let mut map = [self.output::<f32>(c)?, self.output::<f32>(c)?];
        let mut l = self.stream.launch_builder(&self.batch_norm.eval_affine);
        l.arg(gamma).arg(beta).arg(running.mean).arg(running.var);
        l.arg(&ci).arg(&running.eps);
        let [scale, shift] = &mut map;
        l.arg(scale).arg(shift);
        // SAFETY: γ, β and the running statistics hold C floats (checked); thread c < C writes
        // element c of scale and shift, C floats each.
        unsafe { l.launch(per_element(c)) }.map_err(driver(op))?;
        self.batch_norm_map_launch(op, (x, residual), &map, relu, dims)
    }

    /// Moves running statistics (C floats each, in place) towards a training batch's:
    /// `mean ← (1 − m)·mean + m·μ`, `var ← (1 − m)·var + m·σ²·M/(M − 1)` with the unbiased batch
    /// variance (M = N·H·W; the factor is 1 when M = 1), as `lucir_nn::BatchNorm2d`.
    pub fn batch_norm_update_running(
        &self,
        stats: &BatchNormStats,
        momentum: f32,
        running_mean: &mut CudaSlice<f32>,
        running_var: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let op = "batch_norm_update_running";
        let c = stats.mean.len();
        check_len(op, "the running mean", running_mean.len(), c, 1)?;
        check_len(op, "the running variance", running_var.len(), c, 1)?;
        check_len(op, "the batch variance", stats.var.len(), c, 1)?;
        let m = stats.count;
        // As the CPU layer: both counts as f32 (through f64), then their quotient.
        let unbias = if m > 1 {
            (m as f64) as f32 / ((m - 1) as f64) as f32
        } else {
            1.0
        };
        let ci = i32_of(op, c)?;
        let mut l = self.stream.launch_builder(&self.batch_norm.running);
        l.arg(&*stats.mean)
            .arg(&*stats.var)
            .arg(&ci)
            .arg(&momentum)
            .arg(&unbias);
        l.arg(running_mean).arg(running_var);
        // SAFETY: the batch and running statistics hold C floats each (checked); thread c < C
        // reads and writes element c only.
        unsafe { l.launch(per_element(c)) }.map_err(driver(op))?;
        Ok(())
    }

    /// Backward pass of a batch norm of x (N×C×H×W) with γ, β, given `dy` (N×C×H×W), the
    /// gradient of its output: dx, dγ, dβ (and the residual's gradient with
    /// [`BatchNormRelu::Output`]). In training mode
    /// `dx = γ·r/M·(M·g − Σg − x̂·Σ(g·x̂))`, in evaluation mode `dx = γ·g/√(v + ε)`; in both
    /// `dγ = Σ g·x̂`, `dβ = Σ g`, g being `dy` masked by the ReLU when there is one.
    pub fn batch_norm_bwd(
        &self,
        x: &CudaSlice<f32>,
        (gamma, beta): (&CudaSlice<f32>, &CudaSlice<f32>),
        mode: BatchNormMode<'_>,
        dy: &CudaSlice<f32>,
        relu: BatchNormRelu<'_>,
        [n, c, h, w]: [usize; 4],
    ) -> Result<BatchNormGrads> {
        let op = "batch_norm_bwd";
        let total = n * c * h * w;
        per_channel(op, [n, c, h, w])?;
        check_len(op, "x", x.len(), n * c, h * w)?;
        check_len(op, "dy", dy.len(), n * c, h * w)?;
        let (mean, spread, eps, eval) = match mode {
            BatchNormMode::Train(s) => (&*s.mean, &*s.inv_std, 0.0f32, 0i32),
            BatchNormMode::Eval(r) => (r.mean, r.var, r.eps, 1),
        };
        check_channels(
            op,
            c,
            &[
                ("γ", gamma),
                ("β", beta),
                ("the mean", mean),
                ("the spread", spread),
            ],
        )?;
        let y = match relu {
            BatchNormRelu::Output(y) => {
                check_len(op, "y", y.len(), n * c, h * w)?;
                Some(y)
            }
            _ => None,
        };
        let relu_i = i32::from(matches!(relu, BatchNormRelu::Fused));
        let (ni, ci, hwi, ti) = (
            i32_of(op, n)?,
            i32_of(op, c)?,
            i32_of(op, h * w)?,
            i32_of(op, total)?,
        );
        let (mut dgamma, mut dbeta) = (self.output::<f32>(c)?, self.output::<f32>(c)?);
        let mut coef = self.output::<f32>(6 * c)?;
        let mut l = self.stream.launch_builder(&self.batch_norm.bwd_reduce);
        l.arg(x).arg(dy);
        match y {
            Some(y) => l.arg(y),
            None => l.arg(&NULL),
        };
        l.arg(gamma).arg(beta).arg(mean).arg(spread);
        l.arg(&ni)
            .arg(&ci)
            .arg(&hwi)
            .arg(&eps)
            .arg(&eval)
            .arg(&relu_i);
        l.arg(&mut dgamma).arg(&mut dbeta).arg(&mut coef);
        // SAFETY: x, dy and y (or null) hold N×C×H×W floats, γ, β, the mean and the spread C
        // floats (all checked); block c of the C blocks writes element c of dγ and dβ and
        // elements 6c..6c + 6 of coef (6·C floats).
        unsafe { l.launch(per_channel_cfg(c)) }.map_err(driver(op))?;

        let mut dx = self.output::<f32>(total)?;
        let mut dres = match y {
            Some(_) => Some(self.output::<f32>(total)?),
            None => None,
        };
        let mut l = self.stream.launch_builder(&self.batch_norm.bwd);
        l.arg(x).arg(dy);
        match y {
            Some(y) => l.arg(y),
            None => l.arg(&NULL),
        };
        l.arg(&coef)
            .arg(&ti)
            .arg(&ci)
            .arg(&hwi)
            .arg(&eval)
            .arg(&relu_i);
        l.arg(&mut dx);
        match &mut dres {
            Some(g) => l.arg(g),
            None => l.arg(&NULL),
        };
        // SAFETY: x, dy, y (or null), dx and dres (or null) hold N×C×H×W floats, coef the 6·C
        // floats the reduction wrote; thread i < N·C·H·W writes element i of dx (and dres).
        unsafe { l.launch(per_element(total)) }.map_err(driver(op))?;
        Ok(BatchNormGrads {
            dx,
            dgamma,
            dbeta,
            dres,
        })
    }
}
