//! Batch norm (training or evaluation mode, with or without the ReLU after it) followed by a
//! convolution, as one node: `conv2d(BN(x), w)` without storing `BN(x)`. The convolution reads
//! `x` through the batch norm's per-channel map (lucir-tensor's `conv2d_mapped`) and its
//! backward pass recomputes it the same way; the values are those of [`Tape::batch_norm_train`]
//! (or [`Tape::batch_norm_eval`]) followed by [`Tape::conv2d`], bit for bit.

use lucir_tensor::{BatchNormStats, ChannelMap, Conv2dGeometry, Float};

use super::batch_norm::{vector, BatchNormTrainOut};
use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

/// The statistics the batch norm normalises with.
enum Stats<T> {
    /// Training mode: the batch's.
    Batch(BatchNormStats<T>),
    /// Evaluation mode: running mean and variance, and ε.
    Running { mean: Vec<T>, var: Vec<T>, eps: T },
}

struct Back<T> {
    x: Var,
    gamma: Var,
    beta: Var,
    w: Var,
    geometry: Conv2dGeometry,
    relu: bool,
    stats: Stats<T>,
}

/// Checks that γ, β (and the running statistics) have one entry per channel of `x`.
fn check_channels<T: Float>(
    op: &'static str,
    x: &lucir_tensor::Tensor<T>,
    vs: &[&[T]],
) -> Result<()> {
    let c = x.dims4(op)?[1];
    match vs.iter().find(|v| v.len() != c) {
        Some(v) => Err(Error::invalid(
            op,
            format!(
                "{c} channels in x {:?} but a per-channel vector has {}",
                x.shape(),
                v.len()
            ),
        )),
        None => Ok(()),
    }
}

impl<T: Float> Tape<T> {
    /// Training-mode batch norm of `x` (then a ReLU when `relu`) convolved with `w`: the
    /// output of the convolution, and the batch statistics.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_train_conv2d(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        eps: T,
        relu: bool,
        w: Var,
        geometry: Conv2dGeometry,
    ) -> Result<BatchNormTrainOut<T>> {
        let op = "batch_norm_train_conv2d";
        let (gv, bv) = (self.value(gamma).as_slice(), self.value(beta).as_slice());
        check_channels(op, self.value(x), &[gv, bv])?;
        let stats = lucir_tensor::batch_norm_stats(self.value(x), eps)?;
        let map = ChannelMap::train(gv, bv, &stats, relu);
        let y = lucir_tensor::conv2d_mapped(self.value(x), &map, self.value(w), geometry)?;
        let back = Back {
            x,
            gamma,
            beta,
            w,
            geometry,
            relu,
            stats: Stats::Batch(stats.clone()),
        };
        let y = self.push(y, &[x, gamma, beta, w], back);
        Ok(BatchNormTrainOut { y, stats })
    }

    /// Evaluation-mode batch norm of `x` with the given running statistics (then a ReLU when
    /// `relu`) convolved with `w`.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_eval_conv2d(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        (running_mean, running_var): (&[T], &[T]),
        eps: T,
        relu: bool,
        w: Var,
        geometry: Conv2dGeometry,
    ) -> Result<Var> {
        let op = "batch_norm_eval_conv2d";
        let (gv, bv) = (self.value(gamma).as_slice(), self.value(beta).as_slice());
        check_channels(op, self.value(x), &[gv, bv, running_mean, running_var])?;
        let map = ChannelMap::eval(gv, bv, (running_mean, running_var), eps, relu);
        let y = lucir_tensor::conv2d_mapped(self.value(x), &map, self.value(w), geometry)?;
        let back = Back {
            x,
            gamma,
            beta,
            w,
            geometry,
            relu,
            stats: Stats::Running {
                mean: running_mean.to_vec(),
                var: running_var.to_vec(),
                eps,
            },
        };
        Ok(self.push(y, &[x, gamma, beta, w], back))
    }
}

impl<T: Float> Backward<T> for Back<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let (x, w, g) = (ctx.value(self.x), ctx.value(self.w), ctx.g());
        let (gamma, beta) = (
            ctx.value(self.gamma).as_slice(),
            ctx.value(self.beta).as_slice(),
        );
        let map = match &self.stats {
            Stats::Batch(stats) => ChannelMap::train(gamma, beta, stats, self.relu),
            Stats::Running { mean, var, eps } => {
                ChannelMap::eval(gamma, beta, (mean, var), *eps, self.relu)
            }
        };
        // The gradient with respect to BN(x), then through the batch norm (its ReLU mask
        // recomputed from x).
        let (dbn, dw) = lucir_tensor::conv2d_mapped_bwd(x, &map, w, g, self.geometry)?;
        let (dx, dg, db) = match &self.stats {
            Stats::Batch(stats) => {
                lucir_tensor::batch_norm_train_bwd(x, gamma, beta, stats, &dbn, self.relu)?
            }
            Stats::Running { mean, var, eps } => {
                lucir_tensor::batch_norm_eval_bwd(x, gamma, beta, mean, var, *eps, &dbn, self.relu)?
            }
        };
        ctx.add(self.x, dx)?;
        ctx.add(self.gamma, vector(dg)?)?;
        ctx.add(self.beta, vector(db)?)?;
        ctx.add(self.w, dw)
    }
}
