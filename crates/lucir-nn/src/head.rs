//! Classifier heads: the plain linear layer (baselines) and LUCIR's cosine-normalised
//! classifier, whole or split into an old-class and a new-class block (docs/design.md §3).

use lucir_autograd::{Param, Tape, Var};
use lucir_tensor::{Float, Tensor};

use crate::{Error, Init, Module, Result};

/// What a head produces: logits, and for cosine heads the unscaled cosines (which the
/// margin-ranking loss reads).
#[derive(Clone, Copy, Debug)]
pub struct HeadOut {
    /// `σ·cos` for cosine heads, `x·Wᵀ + b` for the linear head (B×C).
    pub logits: Var,
    /// The unscaled cosines (B×C), cosine heads only.
    pub cos: Option<Var>,
}

impl HeadOut {
    /// The output of a cosine head from its cosines (B×C) and σ: logits `σ·cos`, with the
    /// cosines kept for the margin-ranking loss.
    pub fn scaled_cosines<T: Float>(tape: &mut Tape<T>, cos: Var, sigma: Var) -> Result<Self> {
        Ok(Self {
            logits: tape.scale(cos, sigma)?,
            cos: Some(cos),
        })
    }
}

/// `y = x·Wᵀ + b` with PyTorch's default U(±1/√D) initialisation; W is C×D.
#[derive(Clone, Debug)]
pub struct Linear<T: Float> {
    /// C×D weights.
    pub weight: Param<T>,
    /// C biases.
    pub bias: Param<T>,
}

impl<T: Float> Linear<T> {
    /// A `d → c` linear layer.
    pub fn new(init: &mut Init, d: usize, c: usize) -> Self {
        let bound = 1.0 / (d.max(1) as f64).sqrt();
        Self {
            weight: Param::new(init.uniform(&[c, d], bound)),
            bias: Param::new(init.uniform(&[c], bound)),
        }
    }

    /// Records the layer on `x` (B×D).
    pub fn forward(&self, tape: &mut Tape<T>, x: Var) -> Result<HeadOut> {
        let w = tape.param(&self.weight);
        let b = tape.param(&self.bias);
        Ok(HeadOut {
            logits: tape.linear(x, w, Some(b))?,
            cos: None,
        })
    }
}

impl<T: Float> Module<T> for Linear<T> {
    fn params(&self) -> Vec<(String, &Param<T>)> {
        vec![("weight".into(), &self.weight), ("bias".into(), &self.bias)]
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param<T>)> {
        vec![
            ("weight".into(), &mut self.weight),
            ("bias".into(), &mut self.bias),
        ]
    }
}

/// The cosine classifier `z = σ·⟨θ̄_c, f̄⟩` (LUCIR §3.2), θ C×D initialised U(±1/√D), σ = 1.
#[derive(Clone, Debug)]
pub struct CosineLinear<T: Float> {
    /// Class embeddings θ, C×D.
    pub weight: Param<T>,
    /// The learnable scale σ, shape `[1]`.
    pub sigma: Param<T>,
}

impl<T: Float> CosineLinear<T> {
    /// A cosine head for `c` classes on `d`-dimensional features.
    pub fn new(init: &mut Init, d: usize, c: usize) -> Self {
        Self {
            weight: Param::new(init.uniform(&[c, d], 1.0 / (d.max(1) as f64).sqrt())),
            sigma: Param::new(Tensor::scalar(T::one())),
        }
    }

    /// Records the nodes of θ (C×D) and σ.
    pub fn theta_sigma(&self, tape: &mut Tape<T>) -> (Var, Var) {
        (tape.param(&self.weight), tape.param(&self.sigma))
    }

    /// Records the head on features `f` (B×D).
    pub fn forward(&self, tape: &mut Tape<T>, f: Var) -> Result<HeadOut> {
        let (theta, sigma) = self.theta_sigma(tape);
        let cos = tape.cosine_logits(f, theta)?;
        HeadOut::scaled_cosines(tape, cos, sigma)
    }
}

