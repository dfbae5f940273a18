//! Convolution and batch-normalisation layers.

use lucir_autograd::{Param, Tape, Var};
use lucir_tensor::{BatchNormStats, Conv2dGeometry, Float, Tensor};

use crate::{Init, Module, Result};

/// Whether a forward pass trains (batch statistics, running-statistics update) or evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: BatchNorm uses and records batch statistics.
    Train,
    /// Evaluation: BatchNorm uses its running statistics.
    Eval,
}

/// A bias-free 2-D convolution, weight Co×Ci×KH×KW.
#[derive(Clone, Debug)]
pub struct Conv2d<T: Float> {
    /// The kernel.
    pub weight: Param<T>,
    /// Stride and padding.
    pub geometry: Conv2dGeometry,
}

impl<T: Float> Conv2d<T> {
    /// A square `k×k` convolution with Kaiming-normal (fan-out) weights.
    pub fn new(init: &mut Init, ci: usize, co: usize, k: usize, stride: usize, pad: usize) -> Self {
        Self {
            weight: Param::new(init.kaiming_conv([co, ci, k, k])),
            geometry: Conv2dGeometry { stride, pad },
        }
    }

    /// Output side and multiply-add FLOPs (2 per MAC) of this convolution on an `h`×`w` input.
    pub fn flops(&self, h: usize, w: usize) -> (usize, usize, u64) {
        let s = self.weight.value.shape();
        let (co, ci, kh, kw) = (s[0], s[1], s[2], s[3]);
        let g = self.geometry;
        let ho = (h + 2 * g.pad).saturating_sub(kh) / g.stride + 1;
        let wo = (w + 2 * g.pad).saturating_sub(kw) / g.stride + 1;
        (ho, wo, 2 * (co * ci * kh * kw * ho * wo) as u64)
    }

    /// Records the convolution of `x`.
    pub fn forward(&self, tape: &mut Tape<T>, x: Var) -> Result<Var> {
        let w = tape.param(&self.weight);
        Ok(tape.conv2d(x, w, self.geometry)?)
    }
}

impl<T: Float> Module<T> for Conv2d<T> {
    fn params(&self) -> Vec<(String, &Param<T>)> {
        vec![("weight".into(), &self.weight)]
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param<T>)> {
        vec![("weight".into(), &mut self.weight)]
    }
}

/// Batch normalisation over N, H, W with learnable γ, β and running statistics
/// (momentum 0.1, ε 1e-5; the running variance is the unbiased batch variance, as in PyTorch).
#[derive(Clone, Debug)]
pub struct BatchNorm2d<T: Float> {
    /// Scale γ, initialised to 1.
    pub gamma: Param<T>,
    /// Shift β, initialised to 0.
    pub beta: Param<T>,
    /// Running mean, initialised to 0.
    pub running_mean: Tensor<T>,
    /// Running variance, initialised to 1.
    pub running_var: Tensor<T>,
    /// Weight of the newest batch in the running statistics.
    pub momentum: f64,
    /// Added to the variance.
    pub eps: f64,
}

impl<T: Float> BatchNorm2d<T> {
    /// A batch norm over `c` channels.
    pub fn new(c: usize) -> Self {
        Self {
            gamma: Param::new(Tensor::full(&[c], T::one())),
            beta: Param::new(Tensor::zeros(&[c])),
            running_mean: Tensor::zeros(&[c]),
            running_var: Tensor::full(&[c], T::one()),
            momentum: 0.1,
            eps: 1e-5,
        }
    }

    /// Records the normalisation of `x` (followed by a fused ReLU when `relu`); in training mode
    /// also updates the running statistics.
    pub fn forward(&mut self, tape: &mut Tape<T>, x: Var, mode: Mode, relu: bool) -> Result<Var> {
        let gamma = tape.param(&self.gamma);
        let beta = tape.param(&self.beta);
        let eps = T::of(self.eps);
        match mode {
            Mode::Train => {
                let out = tape.batch_norm_train(x, gamma, beta, eps, relu)?;
                self.update_running(&out.stats)?;
                Ok(out.y)
            }
            Mode::Eval => Ok(tape.batch_norm_eval(
                x,
                gamma,
                beta,
                (&self.running_mean, &self.running_var),
                eps,
                relu,
            )?),
        }
    }

    /// [`BatchNorm2d::forward`] followed by `conv`, as one node that never stores the
    /// normalised tensor (the convolution reads `x` through the batch norm); the same values.
    pub fn forward_conv(
        &mut self,
        tape: &mut Tape<T>,
        x: Var,
        mode: Mode,
        relu: bool,
        conv: &Conv2d<T>,
    ) -> Result<Var> {
        let bn = [x, tape.param(&self.gamma), tape.param(&self.beta)];
        let w = tape.param(&conv.weight);
        let eps = T::of(self.eps);
        match mode {
            Mode::Train => {
                let out = tape.batch_norm_train_conv2d(bn, eps, relu, w, conv.geometry)?;
                self.update_running(&out.stats)?;
                Ok(out.y)
            }
            Mode::Eval => Ok(tape.batch_norm_eval_conv2d(
                bn,
                (&self.running_mean, &self.running_var),
                eps,
                relu,
                w,
                conv.geometry,
            )?),
        }
    }

    /// [`BatchNorm2d::forward`] plus the residual `r`, then a ReLU when `relu`, as one node
    /// (the end of a residual block); the same values as the batch norm then the add.
    pub fn forward_add(
        &mut self,
        tape: &mut Tape<T>,
        x: Var,
        mode: Mode,
        r: Var,
        relu: bool,
    ) -> Result<Var> {
        let bn = [x, tape.param(&self.gamma), tape.param(&self.beta)];
        let eps = T::of(self.eps);
        match mode {
            Mode::Train => {
                let out = tape.batch_norm_train_add(bn, eps, r, relu)?;
                self.update_running(&out.stats)?;
                Ok(out.y)
            }
            Mode::Eval => Ok(tape.batch_norm_eval_add(
                bn,
                (&self.running_mean, &self.running_var),
                eps,
                r,
                relu,
            )?),
        }
    }

    /// Moves the running statistics towards a training batch's.
    fn update_running(&mut self, stats: &BatchNormStats<T>) -> Result<()> {
        let running = (&mut self.running_mean, &mut self.running_var);
        Ok(lucir_tensor::batch_norm_update_running(
            running,
            stats,
            self.momentum,
        )?)
    }
}

impl<T: Float> Module<T> for BatchNorm2d<T> {
    fn params(&self) -> Vec<(String, &Param<T>)> {
        vec![("gamma".into(), &self.gamma), ("beta".into(), &self.beta)]
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param<T>)> {
        vec![
            ("gamma".into(), &mut self.gamma),
            ("beta".into(), &mut self.beta),
        ]
    }
    fn buffers(&self) -> Vec<(String, &Tensor<T>)> {
        vec![
            ("running_mean".into(), &self.running_mean),
            ("running_var".into(), &self.running_var),
        ]
    }
    fn buffers_mut(&mut self) -> Vec<(String, &mut Tensor<T>)> {
        vec![
            ("running_mean".into(), &mut self.running_mean),
            ("running_var".into(), &mut self.running_var),
        ]
    }
}
