//! Method settings: which method, which LUCIR components, and the hyper-parameters
//! (docs/design.md §3 "Optimisation", §4).

use lucir_data::MemoryBudget;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The learning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// LUCIR (with its components switchable for ablations).
    Lucir,
    /// Plain fine-tuning with exemplars: linear head, cross-entropy only.
    Finetune,
    /// iCaRL-style: linear head, CE + distillation of the old logits (τ = 2), NME evaluation.
    Icarl,
}

/// The backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// CIFAR ResNet-20.
    Resnet20,
    /// CIFAR ResNet-32.
    Resnet32,
    /// CIFAR ResNet-56.
    Resnet56,
    /// ResNet-18 (ImageNet layout).
    Resnet18,
}

/// Everything the learner needs to know about how to learn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// Method.
    pub method: Method,
    /// Backbone.
    pub arch: Arch,
    /// Cosine-normalised classifier (LUCIR §3.2); off means a linear head.
    pub cosine: bool,
    /// Less-forget constraint.
    pub less_forget: bool,
    /// λ = λ_base·√(|Co|/|Cn|); off means λ = λ_base.
    pub adaptive_lambda: bool,
    /// Margin-ranking loss.
    pub margin_rank: bool,
    /// Imprint new-class embeddings.
    pub imprint: bool,
    /// Class-balanced fine-tuning after each incremental phase.
    pub cbf: bool,
    /// λ_base.
    pub lambda_base: f64,
    /// Margin m.
    pub margin: f64,
    /// K hard negatives.
    pub k: usize,
    /// Learning rate of every phase.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Epochs per phase.
    pub epochs: usize,
    /// Epochs after which the learning rate is multiplied by 0.1; `None`: at 1/2 and 3/4 of
    /// `epochs` (LUCIR's 80 and 120 of 160).
    #[serde(default)]
    pub milestones: Option<Vec<usize>>,
    /// Batch size.
    pub batch: usize,
    /// Exemplar budget.
    pub memory: MemoryBudget,
    /// Distillation temperature (iCaRL baseline).
    pub kd_temperature: f64,
    /// Class-balanced fine-tuning epochs.
    pub cbf_epochs: usize,
    /// Class-balanced fine-tuning learning rate.
    pub cbf_lr: f64,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
}

impl MethodConfig {
    /// LUCIR's CIFAR settings with `epochs` per phase.
    pub fn lucir(arch: Arch, epochs: usize) -> Self {
        Self {
            method: Method::Lucir,
            arch,
            cosine: true,
            less_forget: true,
            adaptive_lambda: true,
            margin_rank: true,
            imprint: true,
            cbf: false,
            lambda_base: 5.0,
            margin: 0.5,
            k: 2,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            epochs,
            milestones: None,
            batch: 128,
            memory: MemoryBudget::PerClass(20),
            kd_temperature: 2.0,
            cbf_epochs: 20,
            cbf_lr: 0.01,
            seed: 1993,
        }
    }

    /// The epochs after which the learning rate drops ×0.1: `milestones`, or 1/2 and 3/4 of
    /// `epochs`.
    pub fn lr_milestones(&self) -> Vec<usize> {
        match &self.milestones {
            Some(m) => m.clone(),
            None => lucir_autograd::MultiStepLr::lucir(self.lr, self.epochs).milestones,
        }
    }

    /// Whether the head is cosine-normalised (LUCIR with `cosine`; the baselines use linear).
    pub fn cosine_head(&self) -> bool {
        self.method == Method::Lucir && self.cosine
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("batch must be at least 1".into());
        }
        if let Some(ms) = &self.milestones {
            // A repeated milestone decays twice there, as PyTorch's MultiStepLR does.
            if ms.windows(2).any(|w| w[0] > w[1]) || ms.iter().any(|&m| m == 0 || m >= self.epochs)
            {
                return bad(format!(
                    "milestones {ms:?} must not decrease and must lie between 1 and {} (epochs = \
                     {})",
                    self.epochs - 1,
                    self.epochs
                ));
            }
        }
        if self.k == 0 && self.margin_rank && self.method == Method::Lucir {
            return bad("k must be at least 1 (or drop the margin loss with --no-margin)".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("lr must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        let non_negative = [
            ("weight_decay", self.weight_decay),
            ("lambda_base", self.lambda_base),
            ("margin", self.margin),
        ];
        if let Some((name, v)) = non_negative
            .iter()
            .find(|(_, v)| !(*v >= 0.0 && v.is_finite()))
        {
            return bad(format!("{name} must be ≥ 0, got {v}"));
        }
        if !(self.kd_temperature > 0.0 && self.kd_temperature.is_finite()) {
            return bad(format!(
                "kd_temperature must be positive, got {}",
                self.kd_temperature
            ));
        }
        if self.cbf && self.cbf_epochs == 0 {
            return bad("cbf_epochs must be at least 1 with class-balanced fine-tuning".into());
        }
        if !(self.cbf_lr > 0.0 && self.cbf_lr.is_finite()) {
            return bad(format!("cbf_lr must be positive, got {}", self.cbf_lr));
        }
        if let MemoryBudget::PerClass(0) | MemoryBudget::Total(0) = self.memory {
            return bad("the exemplar memory must hold at least one exemplar".into());
        }
        Ok(())
    }
}

/// λ of an incremental phase with `old` old and `new` new classes (docs/design.md §3: the authors'
/// code and numbers use √(|Co|/|Cn|); the paper's printed Eq. 7 has the ratio inverted).
pub fn adaptive_lambda(cfg: &MethodConfig, old: usize, new: usize) -> f64 {
    if !cfg.less_forget || cfg.method != Method::Lucir || old == 0 || new == 0 {
        return 0.0;
    }
    if cfg.adaptive_lambda {
        cfg.lambda_base * (old as f64 / new as f64).sqrt()
    } else {
        cfg.lambda_base
    }
}
