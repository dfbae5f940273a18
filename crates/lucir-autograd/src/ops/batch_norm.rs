//! Batch normalisation, training mode (batch statistics) and evaluation mode (running
//! statistics), optionally fused with the ReLU that follows it; x is N×C×H×W, γ and β are C.

use lucir_tensor::{BatchNormStats, Float, Tensor};

use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

/// Output of a training-mode batch norm: the node and the batch statistics (for the layer's
/// running-statistics update).
#[derive(Debug)]
pub struct BatchNormTrainOut<T> {
    /// The normalised output.
    pub y: Var,
    /// Batch mean, biased variance and element count per channel.
    pub stats: BatchNormStats<T>,
}

struct TrainBack<T> {
    x: Var,
    gamma: Var,
    beta: Var,
    /// Whether a ReLU is fused (the gradient is masked where the output was zero).
    relu: bool,
    stats: BatchNormStats<T>,
}

struct EvalBack<T> {
    x: Var,
    gamma: Var,
    beta: Var,
    relu: bool,
    running_mean: Vec<T>,
    running_var: Vec<T>,
    eps: T,
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
            self.value(gamma).as_slice(),
            self.value(beta).as_slice(),
            eps,
            relu,
        )?;
        let back = TrainBack {
            x,
            gamma,
            beta,
            relu,
            stats: stats.clone(),
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
        (running_mean, running_var): (&[T], &[T]),
        eps: T,
        relu: bool,
    ) -> Result<Var> {
        let y = lucir_tensor::batch_norm_eval(
            self.value(x),
            self.value(gamma).as_slice(),
            self.value(beta).as_slice(),
            running_mean,
            running_var,
            eps,
            relu,
        )?;
        let back = EvalBack {
            x,
            gamma,
            beta,
            relu,
            running_mean: running_mean.to_vec(),
            running_var: running_var.to_vec(),
            eps,
        };
        Ok(self.push(y, &[x, gamma, beta], back))
    }
}

/// A per-channel gradient as a tensor.
pub(crate) fn vector<T: Float>(v: Vec<T>) -> Result<Tensor<T>> {
    Ok(Tensor::from_vec(&[v.len()], v)?)
}

impl<T: Float> Backward<T> for TrainBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let (dx, dg, db) = lucir_tensor::batch_norm_train_bwd(
            ctx.value(self.x),
            ctx.value(self.gamma).as_slice(),
            ctx.value(self.beta).as_slice(),
            &self.stats,
            ctx.g(),
            self.relu,
        )?;
        ctx.add(self.x, dx)?;
        ctx.add(self.gamma, vector(dg)?)?;
        ctx.add(self.beta, vector(db)?)
    }
}

impl<T: Float> Backward<T> for EvalBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let (dx, dg, db) = lucir_tensor::batch_norm_eval_bwd(
            ctx.value(self.x),
            ctx.value(self.gamma).as_slice(),
            ctx.value(self.beta).as_slice(),
            &self.running_mean,
            &self.running_var,
            self.eps,
            ctx.g(),
            self.relu,
        )?;
        ctx.add(self.x, dx)?;
        ctx.add(self.gamma, vector(dg)?)?;
        ctx.add(self.beta, vector(db)?)
    }
}
