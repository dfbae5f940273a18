//! One optimisation step of a phase (docs/design.md §3 "Losses" and "Optimisation"): the
//! forward passes of the current and the frozen previous model, the loss of the configured
//! method, the backward pass and the SGD update with LUCIR's parameter groups. The learner runs
//! it for every batch; the PyTorch parity test runs it on golden batches.

use lucir_autograd::{Param, ParamGroup, Sgd, Tape, Var};
use lucir_nn::{HeadOut, Mode, Module};
use lucir_tensor::{concat_rows, Float, Tensor};

use crate::{Error, Method, MethodConfig, Network, Result, Stage};

/// Loss terms of a step or the mean over an epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossTerms {
    /// Total loss.
    pub total: f64,
    /// Cross-entropy.
    pub ce: f64,
    /// Less-forget (λ included).
    pub lf: f64,
    /// Margin ranking.
    pub mr: f64,
    /// Distillation (iCaRL baseline).
    pub kd: f64,
}

impl LossTerms {
    pub(crate) fn add(&mut self, o: &LossTerms) {
        self.total += o.total;
        self.ce += o.ce;
        self.lf += o.lf;
        self.mr += o.mr;
        self.kd += o.kd;
    }
    pub(crate) fn scaled(&self, k: f64) -> LossTerms {
        LossTerms {
            total: self.total * k,
            ce: self.ce * k,
            lf: self.lf * k,
            mr: self.mr * k,
            kd: self.kd * k,
        }
    }
}

/// What one step needs besides the networks and the batch.
#[derive(Clone, Copy, Debug)]
pub struct TrainStep<'a> {
    /// The method and its hyper-parameters.
    pub cfg: &'a MethodConfig,
    /// Phase index (0 is the base phase).
    pub phase: usize,
    /// Number of classes learned before this phase (columns 0..old of the logits).
    pub old: usize,
    /// λ of the less-forget constraint in this phase.
    pub lambda: f64,
    /// Training or class-balanced fine-tuning.
    pub stage: Stage,
}