impl<T: Float> Module<T> for CosineLinear<T> {
    fn params(&self) -> Vec<(String, &Param<T>)> {
        vec![
            ("weight".into(), &self.weight),
            ("sigma".into(), &self.sigma),
        ]
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param<T>)> {
        vec![
            ("weight".into(), &mut self.weight),
            ("sigma".into(), &mut self.sigma),
        ]
    }
}

/// The cosine classifier split into the old classes' block (copied from the previous phase, to
/// be frozen by its optimizer group) and the new classes' block, sharing one σ (docs/design.md §3).
/// Class `c < old.rows` is row `c` of the old block; the rest follow in the new block.
#[derive(Clone, Debug)]
pub struct SplitCosineLinear<T: Float> {
    /// Old class embeddings, Co×D.
    pub old: Param<T>,
    /// New class embeddings, Cn×D.
    pub new: Param<T>,
    /// The shared scale σ, shape `[1]`.
    pub sigma: Param<T>,
}

impl<T: Float> SplitCosineLinear<T> {
    /// Splits off `new_classes` freshly initialised rows after the classes of `previous`.
    pub fn grow(previous: &CosineLinear<T>, init: &mut Init, new_classes: usize) -> Result<Self> {
        let [_, d] = previous.weight.value.dims2("SplitCosineLinear::grow")?;
        if new_classes == 0 {
            return Err(Error::Config(
                "a split cosine head needs at least one new class".into(),
            ));
        }
        Ok(Self {
            old: Param::new(previous.weight.value.clone()),
            new: Param::new(init.uniform(&[new_classes, d], 1.0 / (d.max(1) as f64).sqrt())),
            sigma: Param::new(previous.sigma.value.clone()),
        })
    }

    /// Number of old classes.
    pub fn old_classes(&self) -> usize {
        self.old.value.shape()[0]
    }

    /// Records the nodes of θ (all class embeddings, old block then new, C×D) and σ.
    pub fn theta_sigma(&self, tape: &mut Tape<T>) -> Result<(Var, Var)> {
        let old = tape.param(&self.old);
        let new = tape.param(&self.new);
        let sigma = tape.param(&self.sigma);
        Ok((tape.concat_rows(old, new)?, sigma))
    }

    /// Records the head on features `f` (B×D); logits cover old then new classes.
    pub fn forward(&self, tape: &mut Tape<T>, f: Var) -> Result<HeadOut> {
        let (theta, sigma) = self.theta_sigma(tape)?;
        let cos = tape.cosine_logits(f, theta)?;
        HeadOut::scaled_cosines(tape, cos, sigma)
    }

    /// Merges the two blocks into one cosine head (at the end of a phase).
    pub fn merge(&self) -> Result<CosineLinear<T>> {
        let [co, d] = self.old.value.dims2("SplitCosineLinear::merge")?;
        let [cn, _] = self.new.value.dims2("SplitCosineLinear::merge")?;
        let mut data = self.old.value.as_slice().to_vec();
        data.extend_from_slice(self.new.value.as_slice());
        Ok(CosineLinear {
            weight: Param::new(Tensor::from_vec(&[co + cn, d], data)?),
            sigma: Param::new(self.sigma.value.clone()),
        })
    }
}

impl<T: Float> Module<T> for SplitCosineLinear<T> {
    fn params(&self) -> Vec<(String, &Param<T>)> {
        vec![
            ("old".into(), &self.old),
            ("new".into(), &self.new),
            ("sigma".into(), &self.sigma),
        ]
    }
    fn params_mut(&mut self) -> Vec<(String, &mut Param<T>)> {
        vec![
            ("old".into(), &mut self.old),
            ("new".into(), &mut self.new),
            ("sigma".into(), &mut self.sigma),
        ]
    }
}
