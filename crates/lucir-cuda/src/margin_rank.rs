//! Margin ranking on the device (docs/design.md §3 "Losses", §5): for each old-class row, the
//! hinge `max(0, m − cos⁺ + cos_k)` over its K hardest new classes, averaged over the pairs —
//! the launchers of `kernels/margin_rank.cu`. The forward keeps the cosines and labels on the
//! device in [`MarginRank`] for the backward pass.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, LaunchConfig, PushKernelArg};

use crate::device::{driver, grid, i32_of};
use crate::kernels::{MARGIN_RANK, MAX_K, MR_ROWS};
use crate::{check_len, Error, Gpu, Result};

/// The module's two functions, resolved once when the device is opened.
pub(crate) type Kernels = crate::device::FwdBwd;

/// Loads them.
pub(crate) fn kernels(ctx: &Arc<CudaContext>) -> Result<Kernels> {
    Kernels::load(ctx, &MARGIN_RANK)
}

/// The loss's settings: the first `n_old` columns are old classes, the hardest `k` new classes
/// of each old-class row are its negatives, `margin` is m.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MarginRankArgs {
    /// Old classes (the first columns).
    pub n_old: usize,
    /// Hard negatives per row (clamped to the number of new classes).
    pub k: usize,
    /// Margin m.
    pub margin: f32,
}

/// A forward pass, kept on the device for the backward pass.
#[derive(Debug)]
pub struct MarginRank {
    dims: [usize; 2],
    args: MarginRankArgs,
    pairs: usize,
    cos: CudaSlice<f32>,
    labels: CudaSlice<i32>,
    /// The loss: mean hinge over (old-class row, hard negative) pairs; 0 without pairs.
    pub loss: f32,
}

/// `args` with K clamped to the new classes, or the error of an impossible request.
fn checked(op: &'static str, args: MarginRankArgs, c: usize) -> Result<MarginRankArgs> {
    if args.n_old > c {
        return Err(Error::Shape {
            op,
            detail: format!("n_old {} exceeds the {c} classes", args.n_old),
        });
    }
    let args = MarginRankArgs {
        k: args.k.min(c - args.n_old),
        ..args
    };
    if args.k > MAX_K {
        return Err(Error::Shape {
            op,
            detail: format!("K {} exceeds the kernel's {MAX_K}", args.k),
        });
    }
    Ok(args)
}

