//! The learner lifecycle (before phase → train → after phase → evaluate) and the one learner
//! that implements LUCIR, its ablations and the baselines: the learner and its optimisation
//! loop here, the lifecycle in `lifecycle.rs`, checkpoint snapshots in `state.rs`, the epoch's
//! loss sums in `epoch_sum.rs`, one optimisation step in `crate::step`.

mod epoch_sum;
mod lifecycle;
mod state;

pub use state::{LearnerState, MidEpoch};

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use lucir_autograd::{MultiStepLr, Sgd};
use lucir_data::{Batch, ExemplarMemory, Loader, Sample};
use lucir_nn::Init;
use lucir_tensor::{Device, DeviceImages, Tensor};

use crate::features::{backbone_features, features_and_logits};
use crate::{predict_argmax, predict_nme};
use crate::{
    Error, Event, Features, MethodConfig, Network, Observer, PhaseResult, ProtocolData, Result,
    Stage,
};
use crate::{LossTerms, StepLoss, TrainStep};
use epoch_sum::{EpochSum, READ_EVERY};

/// Where a phase stands: its index and the class positions involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseContext {
    /// Phase index (0 is the base phase).
    pub phase: usize,
    /// Number of phases.
    pub phases: usize,
    /// Positions of the classes this phase introduces.
    pub new: Range<usize>,
}

impl PhaseContext {
    /// Number of classes learned before this phase.
    pub fn old(&self) -> usize {
        self.new.start
    }
    /// Number of classes seen once this phase is learned.
    pub fn seen(&self) -> usize {
        self.new.end
    }
}

/// What training a phase cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrainStats {
    /// Images processed (epochs × samples).
    pub images: usize,
    /// Wall time of the training loop.
    pub seconds: f64,
    /// Mean loss terms of the last epoch.
    pub last_epoch: LossTerms,
}

/// Accuracies after a phase.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseEval {
    /// CNN accuracy (%) on all seen classes.
    pub acc_cnn: f64,
    /// NME accuracy (%) on all seen classes.
    pub acc_nme: f64,
    /// CNN accuracy on the classes learned before this phase (`None` in the base phase).
    pub acc_old_cnn: Option<f64>,
    /// CNN accuracy on this phase's classes.
    pub acc_new_cnn: f64,
    /// NME accuracy on old classes (`None` in the base phase).
    pub acc_old_nme: Option<f64>,
    /// NME accuracy on new classes.
    pub acc_new_nme: f64,
    /// CNN forgetting (percentage points; see [`crate::eval::forgetting`]).
    pub forgetting_cnn: f64,
}

/// The lifecycle every method goes through in each phase.
pub trait Learner {
    /// Prepares the phase: grows the head, imprints, freezes the previous model, sets λ.
    fn before_phase(&mut self, ctx: &PhaseContext, obs: &mut dyn Observer) -> Result<()>;
    /// Trains on the phase's data (new classes + exemplars).
    fn train(&mut self, ctx: &PhaseContext, obs: &mut dyn Observer) -> Result<TrainStats>;
    /// Selects exemplars, fine-tunes on them if configured, and computes NME class means.
    fn after_phase(&mut self, ctx: &PhaseContext, obs: &mut dyn Observer) -> Result<()>;
    /// Evaluates on the test images of all classes seen (reporting [`Event::Eval`] progress).
    fn evaluate(&mut self, ctx: &PhaseContext, obs: &mut dyn Observer) -> Result<PhaseEval>;
}

/// LUCIR (and ablations) or a baseline, per its [`MethodConfig`].
#[derive(Debug)]
pub struct IncrementalLearner {
    /// Settings.
    pub cfg: MethodConfig,
    /// The current model.
    pub net: Network,
    /// The frozen model of the previous phase (incremental phases only).
    pub prev: Option<Network>,
    /// Exemplars per class position.
    pub memory: ExemplarMemory,
    /// NME class means, seen × D.
    pub class_means: Vec<f32>,
    /// λ of the current phase.
    pub lambda: f64,
    /// Per-class CNN accuracy after each phase (for forgetting).
    pub history: Vec<Vec<f64>>,
    /// Results of the completed phases.
    pub results: Vec<PhaseResult>,
    /// The phase being trained and how many of its epochs are done (None between phases).
    pub training: Option<(usize, usize)>,
    /// Evaluate the network as given as the base phase instead of training it (a model
    /// loaded with [`Network::load_safetensors`]).
    pub skip_base_training: bool,
    sgd: Option<Sgd<f32>>,
    /// Where the epoch after `training`'s completed ones stopped, if it did inside.
    mid_epoch: Option<MidEpoch>,
    /// Where the networks, the optimiser state and each step's batch live.
    device: Device,
    /// The training split's pixels on the device, uploaded at the first training stage there
    /// (batches are then rendered on the device); `None` on the CPU and for image files.
    train_pixels: Option<DeviceImages>,
    data: Arc<ProtocolData>,
    train_ids: Vec<Vec<usize>>,
    test_ids: Vec<Vec<usize>>,
    init: Init,
}

