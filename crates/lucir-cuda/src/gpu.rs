//! The device handle and the typed launchers (built with the `cuda` feature only).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use crate::kernels::{ptx, KERNELS};
use crate::{check_len, CosineBwd, CosineFwd, Error, Result};

const BLOCK: u32 = 256;
const TILE: u32 = 16;
const MAX_K: usize = 16;

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
        let (bi, ci, di) = (i32_of(op, b)?, i32_of(op, c)?, i32_of(op, d)?);
        self.norms(&fd, bi, di, &mut fnorm, b)?;
        self.norms(&td, ci, di, &mut tnorm, c)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(c, TILE), grid(b, TILE), 1),
            block_dim: (TILE, TILE, 1),
            shared_mem_bytes: 0,
        };
        let func = self.f("cosine_logits_fwd_f32")?;
        let mut l = self.stream.launch_builder(func);
        l.arg(&fd).arg(&td).arg(&fnorm).arg(&tnorm).arg(&sd);
        l.arg(&bi).arg(&ci).arg(&di).arg(&mut cos).arg(&mut z);
        // SAFETY: the argument list matches `cosine_logits_fwd_f32`'s signature; every buffer
        // holds the B×D, C×D, B, C or B×C floats the kernel indexes (bounds-checked inside).
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
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
        let shared = u32::try_from(4 * d).map_err(|_| Error::Shape {
            op,
            detail: "D too large".into(),
        })?;
        for (name, rows, out) in [
            ("cosine_logits_bwd_feat_f32", b, &mut df),
            ("cosine_logits_bwd_weight_f32", c, &mut dt),
        ] {
            let cfg = LaunchConfig {
                grid_dim: (rows.max(1) as u32, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: shared,
            };
            let func = self.f(name)?;
            let mut l = self.stream.launch_builder(func);
            l.arg(&fd)
                .arg(&td)
                .arg(&fnorm)
                .arg(&tnorm)
                .arg(&sd)
                .arg(&gd)
                .arg(&ed);
            l.arg(&bi).arg(&ci).arg(&di).arg(out);
            // SAFETY: arguments match the kernel's signature; buffers are B×D, C×D, B, C, 1 and
            // B×C floats as indexed; `shared` gives the D floats of dynamic shared memory.
            unsafe { l.launch(cfg) }.map_err(driver(op))?;
        }
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
        let (bi, ci, oi, ki) = (
            i32_of(op, b)?,
            i32_of(op, c)?,
            i32_of(op, n_old)?,
            i32_of(op, k)?,
        );
        let cfg = LaunchConfig {
            grid_dim: (grid(b, 128), 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let func = self.f("margin_rank_fwd_f32")?;
        let mut l = self.stream.launch_builder(func);
        l.arg(&cd)
            .arg(&ld)
            .arg(&bi)
            .arg(&ci)
            .arg(&oi)
            .arg(&ki)
            .arg(&margin)
            .arg(&mut rows);
        // SAFETY: cos is B×C floats, labels B ints (< C, checked), rows B floats; K ≤ 16.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
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
        let (bi, ci, oi, ki) = (
            i32_of(op, b)?,
            i32_of(op, c)?,
            i32_of(op, n_old)?,
            i32_of(op, k)?,
        );
        let cfg = LaunchConfig {
            grid_dim: (grid(b, 128), 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let func = self.f("margin_rank_bwd_f32")?;
        let mut l = self.stream.launch_builder(func);
        l.arg(&cd)
            .arg(&ld)
            .arg(&bi)
            .arg(&ci)
            .arg(&oi)
            .arg(&ki)
            .arg(&margin)
            .arg(&scale)
            .arg(&mut dcos);
        // SAFETY: as in the forward; dcos holds B×C floats.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        self.down(&dcos, b * c)
    }

    fn distill(
        &self,
        name: &'static str,
        f: &[f32],
        f_star: &[f32],
        [b, d]: [usize; 2],
        scale: Option<f32>,
    ) -> Result<Vec<f32>> {
        check_len(name, "F", f.len(), b, d)?;
        check_len(name, "F*", f_star.len(), b, d)?;
        let (fd, sd) = (self.up(f)?, self.up(f_star)?);
        let n = if scale.is_some() { b * d } else { b };
        let mut out = self.zeros::<f32>(n)?;
        let (bi, di) = (i32_of(name, b)?, i32_of(name, d)?);
        let cfg = LaunchConfig {
            grid_dim: (b.max(1) as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let func = self.f(name)?;
        let mut l = self.stream.launch_builder(func);
        l.arg(&fd).arg(&sd).arg(&bi).arg(&di);
        if let Some(s) = &scale {
            l.arg(s);
        }
        l.arg(&mut out);
        // SAFETY: F and F* hold B×D floats; `out` B (forward) or B×D (backward) floats.
        unsafe { l.launch(cfg) }.map_err(driver(name))?;
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
        let rows = self.distill("feature_distill_fwd_f32", f, f_star, [b, d], None)?;
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
        self.distill("feature_distill_bwd_f32", f, f_star, [b, d], Some(scale))
    }

    /// Times each head kernel on device-resident random data of shape (B, C, D): returns
    /// (name, seconds per call, bytes that must cross DRAM per call), averaged over `iters`.
    pub fn bench_heads(
        &self,
        [b, c, d]: [usize; 3],
        iters: usize,
    ) -> Result<Vec<(&'static str, f64, f64)>> {
        let op = "bench_heads";
        let gen = |n: usize, s: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    (((i as u32).wrapping_mul(2654435761).wrapping_add(s) >> 8) as f32
                        / 16_777_216.0)
                        - 0.5
                })
                .collect()
        };
        let (fd, td) = (self.up(&gen(b * d, 1))?, self.up(&gen(c * d, 2))?);
        let (gd, sd) = (self.up(&gen(b * c, 3))?, self.up(&[4.0f32])?);
        let labels: Vec<usize> = (0..b).map(|i| i % c.max(1)).collect();
        let ld = self.labels(op, &labels, c)?;
        let (mut fnorm, mut tnorm) = (self.zeros::<f32>(b)?, self.zeros::<f32>(c)?);
        let (mut cos, mut z) = (self.zeros::<f32>(b * c)?, self.zeros::<f32>(b * c)?);
        let (mut df, mut dt) = (self.zeros::<f32>(b * d)?, self.zeros::<f32>(c * d)?);
        let mut rows = self.zeros::<f32>(b)?;
        let (bi, ci, di) = (i32_of(op, b)?, i32_of(op, c)?, i32_of(op, d)?);
        let (oi, ki, m, scale) = (i32_of(op, c / 2)?, 2i32, 0.5f32, 1.0f32);
        let fl = 4.0;
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
        let mut out = Vec::new();
        let t = time(&mut || {
            self.norms(&fd, bi, di, &mut fnorm, b)?;
            self.norms(&td, ci, di, &mut tnorm, c)?;
            let cfg = LaunchConfig {
                grid_dim: (grid(c, TILE), grid(b, TILE), 1),
                block_dim: (TILE, TILE, 1),
                shared_mem_bytes: 0,
            };
            let func = self.f("cosine_logits_fwd_f32")?;
            let mut l = self.stream.launch_builder(func);
            l.arg(&fd)
                .arg(&td)
                .arg(&fnorm)
                .arg(&tnorm)
                .arg(&sd)
                .arg(&bi)
                .arg(&ci)
                .arg(&di)
                .arg(&mut cos)
                .arg(&mut z);
            // SAFETY: as in `cosine_logits_fwd`.
            unsafe { l.launch(cfg) }.map_err(driver(op))?;
            Ok(())
        })?;
        out.push((
            "cosine_logits_fwd",
            t,
            fl * (2.0 * (b * d + c * d) as f64 + 2.0 * (b * c) as f64),
        ));
        let shared = (4 * d) as u32;
        let t = time(&mut || {
            for (name, n, o) in [
                ("cosine_logits_bwd_feat_f32", b, &mut df),
                ("cosine_logits_bwd_weight_f32", c, &mut dt),
            ] {
                let cfg = LaunchConfig {
                    grid_dim: (n.max(1) as u32, 1, 1),
                    block_dim: (BLOCK, 1, 1),
                    shared_mem_bytes: shared,
                };
                let func = self.f(name)?;
                let mut l = self.stream.launch_builder(func);
                l.arg(&fd)
                    .arg(&td)
                    .arg(&fnorm)
                    .arg(&tnorm)
                    .arg(&sd)
                    .arg(&gd)
                    .arg(&gd)
                    .arg(&bi)
                    .arg(&ci)
                    .arg(&di)
                    .arg(o);
                // SAFETY: as in `cosine_logits_bwd` (G doubles as the extra ∂cos).
                unsafe { l.launch(cfg) }.map_err(driver(op))?;
            }
            Ok(())
        })?;
        out.push((
            "cosine_logits_bwd",
            t,
            fl * (2.0 * (b * d + c * d) as f64 + 4.0 * (b * c) as f64),
        ));
        let t = time(&mut || {
            let cfg = LaunchConfig {
                grid_dim: (grid(b, 128), 1, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            let func = self.f("margin_rank_bwd_f32")?;
            let mut l = self.stream.launch_builder(func);
            l.arg(&cos)
                .arg(&ld)
                .arg(&bi)
                .arg(&ci)
                .arg(&oi)
                .arg(&ki)
                .arg(&m)
                .arg(&scale)
                .arg(&mut z);
            // SAFETY: as in `margin_rank_bwd`.
            unsafe { l.launch(cfg) }.map_err(driver(op))?;
            Ok(())
        })?;
        out.push(("margin_rank_bwd", t, fl * 2.0 * (b * c) as f64));
        let t = time(&mut || {
            let cfg = LaunchConfig {
                grid_dim: (b.max(1) as u32, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let func = self.f("feature_distill_fwd_f32")?;
            let mut l = self.stream.launch_builder(func);
            l.arg(&fd).arg(&df).arg(&bi).arg(&di).arg(&mut rows);
            // SAFETY: as in `feature_distill_fwd`.
            unsafe { l.launch(cfg) }.map_err(driver(op))?;
            Ok(())
        })?;
        out.push(("feature_distill_fwd", t, fl * 2.0 * (b * d) as f64));
        Ok(out)
    }
}
