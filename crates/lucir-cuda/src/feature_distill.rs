//! Feature distillation on the device — the loss of LUCIR's less-forget constraint
//! (docs/design.md §3 "Losses", §5): `L = λ·mean_b(1 − ⟨F̄_b, F̄*_b⟩)` — the launchers of
//! `kernels/feature_distill.cu`. The forward keeps F and F* on the device in
//! [`FeatureDistill`] for the backward pass.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use crate::device::{driver, i32_of, load};
use crate::kernels::{BLOCK, FEATURE_DISTILL};
use crate::{check_len, Gpu, Result};

/// The module's functions, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    fwd: CudaFunction,
    bwd: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [fwd, bwd] = load(ctx, &FEATURE_DISTILL)?;
        Ok(Self { fwd, bwd })
    }
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
    /// Launches the forward (`scale` = None: per-row `1 − cos` into `out`, B floats) or, with
    /// `scale` = −λ·g/B, the backward (∂F into `out`, B×D floats).
    fn feature_distill_launch(
        &self,
        fwd: &FeatureDistill,
        scale: Option<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (func, op) = match scale {
            Some(_) => (&self.feature_distill.bwd, "feature_distill_bwd"),
            None => (&self.feature_distill.fwd, "feature_distill_fwd"),
        };
        let [b, d] = fwd.dims;
        let (bi, di) = (i32_of(op, b)?, i32_of(op, d)?);
        let cfg = LaunchConfig {
            grid_dim: (b.max(1) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(func);
        l.arg(&fwd.f).arg(&fwd.f_star).arg(&bi).arg(&di);
        if let Some(s) = &scale {
            l.arg(s);
        }
        l.arg(out);
        // SAFETY: F and F* hold B×D floats; `out` B (forward) or B×D (backward) floats, each
        // row written in full by its block.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        Ok(())
    }

    /// Feature-distillation loss of features `f` against the previous model's `f_star`
    /// (B×D each) with weight `lambda`.
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
        if b > 0 {
            let mut rows = self.output::<f32>(b)?;
            self.feature_distill_launch(&saved, None, &mut rows)?;
            let total = self.sum(&rows, b)?;
            saved.loss = (f64::from(lambda) * total / b as f64) as f32;
        }
        Ok(saved)
    }

    /// ∂L/∂F (B×D) of a forward pass, times the upstream gradient `g`.
    pub fn feature_distill_bwd(&self, fwd: &FeatureDistill, g: f32) -> Result<Vec<f32>> {
        let [b, d] = fwd.dims;
        let mut df = self.output::<f32>(b * d)?;
        let scale = -fwd.lambda * g / b.max(1) as f32;
        self.feature_distill_launch(fwd, Some(scale), &mut df)?;
        self.download(&df, b * d)
    }
}
