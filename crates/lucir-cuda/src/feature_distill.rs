//! Feature distillation on the device — the loss of LUCIR's less-forget constraint
//! (docs/design.md §3 "Losses", §5): `L = λ·mean_b(1 − ⟨F̄_b, F̄*_b⟩)` — the launchers of
//! `kernels/feature_distill.cu`. The forward keeps F and F* on the device in
//! [`FeatureDistill`] for the backward pass.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, PushKernelArg};

use crate::device::{driver, i32_of, per_row};
use crate::kernels::FEATURE_DISTILL;
use crate::{check_len, Gpu, Result};

/// The module's two functions, resolved once when the device is opened.
pub(crate) type Kernels = crate::device::FwdBwd;

/// Loads them.
pub(crate) fn kernels(ctx: &Arc<CudaContext>) -> Result<Kernels> {
    Kernels::load(ctx, &FEATURE_DISTILL)
}

/// A forward pass, kept on the device for the backward pass.
#[derive(Debug)]
pub struct FeatureDistill {
    dims: [usize; 2],
    lambda: f32,
    f: CudaSlice<f32>,
    f_star: CudaSlice<f32>,
    /// The loss λ·mean_b(1 − ⟨F̄_b, F̄*_b⟩).
    pub loss: f32,
}

impl Gpu {
    /// Launches the forward (`bwd` = None: per-row `1 − cos` into `out`, B floats) or, with
    /// the upstream gradient `g` (one float on the device) and −λ, the backward (∂F into
    /// `out`, B×D floats).
    fn feature_distill_launch(
        &self,
        (f, f_star): (&CudaSlice<f32>, &CudaSlice<f32>),
        [b, d]: [usize; 2],
        bwd: Option<(&CudaSlice<f32>, f32)>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (func, op) = match bwd {
            Some(_) => (&self.feature_distill.bwd, "feature_distill_bwd"),
            None => (&self.feature_distill.fwd, "feature_distill_fwd"),
        };
        let (bi, di) = (i32_of(op, b)?, i32_of(op, d)?);
        let mut l = self.stream.launch_builder(func);
        l.arg(f).arg(f_star).arg(&bi).arg(&di);
        if let Some((g, neg_lambda)) = &bwd {
            l.arg(*g).arg(neg_lambda);
        }
        l.arg(out);
        // SAFETY: F and F* hold B×D floats; `out` B (forward) or B×D (backward) floats, each
        // row written in full by its block; g (backward) one float.
        unsafe { l.launch(per_row(b)) }.map_err(driver(op))?;
        Ok(())
    }

    /// The feature-distillation loss `λ·mean_b(1 − ⟨F̄_b, F̄*_b⟩)` of device features `f`
    /// against the previous model's `f_star` (B×D each), as one float on the device.
    pub fn feature_distill_loss(
        &self,
        (f, f_star): (&CudaSlice<f32>, &CudaSlice<f32>),
        lambda: f32,
        [b, d]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "feature_distill_loss";
        check_len(op, "F", f.len().min(b * d), b, d)?;
        check_len(op, "F*", f_star.len().min(b * d), b, d)?;
        if b == 0 {
            return self.zeros::<f32>(1);
        }
        let mut rows = self.output::<f32>(b)?;
        self.feature_distill_launch((f, f_star), [b, d], None, &mut rows)?;
        self.sum_scaled(&rows, b, (lambda, b as f32))
    }

    /// ∂L/∂F (B×D) of [`Gpu::feature_distill_loss`], times the upstream gradient `g` (one
    /// float on the device).
    pub fn feature_distill_grad(
        &self,
        (f, f_star): (&CudaSlice<f32>, &CudaSlice<f32>),
        lambda: f32,
        g: &CudaSlice<f32>,
        [b, d]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "feature_distill_grad";
        check_len(op, "F", f.len().min(b * d), b, d)?;
        check_len(op, "F*", f_star.len().min(b * d), b, d)?;
        let mut df = self.output::<f32>(b * d)?;
        if b > 0 {
            self.feature_distill_launch((f, f_star), [b, d], Some((g, -lambda)), &mut df)?;
        }
        Ok(df)
    }

    /// Feature-distillation loss of host features `f` against `f_star` (B×D each) with weight
    /// `lambda`, kept on the device for [`Gpu::feature_distill_bwd`].
    pub fn feature_distill_fwd(
        &self,
        f: &[f32],
        f_star: &[f32],
        lambda: f32,
        [b, d]: [usize; 2],
    ) -> Result<FeatureDistill> {
        let op = "feature_distill_fwd";
        check_len(op, "F", f.len(), b, d)?;
        check_len(op, "F*", f_star.len(), b, d)?;
        let mut saved = FeatureDistill {
            dims: [b, d],
            lambda,
            f: self.upload(f)?,
            f_star: self.upload(f_star)?,
            loss: 0.0,
        };
        let loss = self.feature_distill_loss((&saved.f, &saved.f_star), lambda, [b, d])?;
        saved.loss = self.download(&loss, 1)?[0];
        Ok(saved)
    }

    /// ∂L/∂F (B×D) of a forward pass, times the upstream gradient `g`, in host memory.
    pub fn feature_distill_bwd(&self, fwd: &FeatureDistill, g: f32) -> Result<Vec<f32>> {
        let [b, d] = fwd.dims;
        let g = self.upload(&[g])?;
        let df = self.feature_distill_grad((&fwd.f, &fwd.f_star), fwd.lambda, &g, fwd.dims)?;
        self.download(&df, b * d)
    }
}
