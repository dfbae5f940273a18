//! Batch norm (training or evaluation mode) plus a residual, then a ReLU or not, as one node:
//! `max(BN(x) + r, 0)`, the end of a residual block, in the pass that writes the output.
//! The backward pass masks the output gradient once and hands the same tensor to the batch
//! norm and to `r`. The values are those of [`Tape::batch_norm_train`] (or
//! [`Tape::batch_norm_eval`]) followed by [`Tape::add_relu`] (or [`Tape::add`]), bit for bit.

use lucir_tensor::{Float, Tensor};

use super::batch_norm::{BatchNormTrainOut, Stats};
use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct Back<T> {
    /// x, γ, β.
    bn: [Var; 3],
    r: Var,
    /// This node's output (the ReLU's mask).
    y: Var,
    relu: bool,
    stats: Stats<T>,
}

impl<T: Float> Tape<T> {
    /// Training-mode batch norm of `x` plus `r`, then a ReLU when `relu`; the output and the
    /// batch statistics.
    pub fn batch_norm_train_add(
        &mut self,
        [x, gamma, beta]: [Var; 3],
        eps: T,
        r: Var,
        relu: bool,
    ) -> Result<BatchNormTrainOut<T>> {
        let (y, stats) = lucir_tensor::batch_norm_train_add(
            self.value(x),
            self.value(gamma),
            self.value(beta),
            eps,
            self.value(r),
            relu,
        )?;
        let stats_out = stats.clone();
        let y = self.push_add(y, [x, gamma, beta], r, relu, Stats::Batch(stats));
        Ok(BatchNormTrainOut {
            y,
            stats: stats_out,
        })
    }

    /// Evaluation-mode batch norm of `x` with the given running statistics plus `r`, then a
    /// ReLU when `relu`.
    pub fn batch_norm_eval_add(
        &mut self,
        [x, gamma, beta]: [Var; 3],
        running: (&Tensor<T>, &Tensor<T>),
        eps: T,
        r: Var,
        relu: bool,
    ) -> Result<Var> {
        let y = lucir_tensor::batch_norm_eval_add(
            self.value(x),
            [self.value(gamma), self.value(beta)],
            running,
            eps,
            Some(self.value(r)),
            relu,
        )?;
        Ok(self.push_add(y, [x, gamma, beta], r, relu, Stats::running(running, eps)))
    }

    fn push_add(
        &mut self,
        y: lucir_tensor::Tensor<T>,
        bn: [Var; 3],
        r: Var,
        relu: bool,
        stats: Stats<T>,
    ) -> Var {
        let out = Var(self.len());
        let back = Back {
            bn,
            r,
            y: out,
            relu,
            stats,
        };
        self.push(y, &[bn[0], bn[1], bn[2], r], back)
    }
}

impl<T: Float> Backward<T> for Back<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let mut g = ctx.take_g();
        if self.relu {
            g = lucir_tensor::relu_bwd(ctx.value(self.y), g)?;
        }
        // The batch norm's own ReLU is off: the mask above is the block's.
        self.stats.backward(ctx, self.bn, &g, false)?;
        ctx.add(self.r, g)
    }
}