fn by_position(labels: &[usize], data: &ProtocolData) -> Vec<Vec<usize>> {
    let mut v = vec![Vec::new(); data.order.len()];
    for (i, &l) in labels.iter().enumerate() {
        if l < data.order.len() {
            v[data.order.position(l)].push(i);
        }
    }
    v
}

impl IncrementalLearner {
    /// A learner with a fresh network for the base phase.
    pub fn new(cfg: MethodConfig, data: Arc<ProtocolData>) -> Result<Self> {
        cfg.validate()?;
        let base = data.phases.sizes()[0];
        let channels = data.train.shape[0];
        let net = Network::new(cfg.arch, channels, base, cfg.cosine_head(), cfg.seed)?;
        let train_ids = by_position(&data.train.labels, &data);
        let test_ids = by_position(&data.test.labels, &data);
        Ok(Self {
            memory: ExemplarMemory::new(cfg.memory),
            init: Init::new(cfg.seed ^ 0x9e0),
            cfg,
            net,
            prev: None,
            class_means: Vec::new(),
            lambda: 0.0,
            history: Vec::new(),
            results: Vec::new(),
            training: None,
            skip_base_training: false,
            sgd: None,
            mid_epoch: None,
            device: Device::Cpu,
            train_pixels: None,
            data,
            train_ids,
            test_ids,
        })
    }

    /// Trains and runs every feature pass on `device` from now on: the networks and the
    /// optimiser state move there, each batch is uploaded to it, and what the host needs
    /// (features, logits, loss terms, checkpoints) is read back.
    pub fn set_device(&mut self, device: Device) -> Result<()> {
        self.net.set_device(&device)?;
        if let Some(prev) = &mut self.prev {
            prev.set_device(&device)?;
        }
        if let Some(sgd) = &mut self.sgd {
            sgd.to_device(&device)?;
        }
        self.device = device;
        self.train_pixels = None;
        Ok(())
    }

    /// Where the learner trains.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The protocol data.
    pub fn data(&self) -> &ProtocolData {
        &self.data
    }

    /// The NME class means of the first `seen` classes from their exemplars in `memory`
    /// (plain and mirrored features averaged, then normalised; docs/design.md §3).
    pub fn compute_class_means(&mut self, seen: usize) -> Result<()> {
        let (mut plain, mut flipped) = (Vec::new(), Vec::new());
        for c in 0..seen {
            let ids = self.memory.class(c).to_vec();
            plain.push(self.train_features(c, &ids, false)?);
            flipped.push(self.train_features(c, &ids, true)?);
        }
        self.class_means = crate::nme_class_means(&plain, &flipped);
        Ok(())
    }

    /// CNN and NME predictions on the test images of the first `seen` classes (the first
    /// `per_class` of each, in file order, when given): `(labels, cnn, nme)`, class positions.
    /// `progress(done, total)` follows the images, batch by batch.
    pub fn test_predictions(
        &mut self,
        seen: usize,
        per_class: Option<usize>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
        let ids: Vec<Vec<usize>> = self
            .test_ids
            .iter()
            .map(|v| v[..per_class.unwrap_or(v.len()).min(v.len())].to_vec())
            .collect();
        let samples = Self::samples(&ids, 0..seen);
        let loader = self.eval_loader(&self.data.test.clone(), samples, false);
        let (feats, logits) = features_and_logits(&mut self.net, &loader, progress)?;
        let cnn = predict_argmax(&logits);
        let nme = predict_nme(&feats, &self.class_means);
        Ok((feats.labels, cnn, nme))
    }

