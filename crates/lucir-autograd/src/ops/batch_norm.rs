//! Batch normalisation, training mode (batch statistics) and evaluation mode (running
//! statistics), optionally fused with the ReLU that follows it; x is N×C×H×W, γ and β are C.
//! [`Stats`] is what the backward pass of every batch-norm node needs (this one, and the
//! fused nodes of `batch_norm_conv2d` and `batch_norm_add`).

use lucir_tensor::{BatchNormStats, ChannelMap, Float, Tensor};

use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

/// Output of a training-mode batch norm: the node and the batch statistics (for the layer's
/// running-statistics update).
#[derive(Debug)]
pub struct BatchNormTrainOut<T> {
    /// The normalised output.
    pub y: Var,
    /// Batch mean, biased variance and element count per channel.
    pub stats: BatchNormStats<T>,
}

/// The statistics a batch norm normalises with.
pub(crate) enum Stats<T> {
    /// Training mode: the batch's.
    Batch(BatchNormStats<T>),
    /// Evaluation mode: running mean and variance (constants), and ε.
    Running {
        mean: Tensor<T>,
        var: Tensor<T>,
        eps: T,
    },
}

impl<T: Float> Stats<T> {
    pub(crate) fn running((mean, var): (&Tensor<T>, &Tensor<T>), eps: T) -> Self {
        Self::Running {
            mean: mean.clone(),
            var: var.clone(),
            eps,
        }
    }

    /// The batch norm (then a ReLU if `relu`) as a per-channel map (CPU tensors: the map is
    /// what the CPU convolutions fuse).
    pub(crate) fn map(&self, gamma: &[T], beta: &[T], relu: bool) -> ChannelMap<T> {
        match self {
            Self::Batch(stats) => ChannelMap::train(gamma, beta, stats, relu),
            Self::Running { mean, var, eps } => {
                ChannelMap::eval(gamma, beta, (mean.as_slice(), var.as_slice()), *eps, relu)
            }
        }
    }

    /// The backward pass of the batch norm of `bn.x` (then a ReLU if `relu`) given `dy`, the
    /// gradient with respect to its output: adds the gradients of x, γ and β.
    pub(crate) fn backward(
        &self,
        ctx: &mut BackwardCtx<'_, T>,
        bn: [Var; 3],
        dy: &Tensor<T>,
        relu: bool,
    ) -> Result<()> {
        let [x, gamma, beta] = bn;
        let (xv, gv, bv) = (ctx.value(x), ctx.value(gamma), ctx.value(beta));
        let (dx, dg, db) = match self {
            Self::Batch(stats) => lucir_tensor::batch_norm_train_bwd(xv, gv, bv, stats, dy, relu)?,
            Self::Running { mean, var, eps } => {
                lucir_tensor::batch_norm_eval_bwd(xv, [gv, bv], (mean, var), *eps, dy, relu)?
            }
        };
        ctx.add(x, dx)?;
        ctx.add(gamma, dg)?;
        ctx.add(beta, db)
    }
}

struct Back<T> {
    /// x, γ, β.
    bn: [Var; 3],
    /// Whether a ReLU is fused (the gradient is masked where the output was zero).
    relu: bool,
    stats: Stats<T>,
}

impl<T: Float> Tape<T> {
    /// Training-mode batch norm with batch statistics, followed by a ReLU when `relu`.
    pub fn batch_norm_train(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        eps: T,
        relu: bool,
    ) -> Result<BatchNormTrainOut<T>> {
        let (y, stats) = lucir_tensor::batch_norm_train(
            self.value(x),
            self.value(gamma),
            self.value(beta),
            eps,
            relu,
        )?;
        let back = Back {
            bn: [x, gamma, beta],
            relu,
            stats: Stats::Batch(stats.clone()),
        };
        let y = self.push(y, &[x, gamma, beta], back);
        Ok(BatchNormTrainOut { y, stats })
    }

    /// Evaluation-mode batch norm with the given running statistics (constants), followed by a
    /// ReLU when `relu`.
    pub fn batch_norm_eval(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        running: (&Tensor<T>, &Tensor<T>),
        eps: T,
        relu: bool,
    ) -> Result<Var> {
        let y = lucir_tensor::batch_norm_eval(
            self.value(x),
            self.value(gamma),
            self.value(beta),
            running,
            eps,
            relu,
        )?;
        let back = Back {
            bn: [x, gamma, beta],
            relu,
            stats: Stats::running(running, eps),
        };
        Ok(self.push(y, &[x, gamma, beta], back))
    }
}

/// Checks that γ, β (and the running statistics) have one entry per channel of `x`.
pub(crate) fn check_channels<T: Float>(op: &'static str, x: &Tensor<T>, vs: &[&[T]]) -> Result<()> {
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

impl<T: Float> Backward<T> for Back<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let g = ctx.take_g();
        self.stats.backward(ctx, self.bn, &g, self.relu)
    }
}
