//! Checkpoint snapshots of a learner: everything a killed run needs to continue exactly.

use std::sync::Arc;

use lucir_autograd::Sgd;
use lucir_data::ExemplarMemory;
use lucir_nn::{Module, StateDict};
use lucir_tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::{Error, IncrementalLearner, MethodConfig, PhaseResult, ProtocolData, Result};

/// Everything needed to continue a run exactly where it stopped: taken after every training
/// epoch and after every phase (docs/design.md §1 "resumed after a crash or kill"). Random choices
/// (shuffling, augmentation) are functions of (seed, phase, epoch, sample), so no generator
/// state needs saving; the head-growth generator is replayed on restore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearnerState {
    /// The phase being trained and its completed epochs; `None` between phases.
    pub training: Option<(usize, usize)>,
    /// λ of the current phase.
    pub lambda: f64,
    /// The current network (a split head while an incremental phase trains).
    pub net: StateDict,
    /// The frozen previous network, while an incremental phase trains.
    pub prev: Option<StateDict>,
    /// SGD momentum buffers by parameter name.
    pub velocity: Vec<(String, Vec<f32>)>,
    /// Exemplars.
    pub memory: ExemplarMemory,
    /// NME class means.
    pub class_means: Vec<f32>,
    /// Per-class CNN accuracy after each phase.
    pub history: Vec<Vec<f64>>,
    /// Results of the completed phases.
    pub results: Vec<PhaseResult>,
    /// Where a training epoch stopped, when the run was preempted inside one (the epoch is the
    /// one after `training`'s completed epochs).
    pub mid_epoch: Option<MidEpoch>,
}

/// A training epoch stopped after some of its steps: what the rest of it continues from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MidEpoch {
    /// Steps done.
    pub steps: usize,
    /// Sum over the steps done of each loss term × its batch size (the epoch's mean is this
    /// over `images`).
    pub sum: crate::LossTerms,
    /// Images trained on in the steps done.
    pub images: usize,
    /// Wall seconds the steps done took.
    pub seconds: f64,
}

impl IncrementalLearner {
    /// A snapshot of the learner for a checkpoint (read back from the device the learner
    /// trains on).
    pub fn snapshot(&self) -> Result<LearnerState> {
        let mut velocity = Vec::new();
        if let Some(sgd) = &self.sgd {
            for (n, p) in self.net.params() {
                if let Some(v) = sgd.velocity(p) {
                    velocity.push((n, v.to_cpu()?.into_vec()));
                }
            }
        }
        Ok(LearnerState {
            training: self.training,
            lambda: self.lambda,
            net: StateDict::of(&self.net)?,
            prev: self.prev.as_ref().map(StateDict::of).transpose()?,
            velocity,
            memory: self.memory.clone(),
            class_means: self.class_means.clone(),
            history: self.history.clone(),
            results: self.results.clone(),
            mid_epoch: self.mid_epoch,
        })
    }

    /// Rebuilds a learner from a snapshot taken with the same configuration and data. `source`
    /// names the checkpoint in errors.
    pub fn restore(
        cfg: MethodConfig,
        data: Arc<ProtocolData>,
        state: LearnerState,
        source: &std::path::Path,
    ) -> Result<Self> {
        let mut l = Self::new(cfg, data)?;
        let phases = l.data.phases.clone();
        // The phase whose head shape the network has: the one in training, or the last done.
        let (grown, training) = match state.training {
            Some((p, _)) => (p, true),
            None => (state.results.len().saturating_sub(1), false),
        };
        if grown >= phases.len() || state.results.len() > phases.len() {
            return Err(Error::Checkpoint {
                path: source.to_path_buf(),
                detail: format!(
                    "checkpoint is for phase {grown}, the run has {} phases",
                    phases.len()
                ),
            });
        }
        let d = l.net.backbone.feature_dim();
        for p in 1..=grown {
            l.net.head.merge()?;
            if training && p == grown {
                l.prev = Some(l.net.clone());
            }
            l.net.head.grow(&mut l.init, phases.sizes()[p], d)?;
        }
        if !training {
            l.net.head.merge()?;
        }
        state.net.apply(&mut l.net, source)?;
        match (&mut l.prev, &state.prev) {
            (Some(prev), Some(s)) => s.apply(prev, source)?,
            (None, None) => {}
            _ => {
                return Err(Error::Checkpoint {
                    path: source.to_path_buf(),
                    detail: "checkpoint and run disagree on the previous model".into(),
                })
            }
        }
        if training {
            let mut sgd = Sgd::new(l.cfg.momentum);
            for (name, p) in l.net.params() {
                if let Some((_, v)) = state.velocity.iter().find(|(n, _)| *n == name) {
                    let t = Tensor::from_vec(p.value.shape(), v.clone())?;
                    sgd.set_velocity(p, t)?;
                }
            }
            l.sgd = Some(sgd);
        }
        l.training = state.training;
        l.lambda = state.lambda;
        l.memory = state.memory;
        l.class_means = state.class_means;
        l.history = state.history;
        l.results = state.results;
        l.mid_epoch = state.mid_epoch.filter(|_| training);
        Ok(l)
    }
}
