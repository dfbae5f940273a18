//! The LUCIR method (Hou et al., CVPR 2019; docs/design.md §3) and its baselines.
//!
//! A [`Learner`] goes through the same lifecycle in every phase — [`Learner::before_phase`]
//! (grow and imprint the head, freeze the previous model), [`Learner::train`],
//! [`Learner::after_phase`] (herding, optional class-balanced fine-tuning, NME class means) and
//! [`Learner::evaluate`] — and [`run_protocol`] drives it over all phases. One learner,
//! [`IncrementalLearner`], covers LUCIR, its ablations and the fine-tuning / iCaRL-style
//! baselines through [`MethodConfig`]. This crate reads no files and prints nothing: progress
//! and results go to an [`Observer`]. It knows no device: a learner given a CUDA device
//! ([`IncrementalLearner::set_device`]) runs the same code on device tensors.

mod config;
mod error;
mod eval;
mod features;
mod herding;
mod imprint;
mod learner;
mod network;
mod protocol;
mod step;

pub use config::{adaptive_lambda, Arch, Method, MethodConfig};
pub use error::{Error, Result};
pub use eval::{
    accuracy_split, average_incremental_accuracy, forgetting, nme_class_means, per_class_accuracy,
    predict_argmax, predict_nme,
};
pub use features::Features;
pub use herding::{herding, herding_ref};
pub use imprint::imprint_weights;
pub use learner::{
    IncrementalLearner, Learner, LearnerState, MidEpoch, PhaseContext, PhaseEval, TrainStats,
};
pub use network::{Head, Network};
pub use protocol::{
    run_protocol, Event, Observer, PhaseResult, ProtocolData, ProtocolResult, Stage,
};
pub use step::{LossTerms, StepLoss, TrainStep};
