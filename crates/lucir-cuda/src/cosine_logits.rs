//! Cosine logits on the device (docs/design.md §3 "Gradients of the head", §5): `cos = F̄·Θ̄ᵀ`,
//! `z = σ·cos` and their backward — the launchers of `kernels/cosine_logits.cu`. The forward's
//! inputs, norms and outputs stay on the device in [`CosineLogits`] for the backward pass, which
//! uploads only the upstream gradient.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use crate::device::{driver, grid, i32_of, load, NULL};
use crate::kernels::{BLOCK, COSINE_LOGITS, TILE};
use crate::{check_len, Gpu, Result};

/// The module's functions, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    norms: CudaFunction,
    fwd: CudaFunction,
    bwd_gemm: CudaFunction,
    bwd_project: CudaFunction,
    bwd_sigma: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [norms, fwd, bwd_gemm, bwd_project, bwd_sigma] = load(ctx, &COSINE_LOGITS)?;
        Ok(Self {
            norms,
            fwd,
            bwd_gemm,
            bwd_project,
            bwd_sigma,
        })
    }
}

/// A forward pass, kept on the device: F (B×D), Θ (C×D), σ, the clamped row norms, cos and
/// z = σ·cos (B×C). Read results back with [`CosineLogits::cos`], [`CosineLogits::z`] and
/// [`CosineLogits::norms`].
#[derive(Debug)]
pub struct CosineLogits {
    dims: [usize; 3],
    f: CudaSlice<f32>,
    theta: CudaSlice<f32>,
    sigma: CudaSlice<f32>,
    f_norm: CudaSlice<f32>,
    t_norm: CudaSlice<f32>,
    cos: CudaSlice<f32>,
    z: CudaSlice<f32>,
}

/// Gradients of the cosine logits.
#[derive(Clone, Debug, PartialEq)]
pub struct CosineLogitsGrads {
    /// ∂L/∂F, B×D.
    pub df: Vec<f32>,
    /// ∂L/∂Θ, C×D.
    pub dtheta: Vec<f32>,
    /// ∂L/∂σ, when asked for.
    pub dsigma: Option<f32>,
}

impl CosineLogits {
    /// (B, C, D).
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// The unscaled cosines, B×C.
    pub fn cos(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let [b, c, _] = self.dims;
        gpu.download(&self.cos, b * c)
    }

    /// The logits σ·cos, B×C.
    pub fn z(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let [b, c, _] = self.dims;
        gpu.download(&self.z, b * c)
    }

    /// max(‖F_b‖, ε) (B) and max(‖Θ_c‖, ε) (C).
    pub fn norms(&self, gpu: &Gpu) -> Result<(Vec<f32>, Vec<f32>)> {
        let [b, c, _] = self.dims;
        Ok((
            gpu.download(&self.f_norm, b)?,
            gpu.download(&self.t_norm, c)?,
        ))
    }
}