impl TrainStep<'_> {
    /// One SGD step of `net` at learning rate `lr` on a batch (`images` N×C×H×W, `labels` class
    /// positions); `prev` is the frozen previous model (incremental phases). Returns the loss
    /// terms; a non-finite loss is returned without updating anything. Training runs in f32;
    /// f64 serves reference computations (the GPU head ops are f32 only and skipped in f64).
    /// On a device the terms are read back before the backward pass, one wait a step; the
    /// learner's loop uses [`TrainStep::run_deferred`] instead.
    pub fn run<T: Float>(
        &self,
        net: &mut Network<T>,
        prev: Option<&mut Network<T>>,
        images: Tensor<T>,
        labels: &[usize],
        lr: f64,
        sgd: &mut Sgd<T>,
    ) -> Result<LossTerms> {
        match self.step(net, prev, images, labels, lr, sgd, false)? {
            StepLoss::Host(terms) => Ok(terms),
            StepLoss::Device { .. } => Err(READ_BACK),
        }
    }

    /// [`TrainStep::run`] without waiting for the device: on the CPU it is `run` (the terms are
    /// read, and a non-finite loss updates nothing); on a device the terms stay there, stacked
    /// in one tensor for the caller to accumulate and read when it chooses, and the update is
    /// made whatever the loss (a non-finite one is found at that read, and at the end of the
    /// epoch in the parameters). The host never waits for the device inside such a step.
    pub fn run_deferred<T: Float>(
        &self,
        net: &mut Network<T>,
        prev: Option<&mut Network<T>>,
        images: Tensor<T>,
        labels: &[usize],
        lr: f64,
        sgd: &mut Sgd<T>,
    ) -> Result<StepLoss<T>> {
        self.step(net, prev, images, labels, lr, sgd, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn step<T: Float>(
        &self,
        net: &mut Network<T>,
        prev: Option<&mut Network<T>>,
        images: Tensor<T>,
        labels: &[usize],
        lr: f64,
        sgd: &mut Sgd<T>,
        defer: bool,
    ) -> Result<StepLoss<T>> {
        let cbf = self.stage == Stage::Cbf;
        let incremental = self.phase > 0;
        let lucir = self.cfg.method == Method::Lucir;
        let need_prev = incremental
            && !cbf
            && ((lucir && self.lambda > 0.0) || self.cfg.method == Method::Icarl);
        // The previous model's view of the batch, on its own gradient-free tape.
        let prev_out = if need_prev {
            let prev = prev.ok_or(Error::Internal(
                "an incremental phase needs the previous model",
            ))?;
            let mut t = Tape::no_grad();
            let x = t.constant(images.clone());
            let (f, out) = prev.forward(&mut t, x, Mode::Eval)?;
            Some((t.value(f).clone(), t.value(out.logits).clone()))
        } else {
            None
        };
        let mut tape = Tape::new();
        let (f, out) = if cbf {
            // Class-balanced fine-tuning: backbone and BN frozen (evaluation mode), so the
            // features come from a gradient-free tape and enter the training tape as constants.
            let mut t = Tape::no_grad();
            let x = t.constant(images);
            let fv = net.backbone.forward(&mut t, x, Mode::Eval)?;
            let f = tape.constant(t.value(fv).clone());
            (f, self.head_forward(net, &mut tape, f)?)
        } else {
            let x = tape.constant(images);
            let f = net.backbone.forward(&mut tape, x, Mode::Train)?;
            (f, self.head_forward(net, &mut tape, f)?)
        };
        // On a device the loss terms are stacked into one tensor: read back after the forward
        // pass, one transfer (and one wait) a step instead of one a term, or left there.
        let ce = tape.cross_entropy(out.logits, labels)?;
        let mut loss = ce;
        let (mut lf, mut kd, mut mr) = (None, None, None);
        if let Some((f_star, old_logits)) = &prev_out {
            if lucir {
                let v = self.feature_distill(&mut tape, f, f_star)?;
                loss = tape.add(loss, v)?;
                lf = Some(v);
            } else {
                let z_old = tape.slice_cols(out.logits, 0, self.old)?;
                // The previous model scores exactly the old classes.
                let v = tape.kd(z_old, old_logits, T::of(self.cfg.kd_temperature))?;
                loss = tape.add(loss, v)?;
                kd = Some(v);
            }
        }
        if incremental && lucir && self.cfg.margin_rank {
            let cos = out.cos.unwrap_or(out.logits);
            let v = self.margin_rank(&mut tape, cos, labels)?;
            loss = tape.add(loss, v)?;
            mr = Some(v);
        }
        let present = [true, lf.is_some(), kd.is_some(), mr.is_some(), true];
        let vars: Vec<Var> = [Some(ce), lf, kd, mr, Some(loss)]
            .into_iter()
            .flatten()
            .collect();
        let result = if tape.value(loss).is_cpu() {
            let values = vars
                .iter()
                .map(|v| Ok(tape.value(*v).item()?.as_f64()))
                .collect::<Result<Vec<f64>>>()?;
            StepLoss::Host(LossTerms::from_values(present, &values)?)
        } else {
            let held = StepLoss::Device {
                values: stack(&tape, &vars)?,
                present,
            };
            if defer {
                held
            } else {
                StepLoss::Host(held.read()?)
            }
        };
        if let StepLoss::Host(terms) = &result {
            if !terms.total.is_finite() {
                return Ok(result);
            }
        }
        tape.backward(loss)?;
        // The parameters are updated where they are (no copy of a buffer the tape shares).
        tape.release_param_values();
        let wd = self.cfg.weight_decay;
        let Network { backbone, head } = net;
        let mut groups: Vec<ParamGroup<'_, T>> = Vec::new();
        if !cbf {
            let params: Vec<&mut Param<T>> =
                backbone.params_mut().into_iter().map(|(_, p)| p).collect();
            groups.push(ParamGroup {
                lr,
                weight_decay: wd,
                params,
            });
        }
        groups.extend(head.groups(lr, wd, cbf));
        sgd.step(&tape, &mut groups)?;
        Ok(result)
    }

    /// The classifier on features `f`.
    fn head_forward<T: Float>(
        &self,
        net: &Network<T>,
        tape: &mut Tape<T>,
        f: Var,
    ) -> Result<HeadOut> {
        net.head.forward(tape, f)
    }

    /// The feature-distillation (less-forget) loss.
    fn feature_distill<T: Float>(
        &self,
        tape: &mut Tape<T>,
        f: Var,
        f_star: &Tensor<T>,
    ) -> Result<Var> {
        Ok(tape.feature_distill(f, f_star, T::of(self.lambda))?)
    }

    /// The margin-ranking loss.
    fn margin_rank<T: Float>(&self, tape: &mut Tape<T>, cos: Var, labels: &[usize]) -> Result<Var> {
        let (k, m) = (self.cfg.k, self.cfg.margin);
        Ok(tape.margin_rank(cos, labels, self.old, k, T::of(m))?)
    }
}

/// What a short read-back says (it cannot happen: one value is read per node).
const READ_BACK: Error = Error::Internal("fewer loss values read back than loss terms");

/// The loss terms of a step where its loss was computed.
#[derive(Clone, Debug)]
pub enum StepLoss<T> {
    /// Read on the host (every CPU step, and a device step run by [`TrainStep::run`]).
    Host(LossTerms),
    /// Still on the device: the terms present, in the order ce, lf, kd, mr, total, stacked
    /// into a k×1 tensor; `present` says which of the five it holds.
    Device {
        /// The values, k×1.
        values: Tensor<T>,
        /// Which of ce, lf, kd, mr, total are in `values` (ce and total always are).
        present: [bool; 5],
    },
}

impl<T: Float> StepLoss<T> {
    /// The terms, read back from the device if they are there (one transfer, one wait).
    pub fn read(&self) -> Result<LossTerms> {
        match self {
            StepLoss::Host(terms) => Ok(*terms),
            StepLoss::Device { values, present } => LossTerms::read(values, *present),
        }
    }
}

impl LossTerms {
    /// The terms held in `values` (k×1, see [`StepLoss::Device`]), read back if on a device.
    pub(crate) fn read<T: Float>(values: &Tensor<T>, present: [bool; 5]) -> Result<Self> {
        let v: Vec<f64> = values
            .host()?
            .as_slice()
            .iter()
            .map(|v| v.as_f64())
            .collect();
        LossTerms::from_values(present, &v)
    }

    /// The terms from the values of those `present` (ce, lf, kd, mr, total order), 0 for the
    /// others.
    pub(crate) fn from_values(present: [bool; 5], values: &[f64]) -> Result<Self> {
        let mut values = values.iter().copied();
        let mut t = [0.0; 5];
        for (slot, _) in t.iter_mut().zip(present).filter(|(_, p)| *p) {
            *slot = values.next().ok_or(READ_BACK)?;
        }
        let [ce, lf, kd, mr, total] = t;
        Ok(LossTerms {
            total,
            ce,
            lf,
            mr,
            kd,
        })
    }
}

/// The one-element nodes `vars` stacked into a k×1 tensor on their device.
fn stack<T: Float>(tape: &Tape<T>, vars: &[Var]) -> Result<Tensor<T>> {
    let one = |v: &Var| tape.value(*v).clone().reshape(&[1, 1]);
    let mut stacked = one(&vars[0])?;
    for v in &vars[1..] {
        stacked = concat_rows(&stacked, &one(v)?)?;
    }
    Ok(stacked)
}
