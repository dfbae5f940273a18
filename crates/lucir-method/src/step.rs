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
    pub fn run<T: Float>(
        &self,
        net: &mut Network<T>,
        prev: Option<&mut Network<T>>,
        images: Tensor<T>,
        labels: &[usize],
        lr: f64,
        sgd: &mut Sgd<T>,
    ) -> Result<LossTerms> {
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
        // The loss terms are read back together after the forward pass: on a device, one
        // transfer (and one wait) a step instead of one a term.
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
        let vars: Vec<Var> = [Some(ce), lf, kd, mr, Some(loss)]
            .into_iter()
            .flatten()
            .collect();
        let mut values = read_back(&tape, &vars)?.into_iter();
        let mut next = |v: Option<Var>| v.map_or(Ok(0.0), |_| values.next().ok_or(READ_BACK));
        let terms = LossTerms {
            ce: next(Some(ce))?,
            lf: next(lf)?,
            kd: next(kd)?,
            mr: next(mr)?,
            total: next(Some(loss))?,
        };
        if !terms.total.is_finite() {
            return Ok(terms);
        }
        tape.backward(loss)?;
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
        Ok(terms)
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

/// The values of one-element nodes `vars`, in order: on the CPU each as it is, on a device
/// stacked into one tensor and read back with one transfer.
fn read_back<T: Float>(tape: &Tape<T>, vars: &[Var]) -> Result<Vec<f64>> {
    let values: Vec<&Tensor<T>> = vars.iter().map(|v| tape.value(*v)).collect();
    if values.iter().all(|t| t.is_cpu()) {
        return values.iter().map(|t| Ok(t.item()?.as_f64())).collect();
    }
    let one = |t: &Tensor<T>| t.clone().reshape(&[1, 1]);
    let mut stacked = one(values[0])?;
    for t in &values[1..] {
        stacked = concat_rows(&stacked, &one(t)?)?;
    }
    Ok(stacked
        .to_cpu()?
        .as_slice()
        .iter()
        .map(|v| v.as_f64())
        .collect())
}