impl Gpu {
    /// Row norms of `x` (rows×d) into `out`.
    fn cosine_logits_norms(
        &self,
        x: &CudaSlice<f32>,
        [rows, d]: [i32; 2],
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (rows.max(1) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(&self.cosine_logits.norms);
        l.arg(x).arg(&rows).arg(&d).arg(out);
        // SAFETY: `x` holds rows×d floats and `out` rows floats, every one of which the kernel
        // writes (one block per row).
        unsafe { l.launch(cfg) }.map_err(driver("cosine_logits_norms"))?;
        Ok(())
    }

    /// Forward of the cosine head: F (B×D), Θ (C×D) and σ → cos and z = σ·cos, on the device.
    pub fn cosine_logits_fwd(
        &self,
        f: &[f32],
        theta: &[f32],
        sigma: f32,
        [b, c, d]: [usize; 3],
    ) -> Result<CosineLogits> {
        let op = "cosine_logits_fwd";
        check_len(op, "F", f.len(), b, d)?;
        check_len(op, "Θ", theta.len(), c, d)?;
        let (bi, ci, di) = (i32_of(op, b)?, i32_of(op, c)?, i32_of(op, d)?);
        let mut out = CosineLogits {
            dims: [b, c, d],
            f: self.upload(f)?,
            theta: self.upload(theta)?,
            sigma: self.upload(&[sigma])?,
            f_norm: self.output(b)?,
            t_norm: self.output(c)?,
            cos: self.output(b * c)?,
            z: self.output(b * c)?,
        };
        self.cosine_logits_norms(&out.f, [bi, di], &mut out.f_norm)?;
        self.cosine_logits_norms(&out.theta, [ci, di], &mut out.t_norm)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(c, TILE), grid(b, TILE), 1),
            block_dim: (TILE, TILE, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(&self.cosine_logits.fwd);
        l.arg(&out.f)
            .arg(&out.theta)
            .arg(&out.f_norm)
            .arg(&out.t_norm);
        l.arg(&out.sigma).arg(&bi).arg(&ci).arg(&di);
        l.arg(&mut out.cos).arg(&mut out.z);
        // SAFETY: the argument list matches `cosine_logits_fwd_f32`'s signature; the buffers
        // hold the B×D, C×D, B, C, 1 and B×C floats the kernel indexes (bounds-checked inside),
        // and the tiles cover every (b, c), so cos and z are written in full.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        Ok(out)
    }

    /// Backward of the cosine head from G = ∂L/∂z and an optional extra ∂L/∂cos (B×C each):
    /// ∂F, ∂Θ and, when `sigma_grad`, ∂σ = Σ G⊙cos.
    pub fn cosine_logits_bwd(
        &self,
        fwd: &CosineLogits,
        g: &[f32],
        extra: Option<&[f32]>,
        sigma_grad: bool,
    ) -> Result<CosineLogitsGrads> {
        let op = "cosine_logits_bwd";
        let [b, c, d] = fwd.dims;
        check_len(op, "G", g.len(), b, c)?;
        if let Some(e) = extra {
            check_len(op, "∂cos", e.len(), b, c)?;
        }
        let (bi, ci, di) = (i32_of(op, b)?, i32_of(op, c)?, i32_of(op, d)?);
        let gd = self.upload(g)?;
        let ed = extra.map(|e| self.upload(e)).transpose()?;
        let (mut df, mut dt) = (self.output::<f32>(b * d)?, self.output::<f32>(c * d)?);
        // ∂F: rows b, summed over c against Θ, projected on F̄; ∂Θ: rows c, summed over b
        // against F, projected on Θ̄.
        for (trans, rows, rows_i, other, k_norm, x, x_norm, out) in [
            (
                0i32,
                b,
                bi,
                &fwd.theta,
                &fwd.t_norm,
                &fwd.f,
                &fwd.f_norm,
                &mut df,
            ),
            (
                1i32,
                c,
                ci,
                &fwd.f,
                &fwd.f_norm,
                &fwd.theta,
                &fwd.t_norm,
                &mut dt,
            ),
        ] {
            let cfg = LaunchConfig {
                grid_dim: (grid(d, TILE), grid(rows, TILE), 1),
                block_dim: (TILE, TILE, 1),
                shared_mem_bytes: 0,
            };
            let mut l = self.stream.launch_builder(&self.cosine_logits.bwd_gemm);
            l.arg(other).arg(k_norm).arg(&fwd.sigma).arg(&gd);
            match &ed {
                Some(e) => l.arg(e),
                None => l.arg(&NULL),
            };
            l.arg(&bi).arg(&ci).arg(&di).arg(&trans).arg(&mut *out);
            // SAFETY: arguments match `cosine_logits_bwd_gemm_f32`; `other` is the C×D (trans
            // 0) or B×D (trans 1) operand and `k_norm` its norms, G (and `extra`, or null,
            // which the kernel tests for) B×C floats, σ one float; the tiles cover every
            // (row, j) of the rows×D output, bounds-checked inside, so `out` is written in full.
            unsafe { l.launch(cfg) }.map_err(driver(op))?;
            let cfg = LaunchConfig {
                grid_dim: (rows.max(1) as u32, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut l = self.stream.launch_builder(&self.cosine_logits.bwd_project);
            l.arg(x).arg(x_norm).arg(&rows_i).arg(&di).arg(&mut *out);
            // SAFETY: `x` and `out` hold rows×D floats, `x_norm` rows floats; one block per
            // row rewrites that row of `out` in place.
            unsafe { l.launch(cfg) }.map_err(driver(op))?;
        }
        let dsigma = if sigma_grad {
            let mut ds = self.zeros::<f32>(1)?;
            let n = i32_of(op, b * c)?;
            let cfg = LaunchConfig {
                grid_dim: (grid(b * c, BLOCK), 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut l = self.stream.launch_builder(&self.cosine_logits.bwd_sigma);
            l.arg(&gd).arg(&fwd.cos).arg(&n).arg(&mut ds);
            // SAFETY: `gd` and `cos` hold n = B·C floats; `ds` one zeroed float the blocks add
            // into.
            unsafe { l.launch(cfg) }.map_err(driver(op))?;
            Some(self.download(&ds, 1)?[0])
        } else {
            None
        };
        Ok(CosineLogitsGrads {
            df: self.download(&df, b * d)?,
            dtheta: self.download(&dt, c * d)?,
            dsigma,
        })
    }
}
