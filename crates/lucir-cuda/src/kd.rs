//! Knowledge distillation and the column slice on the device — the launchers of
//! `kernels/kd.cu` (the log-softmax is `softmax.rs`'s, the sum `reduce.rs`'s).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, PushKernelArg};

use crate::device::{driver, i32_of, load, per_element};
use crate::kernels::KD;
use crate::{check_len, Gpu, Result};

/// The module's functions, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    temper: CudaFunction,
    terms: CudaFunction,
    bwd: CudaFunction,
    slice_fwd: CudaFunction,
    slice_bwd: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [temper, terms, bwd, slice_fwd, slice_bwd] = load(ctx, &KD)?;
        Ok(Self {
            temper,
            terms,
            bwd,
            slice_fwd,
            slice_bwd,
        })
    }
}

impl Gpu {
    /// `x / τ` over `n` elements.
    pub fn kd_temper(&self, x: &CudaSlice<f32>, n: usize, tau: f32) -> Result<CudaSlice<f32>> {
        let op = "kd_temper";
        check_len(op, "x", x.len().min(n), n, 1)?;
        let ni = i32_of(op, n)?;
        let mut y = self.output::<f32>(n)?;
        let mut l = self.stream.launch_builder(&self.kd.temper);
        l.arg(x).arg(&ni).arg(&tau).arg(&mut y);
        // SAFETY: x and y hold n floats (checked, allocated); thread i touches element i < n.
        unsafe { l.launch(per_element(n)) }.map_err(driver(op))?;
        Ok(y)
    }

    /// The distillation loss `(τ²·Σ exp(lp)·(lp − lq)) / B` of log-probabilities `lp` (the
    /// targets') and `lq` (B×C each), as one float on the device.
    pub fn kd_loss(
        &self,
        (lp, lq): (&CudaSlice<f32>, &CudaSlice<f32>),
        tau: f32,
        [b, c]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "kd_loss";
        let n = b * c;
        check_len(op, "lp", lp.len().min(n), b, c)?;
        check_len(op, "lq", lq.len().min(n), b, c)?;
        if b == 0 {
            return self.zeros::<f32>(1);
        }
        let ni = i32_of(op, n)?;
        let mut t = self.output::<f32>(n)?;
        let mut l = self.stream.launch_builder(&self.kd.terms);
        l.arg(lp).arg(lq).arg(&ni).arg(&mut t);
        // SAFETY: lp, lq and t hold n floats (checked, allocated); thread i touches element i.
        unsafe { l.launch(per_element(n)) }.map_err(driver(op))?;
        self.sum_scaled(&t, n, (tau * tau, b as f32))
    }

    /// `∂L/∂z = (exp(lq) − exp(lp))·g·τ/B` (B×C), `g` one float on the device.
    pub fn kd_bwd(
        &self,
        (lq, lp): (&CudaSlice<f32>, &CudaSlice<f32>),
        g: &CudaSlice<f32>,
        tau: f32,
        [b, c]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "kd_bwd";
        let n = b * c;
        check_len(op, "lq", lq.len().min(n), b, c)?;
        check_len(op, "lp", lp.len().min(n), b, c)?;
        check_len(op, "g", g.len().min(1), 1, 1)?;
        let (ni, bi) = (i32_of(op, n)?, i32_of(op, b)?);
        let mut dz = self.output::<f32>(n)?;
        let mut l = self.stream.launch_builder(&self.kd.bwd);
        l.arg(lq)
            .arg(lp)
            .arg(&ni)
            .arg(g)
            .arg(&tau)
            .arg(&bi)
            .arg(&mut dz);
        // SAFETY: lq, lp and dz hold n floats, g one (checked); thread i writes dz[i] only.
        unsafe { l.launch(per_element(n)) }.map_err(driver(op))?;
        Ok(dz)
    }

    /// Columns `start..start + w` of `x` (B×C), as a B×w buffer (`bwd` = false), or the
    /// B×C gradient of that slice from `x` = its B×w gradient (`bwd` = true).
    pub fn slice_cols(
        &self,
        x: &CudaSlice<f32>,
        [b, c]: [usize; 2],
        (start, w): (usize, usize),
        bwd: bool,
    ) -> Result<CudaSlice<f32>> {
        let op = if bwd {
            "slice_cols_bwd"
        } else {
            "slice_cols_fwd"
        };
        let (rows_in, out) = if bwd { (w, c) } else { (c, w) };
        check_len(op, "x", x.len().min(b * rows_in), b, rows_in)?;
        let (bi, ci) = (i32_of(op, b)?, i32_of(op, c)?);
        let (si, wi) = (i32_of(op, start)?, i32_of(op, w)?);
        i32_of(op, b * c)?;
        let mut y = self.output::<f32>(b * out)?;
        let func = if bwd {
            &self.kd.slice_bwd
        } else {
            &self.kd.slice_fwd
        };
        let mut l = self.stream.launch_builder(func);
        l.arg(x).arg(&bi).arg(&ci).arg(&si).arg(&wi).arg(&mut y);
        // SAFETY: x holds B×(w or C) floats (checked), y B×(C or w); start + w ≤ C (the
        // callers check); thread i writes y[i] only.
        unsafe { l.launch(per_element(b * out)) }.map_err(driver(op))?;
        Ok(y)
    }
}
