//! Batch norm (training or evaluation mode, with or without the ReLU after it) followed by a
//! convolution, as one node: `conv2d(BN(x), w)` without storing `BN(x)`. The convolution reads
//! `x` through the batch norm's per-channel map (lucir-tensor's `conv2d_mapped`) and its
//! backward pass recomputes it the same way; the values are those of [`Tape::batch_norm_train`]
//! (or [`Tape::batch_norm_eval`]) followed by [`Tape::conv2d`], bit for bit. The fusion is the
//! CPU convolutions'; on a CUDA device these record the two nodes instead.

use lucir_tensor::{ChannelMap, Conv2dGeometry, Float, Tensor};

use super::batch_norm::{check_channels, BatchNormTrainOut, Stats};
use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct Back<T> {
    /// x, γ, β.
    bn: [Var; 3],
    w: Var,
    geometry: Conv2dGeometry,
    relu: bool,
    stats: Stats<T>,
}

impl<T: Float> Tape<T> {
    /// Training-mode batch norm of `x` (γ, β; then a ReLU when `relu`) convolved with `w`:
    /// the output of the convolution, and the batch statistics.
    pub fn batch_norm_train_conv2d(
        &mut self,
        [x, gamma, beta]: [Var; 3],
        eps: T,
        relu: bool,
        w: Var,
        geometry: Conv2dGeometry,
    ) -> Result<BatchNormTrainOut<T>> {
        if !self.value(x).is_cpu() {
            let out = self.batch_norm_train(x, gamma, beta, eps, relu)?;
            let y = self.conv2d(out.y, w, geometry)?;
            return Ok(BatchNormTrainOut {
                y,
                stats: out.stats,
            });
        }
        let op = "batch_norm_train_conv2d";
        let (gv, bv) = (self.value(gamma).as_slice(), self.value(beta).as_slice());
        check_channels(op, self.value(x), &[gv, bv])?;
        let stats = lucir_tensor::batch_norm_stats(self.value(x), eps)?;
        let map = ChannelMap::train(gv, bv, &stats, relu);
        let y = lucir_tensor::conv2d_mapped(self.value(x), &map, self.value(w), geometry)?;
        let back = Back {
            bn: [x, gamma, beta],
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
    pub fn batch_norm_eval_conv2d(
        &mut self,
        [x, gamma, beta]: [Var; 3],
        (running_mean, running_var): (&Tensor<T>, &Tensor<T>),
        eps: T,
        relu: bool,
        w: Var,
        geometry: Conv2dGeometry,
    ) -> Result<Var> {
        if !self.value(x).is_cpu() {
            let y = self.batch_norm_eval(x, gamma, beta, (running_mean, running_var), eps, relu)?;
            return self.conv2d(y, w, geometry);
        }
        let op = "batch_norm_eval_conv2d";
        let (gv, bv) = (self.value(gamma).as_slice(), self.value(beta).as_slice());
        let (mean, var) = (running_mean.as_slice(), running_var.as_slice());
        check_channels(op, self.value(x), &[gv, bv, mean, var])?;
        let map = ChannelMap::eval(gv, bv, (mean, var), eps, relu);
        let y = lucir_tensor::conv2d_mapped(self.value(x), &map, self.value(w), geometry)?;
        let back = Back {
            bn: [x, gamma, beta],
            w,
            geometry,
            relu,
            stats: Stats::running((running_mean, running_var), eps),
        };
        Ok(self.push(y, &[x, gamma, beta, w], back))
    }
}

impl<T: Float> Backward<T> for Back<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let [x, gamma, beta] = self.bn;
        let map = self.stats.map(
            ctx.value(gamma).as_slice(),
            ctx.value(beta).as_slice(),
            self.relu,
        );
        // The gradient with respect to BN(x), then through the batch norm (its ReLU mask
        // recomputed from x).
        let (x_val, w_val) = (ctx.value(x), ctx.value(self.w));
        let (dbn, dw) =
            lucir_tensor::conv2d_mapped_bwd(x_val, &map, w_val, ctx.g(), self.geometry)?;
        ctx.add(self.w, dw)?;
        self.stats.backward(ctx, self.bn, &dbn, self.relu)
    }
}