impl Gpu {
    /// Launches the forward (`bwd` = None: per-row loss sums into `out`, B floats) or, with
    /// the upstream gradient `g` (one float on the device) and the pair count P, the backward
    /// (∂cos into `out`, B×C floats).
    fn margin_rank_launch(
        &self,
        (cos, labels): (&CudaSlice<f32>, &CudaSlice<i32>),
        [b, c]: [usize; 2],
        args: MarginRankArgs,
        bwd: Option<(&CudaSlice<f32>, f32)>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (func, op) = match bwd {
            Some(_) => (&self.margin_rank.bwd, "margin_rank_bwd"),
            None => (&self.margin_rank.fwd, "margin_rank_fwd"),
        };
        let (bi, ci) = (i32_of(op, b)?, i32_of(op, c)?);
        let (oi, ki) = (i32_of(op, args.n_old)?, i32_of(op, args.k)?);
        let cfg = LaunchConfig {
            grid_dim: (grid(b, MR_ROWS), 1, 1),
            block_dim: (32 * MR_ROWS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(func);
        l.arg(cos).arg(labels).arg(&bi).arg(&ci).arg(&oi).arg(&ki);
        l.arg(&args.margin);
        if let Some((g, pairs)) = &bwd {
            l.arg(*g).arg(pairs);
        }
        l.arg(out);
        // SAFETY: cos is B×C floats, labels B ints (< C: the callers check), `out` B (forward)
        // or B×C (backward) floats, each row's written in full by its warp; K ≤ MAX_K
        // (checked) as the kernel's K-slot arrays require; g (backward) one float.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        Ok(())
    }

    /// The margin-ranking loss of device cosines `cos` (B×C) with device `labels` (B, each
    /// below C) over `pairs` = (old-class rows)·K pairs, as one float on the device.
    pub fn margin_rank_loss(
        &self,
        (cos, labels): (&CudaSlice<f32>, &CudaSlice<i32>),
        args: MarginRankArgs,
        pairs: usize,
        [b, c]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "margin_rank_loss";
        check_len(op, "cos", cos.len().min(b * c), b, c)?;
        check_len(op, "labels", labels.len().min(b), b, 1)?;
        let args = checked(op, args, c)?;
        if pairs == 0 {
            return self.zeros::<f32>(1);
        }
        let mut rows = self.output::<f32>(b)?;
        self.margin_rank_launch((cos, labels), [b, c], args, None, &mut rows)?;
        self.sum_scaled(&rows, b, (1.0, pairs as f32))
    }

    /// ∂L/∂cos (B×C) of [`Gpu::margin_rank_loss`], times the upstream gradient `g` (one float
    /// on the device).
    pub fn margin_rank_grad(
        &self,
        (cos, labels): (&CudaSlice<f32>, &CudaSlice<i32>),
        args: MarginRankArgs,
        (pairs, g): (usize, &CudaSlice<f32>),
        [b, c]: [usize; 2],
    ) -> Result<CudaSlice<f32>> {
        let op = "margin_rank_grad";
        check_len(op, "cos", cos.len().min(b * c), b, c)?;
        check_len(op, "labels", labels.len().min(b), b, 1)?;
        let args = checked(op, args, c)?;
        if pairs == 0 {
            return self.zeros::<f32>(b * c);
        }
        let mut dcos = self.output::<f32>(b * c)?;
        let bwd = Some((g, pairs as f32));
        self.margin_rank_launch((cos, labels), [b, c], args, bwd, &mut dcos)?;
        Ok(dcos)
    }

    /// Margin-ranking loss of host cosines `cos` (B×C) with `labels` (B), kept on the device
    /// for [`Gpu::margin_rank_bwd`].
    pub fn margin_rank_fwd(
        &self,
        cos: &[f32],
        labels: &[usize],
        args: MarginRankArgs,
        [b, c]: [usize; 2],
    ) -> Result<MarginRank> {
        let op = "margin_rank_fwd";
        check_len(op, "cos", cos.len(), b, c)?;
        check_len(op, "labels", labels.len(), b, 1)?;
        let args = checked(op, args, c)?;
        let labels_i32 = labels
            .iter()
            .map(|&l| {
                if l >= c {
                    Err(Error::Shape {
                        op,
                        detail: format!("label {l} is not a class (there are {c})"),
                    })
                } else {
                    i32_of(op, l)
                }
            })
            .collect::<Result<Vec<i32>>>()?;
        let pairs = labels.iter().filter(|&&l| l < args.n_old).count() * args.k;
        let mut saved = MarginRank {
            dims: [b, c],
            args,
            pairs,
            cos: self.upload(cos)?,
            labels: self.upload(&labels_i32)?,
            loss: 0.0,
        };
        let loss = self.margin_rank_loss((&saved.cos, &saved.labels), args, pairs, [b, c])?;
        saved.loss = self.download(&loss, 1)?[0];
        Ok(saved)
    }

    /// ∂L/∂cos (B×C) of a forward pass, times the upstream gradient `g`, in host memory.
    pub fn margin_rank_bwd(&self, fwd: &MarginRank, g: f32) -> Result<Vec<f32>> {
        let [b, c] = fwd.dims;
        let g = self.upload(&[g])?;
        let inputs = (&fwd.cos, &fwd.labels);
        let dcos = self.margin_rank_grad(inputs, fwd.args, (fwd.pairs, &g), fwd.dims)?;
        self.download(&dcos, b * c)
    }
}
