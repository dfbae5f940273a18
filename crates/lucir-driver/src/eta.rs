//! The estimate of a run's remaining time: the images each phase still has to train on and to
//! pass forward (imprinting, herding, class means, testing), times the rates measured so far.
//!
//! Phases differ in size (the base phase of fmnist-quick trains on 5 000 images, each
//! incremental one on ≈ 1 100), so epochs are not a unit of time; and on small runs testing is
//! most of the wall time. Rates, in seconds per image:
//! - training: the last epoch's, kept apart for the base phase and the incremental phases
//!   (whose steps also run the old model); an incremental rate not yet measured is the base
//!   rate × 4/3 (the old model's forward pass is about a third of a training step);
//! - forward passes: everything between epochs (herding, class means, testing, checkpoints)
//!   over the images it passed, measured at the end of each phase; before the first phase
//!   ends, a third of the training rate.

use lucir_data::MemoryBudget;
use lucir_method::{MethodConfig, ProtocolData, Stage};

/// The work of one phase, in images.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseWork {
    /// Images per training epoch (new-class images and exemplars).
    pub train: usize,
    /// Training epochs.
    pub epochs: usize,
    /// Images per class-balanced fine-tuning epoch (0: none).
    pub cbf: usize,
    /// Class-balanced fine-tuning epochs.
    pub cbf_epochs: usize,
    /// Images passed forward without training: imprinting, herding, class means, testing.
    pub forward: usize,
    /// Of those, the test images (the last forward work of the phase).
    pub test: usize,
}

/// The work of every phase of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// One entry per phase.
    pub phases: Vec<PhaseWork>,
}

/// Seconds per image measured so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Training, base phase.
    pub base: Option<f64>,
    /// Training, incremental phases.
    pub incremental: Option<f64>,
    /// Forward passes.
    pub forward: Option<f64>,
}

impl Rates {
    fn train(&self, phase: usize) -> Option<f64> {
        match phase {
            0 => self.base.or(self.incremental),
            _ => self.incremental.or(self.base.map(|b| b * 4.0 / 3.0)),
        }
    }

    /// A forward pass runs no old model: a third of a base-phase step.
    fn forward(&self) -> Option<f64> {
        self.forward.or(self.train(0).map(|t| t / 3.0))
    }
}

impl Plan {
    /// The work of the run that learns `data` with `cfg`.
    pub fn new(data: &ProtocolData, cfg: &MethodConfig) -> Self {
        let n = data.order.len();
        let train_counts = data.train.class_counts(n);
        let test_counts = data.test.class_counts(n);
        // Per class position.
        let at = |counts: &[usize], p: usize| counts[data.order.order()[p]];
        let quota = |seen: usize| match cfg.memory {
            MemoryBudget::PerClass(m) => m,
            MemoryBudget::Total(t) => t / seen.max(1),
        };
        let exemplars = |seen: usize| -> usize {
            (0..seen)
                .map(|p| at(&train_counts, p).min(quota(seen)))
                .sum()
        };
        let cosine = cfg.cosine_head();
        let mut start = 0;
        let phases = data
            .phases
            .sizes()
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                let (old, seen) = (start, start + size);
                start = seen;
                let new: usize = (old..seen).map(|p| at(&train_counts, p)).sum();
                let test: usize = (0..seen).map(|p| at(&test_counts, p)).sum();
                let imprint = if i > 0 && cfg.imprint && cosine {
                    new
                } else {
                    0
                };
                let cbf = i > 0 && cfg.cbf && cosine;
                PhaseWork {
                    train: new + if i > 0 { exemplars(old) } else { 0 },
                    epochs: cfg.epochs,
                    cbf: if cbf { exemplars(seen) } else { 0 },
                    cbf_epochs: if cbf { cfg.cbf_epochs } else { 0 },
                    forward: imprint + new + exemplars(seen) + test,
                    test,
                }
            })
            .collect();
        Self { phases }
    }

    /// Images per epoch of `stage` in `phase`.
    pub fn epoch_images(&self, phase: usize, stage: Stage) -> usize {
        self.phases.get(phase).map_or(0, |w| match stage {
            Stage::Train => w.train,
            Stage::Cbf => w.cbf,
        })
    }

    /// Seconds left once epoch `epoch` of `stage` in `phase` has ended, at `rates` (`None`
    /// until a training rate is known).
    pub fn remaining(&self, phase: usize, stage: Stage, epoch: usize, rates: Rates) -> Option<f64> {
        let mut left = 0.0;
        for (p, w) in self.phases.iter().enumerate().skip(phase) {
            let (train, fwd) = (rates.train(p)?, rates.forward()?);
            let (epochs, cbf_epochs, forward) = match (p == phase, stage) {
                (false, _) => (w.epochs, w.cbf_epochs, w.forward),
                (true, Stage::Train) => (
                    w.epochs - (epoch + 1).min(w.epochs),
                    w.cbf_epochs,
                    w.forward,
                ),
                // Herding came before the fine-tuning; the class means and testing remain.
                (true, Stage::Cbf) => (0, w.cbf_epochs - (epoch + 1).min(w.cbf_epochs), w.test),
            };
            left += (epochs * w.train + cbf_epochs * w.cbf) as f64 * train + forward as f64 * fwd;
        }
        Some(left)
    }
}

/// `seconds` as "ETA 14 min".
pub fn format(seconds: f64) -> String {
    match seconds {
        l if l >= 3600.0 => format!("ETA {:.1} h", l / 3600.0),
        l if l >= 60.0 => format!("ETA {:.0} min", l / 60.0),
        l => format!("ETA {l:.0} s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let phase = |train, forward, test| PhaseWork {
            train,
            epochs: 2,
            cbf: 0,
            cbf_epochs: 0,
            forward,
            test,
        };
        Plan {
            phases: vec![phase(5000, 7000, 5000), phase(1100, 8200, 6000)],
        }
    }

    #[test]
    fn the_estimate_counts_images_not_epochs_and_includes_testing() {
        let rates = Rates {
            base: Some(0.01),
            incremental: Some(0.02),
            forward: Some(0.001),
        };
        // After the first base epoch: one more base epoch, the base phase's forward work,
        // then the whole incremental phase.
        let left = plan().remaining(0, Stage::Train, 0, rates).unwrap();
        let want = 5000.0 * 0.01 + 7000.0 * 0.001 + 2.0 * 1100.0 * 0.02 + 8200.0 * 0.001;
        assert!((left - want).abs() < 1e-9, "{left} vs {want}");
        // An epoch count would have said 3 epochs × 50 s = 150 s.
        assert!(left < 120.0);
        // After the last epoch only the forward work is left.
        let left = plan().remaining(1, Stage::Train, 1, rates).unwrap();
        assert!((left - 8.2).abs() < 1e-9, "{left}");
    }

    #[test]
    fn rates_not_yet_measured_are_derived() {
        let rates = Rates {
            base: Some(0.03),
            ..Rates::default()
        };
        let left = plan().remaining(0, Stage::Train, 1, rates).unwrap();
        let want = 7000.0 * 0.01 + 2.0 * 1100.0 * 0.04 + 8200.0 * 0.01;
        assert!((left - want).abs() < 1e-9, "{left} vs {want}");
        assert_eq!(plan().remaining(0, Stage::Train, 0, Rates::default()), None);
    }
}
