//! The phase lifecycle of [`IncrementalLearner`]: grow and imprint the head, train, select
//! exemplars (and fine-tune on them), evaluate.

use crate::eval::per_class_accuracy;
use crate::{
    accuracy_split, adaptive_lambda, forgetting, herding, imprint_weights, Error, Event,
    IncrementalLearner, Learner, Observer, PhaseContext, PhaseEval, Result, Stage, TrainStats,
};
use lucir_autograd::Sgd;
use lucir_data::Sample;

impl Learner for IncrementalLearner {
    fn before_phase(&mut self, ctx: &PhaseContext, obs: &mut dyn Observer) -> Result<()> {
        self.lambda = adaptive_lambda(&self.cfg, ctx.old(), ctx.new.len());
        self.training = Some((ctx.phase, 0));
        self.sgd = Some(Sgd::new(self.cfg.momentum));
        if ctx.phase == 0 {
            return Ok(());
        }
        self.prev = Some(self.net.clone());
        let d = self.net.backbone.feature_dim();
        self.net.head.grow(&mut self.init, ctx.new.len(), d)?;
        if self.cfg.imprint && self.cfg.cosine_head() {
            obs.event(&Event::Stage {
                phase: ctx.phase,
                what: "imprinting new-class weights",
            })?;
            let mut per_class = Vec::new();
            for c in ctx.new.clone() {
                stop_if_preempted(obs, "imprinting", ctx.phase)?;
                let ids = self.train_ids[c].clone();
                per_class.push(self.train_features(c, &ids, false)?.normalized());
            }
            let old = self
                .net
                .head
                .old_rows()
                .ok_or(Error::Internal("imprinting needs a split head"))?
                .to_cpu()?;
            let rows = imprint_weights(&per_class, &old)?;
            self.net.head.set_new_rows(rows)?;
        }
        Ok(())
    }

    fn train(&mut self, ctx: &PhaseContext, obs: &mut dyn Observer) -> Result<TrainStats> {
        let mut samples = Self::samples(&self.train_ids, ctx.new.clone());
        samples.extend(
            self.memory
                .samples()
                .into_iter()
                .map(|(id, label)| Sample { id, label }),
        );
        obs.event(&Event::PhaseStart {
            phase: ctx.phase,
            phases: ctx.phases,
            new: ctx.new.clone(),
            samples: samples.len(),
            lambda: self.lambda,
        })?;
        self.optimise(
            ctx,
            samples,
            Stage::Train,
            self.cfg.epochs,
            self.cfg.lr,
            obs,
        )
    }

    fn after_phase(&mut self, ctx: &PhaseContext, obs: &mut dyn Observer) -> Result<()> {
        self.net.head.merge()?;
        self.prev = None;
        self.training = None;
        self.sgd = None;
        obs.event(&Event::Stage {
            phase: ctx.phase,
            what: "herding exemplars",
        })?;
        let quota = self.memory.quota(ctx.seen())?;
        self.memory.shrink(quota);
        for c in ctx.new.clone() {
            stop_if_preempted(obs, "herding", ctx.phase)?;
            let ids = self.train_ids[c].clone();
            let feats = self.train_features(c, &ids, false)?.normalized();
            let picks = herding(&feats, quota);
            self.memory
                .set(c, picks.into_iter().map(|i| ids[i]).collect());
        }
        if self.cfg.cbf && ctx.phase > 0 && self.cfg.cosine_head() {
            let samples: Vec<Sample> = self
                .memory
                .samples()
                .into_iter()
                .map(|(id, label)| Sample { id, label })
                .collect();
            self.optimise(
                ctx,
                samples,
                Stage::Cbf,
                self.cfg.cbf_epochs,
                self.cfg.cbf_lr,
                obs,
            )?;
        }
        obs.event(&Event::Stage {
            phase: ctx.phase,
            what: "computing NME class means",
        })?;
        self.compute_class_means(ctx.seen())
    }

    fn evaluate(&mut self, ctx: &PhaseContext, obs: &mut dyn Observer) -> Result<PhaseEval> {
        let phase = ctx.phase;
        let mut progress = |done, total| obs.event(&Event::Eval { phase, done, total });
        let (labels, cnn, nme) = self.test_predictions(ctx.seen(), None, &mut progress)?;
        let labels = &labels;
        let (acc_cnn, acc_old_cnn, acc_new_cnn) = accuracy_split(&cnn, labels, ctx.old());
        let (acc_nme, acc_old_nme, acc_new_nme) = accuracy_split(&nme, labels, ctx.old());
        self.history
            .push(per_class_accuracy(&cnn, labels, self.data.order.len()));
        // accuracy_split gives NaN for a group without samples (old classes in the base phase).
        let finite = |v: f64| v.is_finite().then_some(v);
        Ok(PhaseEval {
            acc_cnn,
            acc_nme,
            acc_old_cnn: finite(acc_old_cnn),
            acc_new_cnn,
            acc_old_nme: finite(acc_old_nme),
            acc_new_nme,
            forgetting_cnn: forgetting(&self.history),
        })
    }
}

/// A preemption between two classes of a feature pass (imprinting, herding), which send no
/// event per batch: the run stops there, at its last checkpoint, which the work is redone from.
fn stop_if_preempted(obs: &dyn Observer, what: &str, phase: usize) -> Result<()> {
    match obs.preempted() {
        true => Err(Error::Preempted(format!(
            "stopped while {what} in phase {phase}; the last checkpoint is kept"
        ))),
        false => Ok(()),
    }
}
