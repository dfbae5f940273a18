//! The class-incremental protocol: phases in order, each through the learner lifecycle, with
//! progress events and per-phase results for an [`Observer`].

use std::ops::Range;
use std::sync::Arc;

use lucir_data::{Augment, ClassOrder, Normalization, Phases, Split};
use serde::{Deserialize, Serialize};

use crate::{
    average_incremental_accuracy, IncrementalLearner, Learner, LossTerms, PhaseContext, Result,
    TrainStats,
};

/// The data of one protocol run: splits, class order, phases and transforms.
#[derive(Debug)]
pub struct ProtocolData {
    /// Training images.
    pub train: Arc<Split>,
    /// Test images.
    pub test: Arc<Split>,
    /// Class order (dataset ids → positions).
    pub order: ClassOrder,
    /// New classes per phase.
    pub phases: Phases,
    /// Normalisation.
    pub norm: Normalization,
    /// Training augmentation (its crop is also the evaluation crop).
    pub augment: Augment,
}

/// Which optimisation run of a phase an epoch belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The phase's training on new-class images and exemplars.
    Train,
    /// Class-balanced fine-tuning on the exemplars alone.
    Cbf,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Train => "train",
            Stage::Cbf => "cbf",
        })
    }
}

/// Progress of a run, for display.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A phase's training starts.
    PhaseStart {
        /// Phase index.
        phase: usize,
        /// Number of phases.
        phases: usize,
        /// New class positions.
        new: Range<usize>,
        /// Training samples (new-class images + exemplars).
        samples: usize,
        /// λ of the phase.
        lambda: f64,
    },
    /// A non-training stage (imprinting, herding…).
    Stage {
        /// Phase index.
        phase: usize,
        /// What is being done.
        what: &'static str,
    },
    /// An epoch starts.
    EpochStart {
        /// Phase index.
        phase: usize,
        /// The phase's training or its class-balanced fine-tuning.
        stage: Stage,
        /// Epoch index.
        epoch: usize,
        /// Epochs of this stage.
        epochs: usize,
        /// Batches per epoch.
        batches: usize,
        /// Learning rate of this epoch.
        lr: f64,
    },
    /// A step finished.
    Batch {
        /// Phase index.
        phase: usize,
        /// The phase's training or its class-balanced fine-tuning.
        stage: Stage,
        /// Epoch index.
        epoch: usize,
        /// Batch index.
        batch: usize,
        /// Batches per epoch.
        batches: usize,
        /// The step's losses: every step on the CPU; on a device only the steps whose terms
        /// were read back (every few steps and the last of an epoch), `None` for the others.
        loss: Option<LossTerms>,
    },
    /// A batch of test images was evaluated.
    Eval {
        /// Phase index.
        phase: usize,
        /// Test images evaluated so far.
        done: usize,
        /// Test images to evaluate.
        total: usize,
    },
    /// An epoch finished.
    EpochEnd {
        /// Phase index.
        phase: usize,
        /// The phase's training or its class-balanced fine-tuning.
        stage: Stage,
        /// Epoch index.
        epoch: usize,
        /// Epochs of this stage.
        epochs: usize,
        /// Mean losses over the epoch.
        loss: LossTerms,
        /// Learning rate used.
        lr: f64,
        /// Wall time of the epoch.
        seconds: f64,
    },
}

/// Receives progress and results; an `Err` from it stops the run.
pub trait Observer {
    /// A progress event.
    fn event(&mut self, event: &Event) -> Result<()>;
    /// A phase is complete (trained, exemplars chosen, evaluated).
    fn phase_done(&mut self, result: &PhaseResult, learner: &IncrementalLearner) -> Result<()>;
    /// A training epoch is complete: the learner can be checkpointed now.
    fn epoch_done(&mut self, learner: &IncrementalLearner) -> Result<()> {
        let _ = learner;
        Ok(())
    }
    /// Whether the run is to stop for a preemption, asked after every training step. When it
    /// is, the learner finishes the step, records where it is inside the epoch
    /// ([`crate::LearnerState::mid_epoch`]), calls [`Observer::epoch_done`] to have itself
    /// checkpointed, and returns [`crate::Error::Preempted`].
    fn preempted(&self) -> bool {
        false
    }
}