    fn samples(ids: &[Vec<usize>], classes: Range<usize>) -> Vec<Sample> {
        classes
            .flat_map(|c| ids[c].iter().map(move |&id| Sample { id, label: c }))
            .collect()
    }

    fn loader_seed(&self, phase: usize, stage: u64) -> u64 {
        self.cfg.seed ^ (phase as u64).wrapping_mul(0x9e37_79b9) ^ stage.wrapping_mul(0x85eb_ca6b)
    }

    fn eval_loader(
        &self,
        split: &Arc<lucir_data::Split>,
        samples: Vec<Sample>,
        mirrored: bool,
    ) -> Loader {
        Loader::test(
            split.clone(),
            samples,
            self.cfg.batch.max(256),
            self.data.norm.clone(),
            self.data.augment,
            mirrored,
        )
    }

    /// Backbone features of class `c`'s samples `ids` of the training split.
    fn train_features(&mut self, c: usize, ids: &[usize], mirrored: bool) -> Result<Features> {
        let samples = ids.iter().map(|&id| Sample { id, label: c }).collect();
        let loader = self.eval_loader(&self.data.train.clone(), samples, mirrored);
        backbone_features(&mut self.net.backbone, &loader)
    }

    /// One optimisation run over `samples`: the phase's training or class-balanced fine-tuning.
    fn optimise(
        &mut self,
        ctx: &PhaseContext,
        samples: Vec<Sample>,
        stage: Stage,
        epochs: usize,
        lr: f64,
        obs: &mut dyn Observer,
    ) -> Result<TrainStats> {
        let cbf = stage == Stage::Cbf;
        let loader = Loader::train(
            self.data.train.clone(),
            samples,
            self.cfg.batch,
            self.data.norm.clone(),
            self.data.augment,
            self.loader_seed(ctx.phase, u64::from(cbf)),
        );
        let sched = match stage {
            Stage::Train => MultiStepLr {
                base: lr,
                milestones: self.cfg.lr_milestones(),
                gamma: 0.1,
            },
            Stage::Cbf => MultiStepLr::cbf(lr, epochs),
        };
        // The training stage continues a checkpointed phase: its optimizer state and the epochs
        // already done live in the learner. Class-balanced fine-tuning always runs whole.
        let (first, mut sgd) = match (cbf, self.training, self.sgd.take()) {
            (false, Some((p, done)), Some(sgd)) if p == ctx.phase => (done, sgd),
            _ => (0, Sgd::new(self.cfg.momentum)),
        };
        // A preempted epoch continues after its last step, with the sums of the steps done.
        let mut partial = match (cbf, self.mid_epoch.take()) {
            (false, Some(m)) if self.training == Some((ctx.phase, first)) => Some(m),
            _ => None,
        };
        if self.train_pixels.is_none() {
            self.train_pixels = loader.upload_pixels(&self.device)?;
        }
        let pixels = self.train_pixels.clone();
        let start = Instant::now();
        let mut stats = TrainStats::default();
        let batches = loader.batches();
        for epoch in first..epochs {
            let lr = sched.lr_at(epoch);
            obs.event(&Event::EpochStart {
                phase: ctx.phase,
                stage,
                epoch,
                epochs,
                batches,
                lr,
            })?;
            let t0 = Instant::now();
            let done = partial.take().unwrap_or(MidEpoch {
                steps: 0,
                sum: LossTerms::default(),
                images: 0,
                seconds: 0.0,
            });
            let (mut sum, mut seen) = (EpochSum::new(done.sum), done.images);
            // On a device the batches of an in-memory split are rendered there (the same
            // draws and bits); otherwise on CPU threads, one batch ahead.
            let epoch_batches: Box<dyn Iterator<Item = lucir_data::Result<Batch>>> = match &pixels {
                Some(px) => Box::new(loader.epoch_on(px, epoch as u64, done.steps)),
                None => Box::new(loader.epoch_from(epoch as u64, done.steps)),
            };
            for (step, batch) in epoch_batches.enumerate().map(|(i, b)| (i + done.steps, b)) {
                let batch = batch?;
                let n = batch.labels.len();
                let loss = self.step(ctx, batch.images, &batch.labels, lr, stage, &mut sgd)?;
                sum.add(&loss, n)?;
                // A CPU step's terms are read; a device step's every READ_EVERY steps and at
                // the end of the epoch, so that the host does not wait for the device each step.
                let terms = match &loss {
                    StepLoss::Host(terms) => Some(*terms),
                    StepLoss::Device { .. }
                        if (step + 1) % READ_EVERY == 0 || step + 1 == batches =>
                    {
                        Some(loss.read()?)
                    }
                    StepLoss::Device { .. } => None,
                };
                let bad_loss = terms.filter(|t| !t.total.is_finite());
                // On a device the parameters are checked once an epoch (below): reading them
                // all back after every step would stall the device each step.
                let on_cpu = self.device == Device::Cpu;
                if bad_loss.is_some() || (on_cpu && !self.net.all_finite()?) {
                    let what = match bad_loss {
                        Some(terms) => format!("the loss ({terms:?})"),
                        None => "a parameter".to_string(),
                    };
                    return Err(Error::Diverged {
                        phase: ctx.phase,
                        epoch,
                        step,
                        what,
                    });
                }
                seen += n;
                stats.images += n;
                obs.event(&Event::Batch {
                    phase: ctx.phase,
                    stage,
                    epoch,
                    batch: step,
                    batches,
                    loss: terms,
                })?;
                if obs.preempted() && step + 1 < batches {
                    let done = MidEpoch {
                        steps: step + 1,
                        sum: sum.read()?,
                        images: seen,
                        seconds: done.seconds + t0.elapsed().as_secs_f64(),
                    };
                    return Err(self.preempt(ctx, stage, epoch, sgd, obs, done));
                }
            }
            if self.device != Device::Cpu && !self.net.all_finite()? {
                return Err(Error::Diverged {
                    phase: ctx.phase,
                    epoch,
                    step: batches.saturating_sub(1),
                    what: "a parameter (checked at the end of the epoch on the device)".into(),
                });
            }
            let mean = sum.read()?.scaled(1.0 / seen.max(1) as f64);
            stats.last_epoch = mean;
            obs.event(&Event::EpochEnd {
                phase: ctx.phase,
                stage,
                epoch,
                epochs,
                loss: mean,
                lr,
                seconds: done.seconds + t0.elapsed().as_secs_f64(),
            })?;
            if !cbf {
                self.training = Some((ctx.phase, epoch + 1));
                self.sgd = Some(sgd);
                obs.epoch_done(self)?;
                sgd = self
                    .sgd
                    .take()
                    .unwrap_or_else(|| Sgd::new(self.cfg.momentum));
            }
            if obs.preempted() {
                return Err(Error::Preempted(format!(
                    "stopped after phase {} {stage} epoch {}",
                    ctx.phase,
                    epoch + 1
                )));
            }
        }
        stats.seconds = start.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Stops a preempted training stage after a step: the phase's training is checkpointed
    /// there (`done` says where inside the epoch); class-balanced fine-tuning, which is never
    /// checkpointed, is redone whole from the checkpoint at the end of the phase's training.
    fn preempt(
        &mut self,
        ctx: &PhaseContext,
        stage: Stage,
        epoch: usize,
        sgd: Sgd<f32>,
        obs: &mut dyn Observer,
        done: MidEpoch,
    ) -> Error {
        let at = format!(
            "stopped in phase {} {stage} epoch {} after step {}",
            ctx.phase,
            epoch + 1,
            done.steps
        );
        if stage == Stage::Train {
            self.training = Some((ctx.phase, epoch));
            self.mid_epoch = Some(done);
            self.sgd = Some(sgd);
            let saved = obs.epoch_done(self);
            self.mid_epoch = None;
            if let Err(e) = saved {
                return e;
            }
        }
        Error::Preempted(at)
    }

    /// One SGD step on a batch; returns its loss terms (on a device, left there).
    fn step(
        &mut self,
        ctx: &PhaseContext,
        images: Tensor<f32>,
        labels: &[usize],
        lr: f64,
        stage: Stage,
        sgd: &mut Sgd<f32>,
    ) -> Result<StepLoss<f32>> {
        let step = TrainStep {
            cfg: &self.cfg,
            phase: ctx.phase,
            old: ctx.old(),
            lambda: self.lambda,
            stage,
        };
        let images = images.into_device(&self.device)?;
        let (net, prev) = (&mut self.net, self.prev.as_mut());
        // A step is a few hundred short parallel regions: see `with_workers_awake`.
        lucir_tensor::with_workers_awake_on(&self.device, || {
            step.run_deferred(net, prev, images, labels, lr, sgd)
        })
    }
}
