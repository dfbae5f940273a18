//! The device handle and the typed launchers (built with the `cuda` feature only).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use crate::kernels::{ptx, BLOCK, KERNELS, MAX_K, TILE};
use crate::{check_len, CosineBwd, CosineFwd, Error, Result};

fn driver(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::Driver {
        op,
        detail: e.to_string(),
    }
}

fn grid(n: usize, per: u32) -> u32 {
    (n as u32).div_ceil(per).max(1)
}

fn i32_of(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Shape {
        op,
        detail: format!("{v} does not fit a 32-bit kernel argument"),
    })
}

/// One CUDA device with every kernel module loaded (once, at construction).
#[derive(Debug)]
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
}

impl Gpu {
    /// Opens device `ordinal`. Probes for the driver library first, so a machine without CUDA
    /// gets [`Error::NoDevice`] instead of a panic.
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: only checks whether the driver library can be loaded; no CUDA call is made.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::NoDevice(
                "the CUDA driver library (libcuda) is not installed".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| Error::NoDevice(e.to_string()))?;
        let stream = ctx.default_stream();
        let mut functions = HashMap::new();
        for k in KERNELS {
            let text = ptx(k.name).ok_or_else(|| Error::Driver {
                op: "load_module",
                detail: format!("no PTX for {}", k.name),
            })?;
            let module = ctx
                .load_module(Ptx::from_src(text))
                .map_err(driver("load_module"))?;
            for f in k.functions {
                functions.insert(
                    *f,
                    module.load_function(f).map_err(driver("load_function"))?,
                );
            }
        }
        Ok(Self {
            ctx,
            stream,
            functions,
        })
    }

    /// The device's name.
    pub fn name(&self) -> String {
        self.ctx.name().unwrap_or_else(|_| "CUDA device".into())
    }

    fn f(&self, name: &'static str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or(Error::Driver {
            op: "load_function",
            detail: format!("{name} not loaded"),
        })
    }

    fn up<T: DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(v).map_err(driver("clone_htod"))
    }

    fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(n.max(1))
            .map_err(driver("alloc_zeros"))
    }

    fn down(&self, v: &CudaSlice<f32>, n: usize) -> Result<Vec<f32>> {
        let mut out = self.stream.clone_dtoh(v).map_err(driver("clone_dtoh"))?;
        out.truncate(n);
        Ok(out)
    }

    /// Launches the norms and the fused cosine/logit kernel on device buffers.
    fn launch_cosine_fwd(
        &self,
        (fd, td, sd): (&CudaSlice<f32>, &CudaSlice<f32>, &CudaSlice<f32>),
        (fnorm, tnorm): (&mut CudaSlice<f32>, &mut CudaSlice<f32>),
        (cos, z): (&mut CudaSlice<f32>, &mut CudaSlice<f32>),
        [b, c, d]: [usize; 3],
    ) -> Result<()> {
        let op = "cosine_logits_fwd";
        let (bi, ci, di) = (i32_of(op, b)?, i32_of(op, c)?, i32_of(op, d)?);
        self.norms(fd, bi, di, fnorm, b)?;
        self.norms(td, ci, di, tnorm, c)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(c, TILE), grid(b, TILE), 1),
            block_dim: (TILE, TILE, 1),
            shared_mem_bytes: 0,
        };
        let func = self.f("cosine_logits_fwd_f32")?;
        let mut l = self.stream.launch_builder(func);
        l.arg(fd).arg(td).arg(&*fnorm).arg(&*tnorm).arg(sd);
        l.arg(&bi).arg(&ci).arg(&di).arg(cos).arg(z);
        // SAFETY: the argument list matches `cosine_logits_fwd_f32`'s signature; every buffer
        // holds the B×D, C×D, B, C or B×C floats the kernel indexes (bounds-checked inside).
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        Ok(())
    }

    /// Launches the two backward contractions (∂F, ∂Θ) on device buffers; H = σ·G + extra.
    fn launch_cosine_bwd(
        &self,
        (fd, td, sd): (&CudaSlice<f32>, &CudaSlice<f32>, &CudaSlice<f32>),
        (fnorm, tnorm): (&CudaSlice<f32>, &CudaSlice<f32>),
        (gd, ed): (&CudaSlice<f32>, &CudaSlice<f32>),
        (df, dt): (&mut CudaSlice<f32>, &mut CudaSlice<f32>),
        [b, c, d]: [usize; 3],
    ) -> Result<()> {
        let op = "cosine_logits_bwd";
        let (bi, ci, di) = (i32_of(op, b)?, i32_of(op, c)?, i32_of(op, d)?);
        let shared = u32::try_from(4 * d).map_err(|_| Error::Shape {
            op,
            detail: "D too large".into(),
        })?;
        for (name, rows, out) in [
            ("cosine_logits_bwd_feat_f32", b, df),
            ("cosine_logits_bwd_weight_f32", c, dt),
        ] {
            let cfg = LaunchConfig {
                grid_dim: (rows.max(1) as u32, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: shared,
            };
            let func = self.f(name)?;
            let mut l = self.stream.launch_builder(func);
            l.arg(fd)
                .arg(td)
                .arg(fnorm)
                .arg(tnorm)
                .arg(sd)
                .arg(gd)
                .arg(ed);
            l.arg(&bi).arg(&ci).arg(&di).arg(out);
            // SAFETY: arguments match the kernel's signature; buffers are B×D, C×D, B, C, 1 and
            // B×C floats as indexed; `shared` gives the D floats of dynamic shared memory.
            unsafe { l.launch(cfg) }.map_err(driver(op))?;
        }
        Ok(())
    }

    /// Forward of the cosine head: F (B×D), Θ (C×D), σ → cos, z = σ·cos and the row norms.
    pub fn cosine_logits_fwd(
        &self,
        f: &[f32],
        theta: &[f32],
        sigma: f32,
        [b, c, d]: [usize; 3],
    ) -> Result<CosineFwd> {
        let op = "cosine_logits_fwd";
        check_len(op, "F", f.len(), b, d)?;
        check_len(op, "Θ", theta.len(), c, d)?;
        let (fd, td, sd) = (self.up(f)?, self.up(theta)?, self.up(&[sigma])?);
        let (mut fnorm, mut tnorm) = (self.zeros::<f32>(b)?, self.zeros::<f32>(c)?);
        let (mut cos, mut z) = (self.zeros::<f32>(b * c)?, self.zeros::<f32>(b * c)?);
        self.launch_cosine_fwd(
            (&fd, &td, &sd),
            (&mut fnorm, &mut tnorm),
            (&mut cos, &mut z),
            [b, c, d],
        )?;
        Ok(CosineFwd {
            cos: self.down(&cos, b * c)?,
            z: self.down(&z, b * c)?,
            f_norm: self.down(&fnorm, b)?,
            t_norm: self.down(&tnorm, c)?,
        })
    }

    fn norms(
        &self,
        x: &CudaSlice<f32>,
        rows: i32,
        d: i32,
        out: &mut CudaSlice<f32>,
        n: usize,
    ) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (n.max(1) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let func = self.f("cosine_logits_norms_f32")?;
        let mut l = self.stream.launch_builder(func);
        l.arg(x).arg(&rows).arg(&d).arg(out);
        // SAFETY: `x` holds rows×d floats and `out` rows floats, as the kernel expects.
        unsafe { l.launch(cfg) }.map_err(driver("cosine_logits_norms"))?;
        Ok(())
    }

    /// Backward of the cosine head from G = ∂L/∂z and an optional extra ∂L/∂cos (B×C each).
    #[allow(clippy::too_many_arguments)]
    pub fn cosine_logits_bwd(
        &self,
        f: &[f32],
        theta: &[f32],
        sigma: f32,
        g: &[f32],
        extra: Option<&[f32]>,
        cos: &[f32],
        [b, c, d]: [usize; 3],
    ) -> Result<CosineBwd> {
        let op = "cosine_logits_bwd";
        check_len(op, "F", f.len(), b, d)?;
        check_len(op, "Θ", theta.len(), c, d)?;
        check_len(op, "G", g.len(), b, c)?;
        check_len(op, "cos", cos.len(), b, c)?;
        if let Some(e) = extra {
            check_len(op, "∂cos", e.len(), b, c)?;
        }
        let (fd, td, sd, gd, cd) = (
            self.up(f)?,
            self.up(theta)?,
            self.up(&[sigma])?,
            self.up(g)?,
            self.up(cos)?,
        );
        let ed = match extra {
            Some(e) => self.up(e)?,
            None => self.zeros::<f32>(b * c)?,
        };
        let (bi, ci, di) = (i32_of(op, b)?, i32_of(op, c)?, i32_of(op, d)?);
        let (mut fnorm, mut tnorm) = (self.zeros::<f32>(b)?, self.zeros::<f32>(c)?);
        self.norms(&fd, bi, di, &mut fnorm, b)?;
        self.norms(&td, ci, di, &mut tnorm, c)?;
        let (mut df, mut dt, mut ds) = (
            self.zeros::<f32>(b * d)?,
            self.zeros::<f32>(c * d)?,
            self.zeros::<f32>(1)?,
        );
        self.launch_cosine_bwd(
            (&fd, &td, &sd),
            (&fnorm, &tnorm),
            (&gd, &ed),
            (&mut df, &mut dt),
            [b, c, d],
        )?;
        let n = i32_of(op, b * c)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(b * c, BLOCK), 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let func = self.f("cosine_logits_bwd_sigma_f32")?;
        let mut l = self.stream.launch_builder(func);
        l.arg(&gd).arg(&cd).arg(&n).arg(&mut ds);
        // SAFETY: `gd` and `cd` hold n = B·C floats, `ds` one float.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        Ok(CosineBwd {
            df: self.down(&df, b * d)?,
            dtheta: self.down(&dt, c * d)?,
            dsigma: self.down(&ds, 1)?[0],
        })
    }

    fn labels(&self, op: &'static str, labels: &[usize], c: usize) -> Result<CudaSlice<i32>> {
        let v: Vec<i32> = labels
            .iter()
            .map(|&l| {
                if l >= c {
                    Err(Error::Shape {
                        op,
                        detail: format!("label {l} outside 0..{c}"),
                    })
                } else {
                    i32_of(op, l)
                }
            })
            .collect::<Result<_>>()?;
        self.up(&v)
    }

    fn margin_args(
        op: &'static str,
        cos: &[f32],
        labels: &[usize],
        n_old: usize,
        k: usize,
        [b, c]: [usize; 2],
    ) -> Result<(usize, usize)> {
        check_len(op, "cos", cos.len(), b, c)?;
        check_len(op, "labels", labels.len(), b, 1)?;
        if n_old > c || k > MAX_K {
            return Err(Error::Shape {
                op,
                detail: format!("n_old {n_old} ≤ C {c} and K {k} ≤ {MAX_K} required"),
            });
        }
        let k = k.min(c - n_old);
        let pairs = labels.iter().filter(|&&l| l < n_old).count() * k;
        Ok((k, pairs))
    }

    /// Launches a margin-ranking kernel on device buffers: without `scale` the forward (per-row
    /// hinge sums into `out`, B floats), with it the backward (∂cos·scale into `out`, B×C).
    fn launch_margin(
        &self,
        (cd, ld): (&CudaSlice<f32>, &CudaSlice<i32>),
        [b, c]: [usize; 2],
        (n_old, k, margin): (usize, usize, f32),
        scale: Option<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let name = if scale.is_some() {
            "margin_rank_bwd_f32"
        } else {
            "margin_rank_fwd_f32"
        };
        let (bi, ci) = (i32_of(name, b)?, i32_of(name, c)?);
        let (oi, ki) = (i32_of(name, n_old)?, i32_of(name, k)?);
        let cfg = LaunchConfig {
            grid_dim: (grid(b, 128), 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let func = self.f(name)?;
        let mut l = self.stream.launch_builder(func);
        l.arg(cd)
            .arg(ld)
            .arg(&bi)
            .arg(&ci)
            .arg(&oi)
            .arg(&ki)
            .arg(&margin);
        if let Some(s) = &scale {
            l.arg(s);
        }
        l.arg(out);
        // SAFETY: cos is B×C floats, labels B ints (< C, checked), `out` B (forward) or B×C
        // (backward) floats; K ≤ 16 as the kernel's register array requires.
        unsafe { l.launch(cfg) }.map_err(driver(name))?;
        Ok(())
    }

    /// Margin-ranking loss (mean over (old-class row, hard negative) pairs; 0 without pairs).
    pub fn margin_rank_fwd(
        &self,
        cos: &[f32],
        labels: &[usize],
        n_old: usize,
        k: usize,
        margin: f32,
        [b, c]: [usize; 2],
    ) -> Result<f32> {
        let op = "margin_rank_fwd";
        let (k, pairs) = Self::margin_args(op, cos, labels, n_old, k, [b, c])?;
        let (cd, ld) = (self.up(cos)?, self.labels(op, labels, c)?);
        let mut rows = self.zeros::<f32>(b)?;
        self.launch_margin((&cd, &ld), [b, c], (n_old, k, margin), None, &mut rows)?;
        if pairs == 0 {
            return Ok(0.0);
        }
        let total: f64 = self.down(&rows, b)?.iter().map(|v| f64::from(*v)).sum();
        Ok((total / pairs as f64) as f32)
    }

    /// ∂L/∂cos of the margin-ranking loss times the upstream gradient `g`.
    #[allow(clippy::too_many_arguments)]
    pub fn margin_rank_bwd(
        &self,
        cos: &[f32],
        labels: &[usize],
        n_old: usize,
        k: usize,
        margin: f32,
        g: f32,
        [b, c]: [usize; 2],
    ) -> Result<Vec<f32>> {
        let op = "margin_rank_bwd";
        let (k, pairs) = Self::margin_args(op, cos, labels, n_old, k, [b, c])?;
        let (cd, ld) = (self.up(cos)?, self.labels(op, labels, c)?);
        let mut dcos = self.zeros::<f32>(b * c)?;
        let scale = if pairs == 0 { 0.0 } else { g / pairs as f32 };
        let args = (n_old, k, margin);
        self.launch_margin((&cd, &ld), [b, c], args, Some(scale), &mut dcos)?;
        self.down(&dcos, b * c)
    }

    /// Launches a feature-distillation kernel on device buffers: without `scale` the forward
    /// (per-row `1 − cos` into `out`, B floats), with `scale` = −λ·g/B the backward (∂F, B×D).
    fn launch_distill(
        &self,
        (fd, sd): (&CudaSlice<f32>, &CudaSlice<f32>),
        [b, d]: [usize; 2],
        scale: Option<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let name = if scale.is_some() {
            "feature_distill_bwd_f32"
        } else {
            "feature_distill_fwd_f32"
        };
        let (bi, di) = (i32_of(name, b)?, i32_of(name, d)?);
        let cfg = LaunchConfig {
            grid_dim: (b.max(1) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let func = self.f(name)?;
        let mut l = self.stream.launch_builder(func);
        l.arg(fd).arg(sd).arg(&bi).arg(&di);
        if let Some(s) = &scale {
            l.arg(s);
        }
        l.arg(out);
        // SAFETY: F and F* hold B×D floats; `out` B (forward) or B×D (backward) floats.
        unsafe { l.launch(cfg) }.map_err(driver(name))?;
        Ok(())
    }

    fn distill(
        &self,
        f: &[f32],
        f_star: &[f32],
        [b, d]: [usize; 2],
        scale: Option<f32>,
    ) -> Result<Vec<f32>> {
        check_len("feature_distill", "F", f.len(), b, d)?;
        check_len("feature_distill", "F*", f_star.len(), b, d)?;
        let (fd, sd) = (self.up(f)?, self.up(f_star)?);
        let n = if scale.is_some() { b * d } else { b };
        let mut out = self.zeros::<f32>(n)?;
        self.launch_distill((&fd, &sd), [b, d], scale, &mut out)?;
        self.down(&out, n)
    }

    /// Less-forget loss λ·mean_b(1 − ⟨F̄_b, F̄*_b⟩).
    pub fn feature_distill_fwd(
        &self,
        f: &[f32],
        f_star: &[f32],
        lambda: f32,
        [b, d]: [usize; 2],
    ) -> Result<f32> {
        let rows = self.distill(f, f_star, [b, d], None)?;
        if b == 0 {
            return Ok(0.0);
        }
        let total: f64 = rows.iter().map(|v| f64::from(*v)).sum();
        Ok((f64::from(lambda) * total / b as f64) as f32)
    }

    /// ∂L/∂F of the less-forget loss times the upstream gradient `g`.
    pub fn feature_distill_bwd(
        &self,
        f: &[f32],
        f_star: &[f32],
        lambda: f32,
        g: f32,
        [b, d]: [usize; 2],
    ) -> Result<Vec<f32>> {
        let scale = -lambda * g / b.max(1) as f32;
        self.distill(f, f_star, [b, d], Some(scale))
    }

    /// Times each head kernel on device-resident random data of shape (B, C, D): returns
    /// (name, seconds per call, bytes that must cross DRAM per call), averaged over `iters`.
    pub fn bench_heads(
        &self,
        [b, c, d]: [usize; 3],
        iters: usize,
    ) -> Result<Vec<(&'static str, f64, f64)>> {
        let gen = |n: usize, s: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(s) >> 8) as f32
                        / 16_777_216.0
                        - 0.5
                })
                .collect()
        };
        let (fd, td) = (self.up(&gen(b * d, 1))?, self.up(&gen(c * d, 2))?);
        let (gd, sd) = (self.up(&gen(b * c, 3))?, self.up(&[4.0f32])?);
        let labels: Vec<usize> = (0..b).map(|i| i % c.max(1)).collect();
        let ld = self.labels("bench_heads", &labels, c)?;
        let (mut fnorm, mut tnorm) = (self.zeros::<f32>(b)?, self.zeros::<f32>(c)?);
        let (mut cos, mut z) = (self.zeros::<f32>(b * c)?, self.zeros::<f32>(b * c)?);
        let (mut df, mut dt) = (self.zeros::<f32>(b * d)?, self.zeros::<f32>(c * d)?);
        let mut rows = self.zeros::<f32>(b)?;
        let time = |run: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
            run()?;
            self.stream.synchronize().map_err(driver("synchronize"))?;
            let t0 = Instant::now();
            for _ in 0..iters.max(1) {
                run()?;
            }
            self.stream.synchronize().map_err(driver("synchronize"))?;
            Ok(t0.elapsed().as_secs_f64() / iters.max(1) as f64)
        };
        let (bc, bd, cd) = ((b * c) as f64, (b * d) as f64, (c * d) as f64);
        let mut out = Vec::new();
        let t = time(&mut || {
            let (norms, outs) = ((&mut fnorm, &mut tnorm), (&mut cos, &mut z));
            self.launch_cosine_fwd((&fd, &td, &sd), norms, outs, [b, c, d])
        })?;
        out.push(("cosine_logits_fwd", t, 4.0 * (bd + cd + 2.0 * bc)));
        let t = time(&mut || {
            let (ins, outs) = ((&gd, &gd), (&mut df, &mut dt));
            self.launch_cosine_bwd((&fd, &td, &sd), (&fnorm, &tnorm), ins, outs, [b, c, d])
        })?;
        out.push(("cosine_logits_bwd", t, 4.0 * (2.0 * (bd + cd) + 2.0 * bc)));
        let t = time(&mut || {
            let args = (c / 2, 2, 0.5);
            self.launch_margin((&cos, &ld), [b, c], args, Some(1.0), &mut z)
        })?;
        out.push(("margin_rank_bwd", t, 4.0 * 2.0 * bc));
        let t = time(&mut || self.launch_distill((&fd, &df), [b, d], None, &mut rows))?;
        out.push(("feature_distill_fwd", t, 4.0 * 2.0 * bd));
        Ok(out)
    }
}