/// Everything reported about one phase (accuracies in percent). The accuracies are the phase's
/// [`crate::PhaseEval`], field for field; they are copied rather than nested so that
/// `results.json` stays one flat record per phase (serde's `flatten` would do it for JSON, but
/// not for the checkpoints' postcard encoding).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    /// Phase index (0 = base).
    pub phase: usize,
    /// Classes seen after this phase.
    pub classes_seen: usize,
    /// CNN accuracy on all seen classes.
    pub acc_cnn: f64,
    /// NME accuracy on all seen classes.
    pub acc_nme: f64,
    /// CNN accuracy on old classes (null in the base phase).
    pub acc_old_cnn: Option<f64>,
    /// CNN accuracy on the new classes.
    pub acc_new_cnn: f64,
    /// NME accuracy on old classes.
    pub acc_old_nme: Option<f64>,
    /// NME accuracy on the new classes.
    pub acc_new_nme: f64,
    /// CNN forgetting in percentage points.
    pub forgetting_cnn: f64,
    /// λ used.
    pub lambda: f64,
    /// σ after the phase (cosine heads).
    pub sigma: Option<f64>,
    /// Wall time of the training loop.
    pub train_seconds: f64,
    /// Training throughput.
    pub images_per_s: f64,
}

/// The results of a whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProtocolResult {
    /// One entry per phase.
    pub phases: Vec<PhaseResult>,
    /// Average incremental accuracy, CNN (base phase included).
    pub avg_inc_acc_cnn: f64,
    /// Average incremental accuracy, NME.
    pub avg_inc_acc_nme: f64,
}

impl ProtocolResult {
    /// Builds the summary from per-phase results.
    pub fn from_phases(phases: Vec<PhaseResult>) -> Self {
        let cnn: Vec<f64> = phases.iter().map(|p| p.acc_cnn).collect();
        let nme: Vec<f64> = phases.iter().map(|p| p.acc_nme).collect();
        Self {
            avg_inc_acc_cnn: average_incremental_accuracy(&cnn),
            avg_inc_acc_nme: average_incremental_accuracy(&nme),
            phases,
        }
    }
}

/// Runs the phases the learner has not completed: all of them for a fresh learner; for a
/// restored one, from where its checkpoint stopped (mid-phase training continues at the next
/// epoch).
pub fn run_protocol(
    learner: &mut IncrementalLearner,
    obs: &mut dyn Observer,
) -> Result<ProtocolResult> {
    let phases = learner.data().phases.clone();
    for phase in learner.results.len()..phases.len() {
        let ctx = PhaseContext {
            phase,
            phases: phases.len(),
            new: phases.range(phase),
        };
        if learner.training.map(|(p, _)| p) != Some(phase) {
            learner.before_phase(&ctx, obs)?;
        }
        let stats = if phase == 0 && learner.skip_base_training {
            TrainStats::default()
        } else {
            learner.train(&ctx, obs)?
        };
        learner.after_phase(&ctx, obs)?;
        obs.event(&Event::Stage {
            phase,
            what: "testing on the classes seen",
        })?;
        let eval = learner.evaluate(&ctx, obs)?;
        let result = PhaseResult {
            phase,
            classes_seen: ctx.seen(),
            acc_cnn: eval.acc_cnn,
            acc_nme: eval.acc_nme,
            acc_old_cnn: eval.acc_old_cnn,
            acc_new_cnn: eval.acc_new_cnn,
            acc_old_nme: eval.acc_old_nme,
            acc_new_nme: eval.acc_new_nme,
            forgetting_cnn: eval.forgetting_cnn,
            lambda: learner.lambda,
            sigma: learner.net.head.sigma(),
            train_seconds: stats.seconds,
            images_per_s: stats.images as f64 / stats.seconds.max(1e-9),
        };
        learner.results.push(result.clone());
        obs.phase_done(&result, learner)?;
    }
    Ok(ProtocolResult::from_phases(learner.results.clone()))
}
