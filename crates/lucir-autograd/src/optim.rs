//! SGD with momentum, weight decay and parameter groups, and the multi-step learning-rate
//! schedule (docs/design.md §3 "Optimisation").

use std::collections::HashMap;

use lucir_tensor::{sgd_update_many, Float, SgdHyper, SgdTarget, Tensor};

use crate::{Error, Param, ParamId, Result, Tape};

/// Parameters that share a learning rate and weight decay. A group with `lr = 0` is frozen:
/// neither decay nor momentum touches it.
#[derive(Debug)]
pub struct ParamGroup<'a, T> {
    /// Learning rate.
    pub lr: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// The parameters.
    pub params: Vec<&'a mut Param<T>>,
}

impl<'a, T> ParamGroup<'a, T> {
    /// One group of named parameters (as layers list them; the names are dropped).
    pub fn named(
        lr: f64,
        weight_decay: f64,
        params: impl IntoIterator<Item = (String, &'a mut Param<T>)>,
    ) -> Self {
        Self {
            lr,
            weight_decay,
            params: params.into_iter().map(|(_, p)| p).collect(),
        }
    }
}

/// SGD with (PyTorch-convention) momentum: `d = g + wd·p; v = μ·v + d; p -= lr·v`, with
/// `v = d` on a parameter's first step.
#[derive(Debug)]
pub struct Sgd<T> {
    momentum: f64,
    velocity: HashMap<ParamId, Tensor<T>>,
}

impl<T: Float> Sgd<T> {
    /// SGD with momentum `momentum` (0.9 in LUCIR).
    pub fn new(momentum: f64) -> Self {
        Self {
            momentum,
            velocity: HashMap::new(),
        }
    }

    /// One update of every parameter in `groups` from its gradient on `tape`. Parameters without
    /// a gradient (unused in this step) are left alone.
    pub fn step(&mut self, tape: &Tape<T>, groups: &mut [ParamGroup<'_, T>]) -> Result<()> {
        for group in groups.iter_mut() {
            if !(group.lr.is_finite() && group.lr >= 0.0 && group.weight_decay >= 0.0) {
                return Err(Error::invalid(
                    "Sgd::step",
                    format!(
                        "lr {} and weight decay {} must be finite and non-negative",
                        group.lr, group.weight_decay
                    ),
                ));
            }
            if group.lr == 0.0 {
                continue;
            }
            let hyper = SgdHyper {
                lr: group.lr,
                weight_decay: group.weight_decay,
                momentum: self.momentum,
            };
            // One grouped update (on a device one launch; on the CPU one update per
            // parameter, in order).
            let mut ids = Vec::new();
            let mut targets = Vec::new();
            for p in group.params.iter_mut() {
                let Some(g) = tape.param_grad(p) else {
                    continue;
                };
                g.expect_shape("Sgd::step", p.value.shape())?;
                let id = p.id();
                ids.push(id);
                targets.push(SgdTarget {
                    v: self.velocity.remove(&id),
                    p: &mut p.value,
                    g,
                });
            }
            for (id, v) in ids.into_iter().zip(sgd_update_many(targets, hyper)?) {
                self.velocity.insert(id, v);
            }
        }
        Ok(())
    }

    /// The momentum buffer of `p`, if it has taken a step.
    pub fn velocity(&self, p: &Param<T>) -> Option<&Tensor<T>> {
        self.velocity.get(&p.id())
    }

    /// Sets the momentum buffer of `p` (restoring a checkpoint).
    pub fn set_velocity(&mut self, p: &Param<T>, v: Tensor<T>) -> Result<()> {
        v.expect_shape("Sgd::set_velocity", p.value.shape())?;
        self.velocity.insert(p.id(), v);
        Ok(())
    }

    /// Moves every momentum buffer to `device` (with the parameters they belong to).
    pub fn to_device(&mut self, device: &lucir_tensor::Device) -> Result<()> {
        for v in self.velocity.values_mut() {
            *v = v.to_device(device)?;
        }
        Ok(())
    }

    /// Forgets all momentum (e.g. at the start of a phase).
    pub fn reset(&mut self) {
        self.velocity.clear();
    }
}

/// `lr = base·γ^(number of milestones ≤ epoch)`; LUCIR decays by 0.1 at 50% and 75% of training.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiStepLr {
    /// Learning rate before the first milestone.
    pub base: f64,
    /// Epochs (0-based) at which the rate is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    /// Decay factor.
    pub gamma: f64,
}

impl MultiStepLr {
    /// The learning rate used during `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let passed = self.milestones.iter().filter(|&&m| m <= epoch).count();
        self.base * self.gamma.powi(passed as i32)
    }

    /// LUCIR's schedule for `epochs` epochs: ×0.1 at 50% and 75% (160 epochs: 80 and 120).
    /// Milestones at epoch 0 are dropped, so the first epoch always runs at the base rate, and
    /// two that fall on one epoch (fewer than 4 epochs) are one drop, not ×0.01 at once.
    pub fn lucir(base: f64, epochs: usize) -> Self {
        let mut milestones: Vec<usize> = [epochs / 2, epochs * 3 / 4]
            .into_iter()
            .filter(|&m| m > 0)
            .collect();
        milestones.dedup();
        Self {
            base,
            milestones,
            gamma: 0.1,
        }
    }

    /// Class-balanced fine-tuning's schedule: ×0.1 once, at half of `epochs` (20 epochs: at
    /// epoch 10), as the authors' code does.
    pub fn cbf(base: f64, epochs: usize) -> Self {
        Self {
            base,
            milestones: [epochs / 2].into_iter().filter(|&m| m > 0).collect(),
            gamma: 0.1,
        }
    }
}
