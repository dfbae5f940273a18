//! Margin ranking on the device (docs/design.md §3 "Losses", §5): for each old-class row, the
//! hinge `max(0, m − cos⁺ + cos_k)` over its K hardest new classes, averaged over the pairs —
//! the launchers of `kernels/margin_rank.cu`. The forward keeps the cosines and labels on the
//! device in [`MarginRank`] for the backward pass.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use crate::device::{driver, grid, i32_of, load};
use crate::kernels::{MARGIN_RANK, MAX_K, MR_ROWS};
use crate::{check_len, Error, Gpu, Result};

/// The module's functions, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    fwd: CudaFunction,
    bwd: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [fwd, bwd] = load(ctx, &MARGIN_RANK)?;
        Ok(Self { fwd, bwd })
    }
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

impl Gpu {
    /// Launches the forward (`scale` = None: per-row hinge sums into `out`, B floats) or the
    /// backward (∂cos·scale into `out`, B×C floats).
    fn margin_rank_launch(
        &self,
        (cos, labels): (&CudaSlice<f32>, &CudaSlice<i32>),
        [b, c]: [usize; 2],
        args: MarginRankArgs,
        scale: Option<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (func, op) = match scale {
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
        if let Some(s) = &scale {
            l.arg(s);
        }
        l.arg(out);
        // SAFETY: cos is B×C floats, labels B ints (< C, checked), `out` B (forward) or B×C
        // (backward) floats, each row's written in full by its warp; K ≤ MAX_K (checked) as
        // the kernel's K-slot arrays require.
        unsafe { l.launch(cfg) }.map_err(driver(op))?;
        Ok(())
    }

    /// Margin-ranking loss of cosines `cos` (B×C) with `labels` (B).
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
        if pairs > 0 {
            let mut rows = self.output::<f32>(b)?;
            let inputs = (&saved.cos, &saved.labels);
            self.margin_rank_launch(inputs, [b, c], args, None, &mut rows)?;
            let total = self.sum(&rows, b)?;
            saved.loss = (total / pairs as f64) as f32;
        }
        Ok(saved)
    }

    /// ∂L/∂cos (B×C) of a forward pass, times the upstream gradient `g`.
    pub fn margin_rank_bwd(&self, fwd: &MarginRank, g: f32) -> Result<Vec<f32>> {
        let [b, c] = fwd.dims;
        if fwd.pairs == 0 {
            return Ok(vec![0.0; b * c]);
        }
        let mut dcos = self.output::<f32>(b * c)?;
        let scale = g / fwd.pairs as f32;
        let inputs = (&fwd.cos, &fwd.labels);
        self.margin_rank_launch(inputs, [b, c], fwd.args, Some(scale), &mut dcos)?;
        self.download(&dcos, b * c)
    }
}
