//! The LUCIR head ops on the GPU (docs/design.md §5): cosine logits, margin ranking and feature
//! distillation (the less-forget loss), each recorded on the tape as a custom op whose forward
//! and backward are the `lucir-cuda` kernels. A forward uploads its inputs and downloads its
//! output; what the backward needs stays on the device inside the op's backward closure, so the
//! backward uploads only the upstream gradient. The rest of the step (backbone, cross-entropy,
//! σ) stays on the CPU.

use std::sync::Arc;

use lucir_autograd::{Tape, Var};
use lucir_cuda::{Gpu, MarginRankArgs};
use lucir_tensor::Tensor;

use crate::{Error, Result};

fn cuda(e: lucir_cuda::Error) -> lucir_autograd::Error {
    lucir_autograd::Error::Invalid {
        op: "cuda",
        detail: e.to_string(),
    }
}

fn gpu_err(e: lucir_cuda::Error) -> Error {
    Error::Cuda(e.to_string())
}

/// The head ops of one GPU.
#[derive(Debug, Clone)]
pub struct GpuHeads {
    gpu: Arc<Gpu>,
}

impl GpuHeads {
    /// Wraps an opened device.
    pub fn new(gpu: Gpu) -> Self {
        Self { gpu: Arc::new(gpu) }
    }

    /// The device's name.
    pub fn name(&self) -> String {
        self.gpu.name()
    }

    /// `cos = F̄·Θ̄ᵀ` (B×C) of features `f` (B×D) and embeddings `theta` (C×D).
    pub fn cosine_logits(&self, tape: &mut Tape<f32>, f: Var, theta: Var) -> Result<Var> {
        let [b, d] = tape.value(f).dims2("cosine_logits")?;
        let [c, _] = tape.value(theta).dims2("cosine_logits")?;
        let (fv, tv) = (tape.value(f).as_slice(), tape.value(theta).as_slice());
        let fwd = self
            .gpu
            .cosine_logits_fwd(fv, tv, 1.0, [b, c, d])
            .map_err(gpu_err)?;
        let cos = Tensor::from_vec(&[b, c], fwd.cos(&self.gpu).map_err(gpu_err)?)?;
        let gpu = self.gpu.clone();
        Ok(tape.custom(
            &[f, theta],
            cos,
            Box::new(move |g, _| {
                // With σ = 1 and the cos-gradient as G, H = ∂L/∂cos exactly; σ's own gradient
                // is the CPU scale op's.
                let grads = gpu
                    .cosine_logits_bwd(&fwd, g.as_slice(), None, false)
                    .map_err(cuda)?;
                Ok(vec![
                    Some(Tensor::from_vec(&[b, d], grads.df)?),
                    Some(Tensor::from_vec(&[c, d], grads.dtheta)?),
                ])
            }),
        )?)
    }

    /// Margin-ranking loss on the unscaled cosines (see `Tape::margin_rank`).
    pub fn margin_rank(
        &self,
        tape: &mut Tape<f32>,
        cos: Var,
        labels: &[usize],
        args: MarginRankArgs,
    ) -> Result<Var> {
        let [b, c] = tape.value(cos).dims2("margin_rank")?;
        let fwd = self
            .gpu
            .margin_rank_fwd(tape.value(cos).as_slice(), labels, args, [b, c])
            .map_err(gpu_err)?;
        let gpu = self.gpu.clone();
        Ok(tape.custom(
            &[cos],
            Tensor::scalar(fwd.loss),
            Box::new(move |g, _| {
                let dcos = gpu.margin_rank_bwd(&fwd, g.item()?).map_err(cuda)?;
                Ok(vec![Some(Tensor::from_vec(&[b, c], dcos)?)])
            }),
        )?)
    }

    /// Feature-distillation (less-forget) loss λ·mean(1 − ⟨f̄, f̄*⟩) (see
    /// `Tape::feature_distill`).
    pub fn feature_distill(
        &self,
        tape: &mut Tape<f32>,
        f: Var,
        f_star: &Tensor<f32>,
        lambda: f32,
    ) -> Result<Var> {
        let [b, d] = tape.value(f).dims2("feature_distill")?;
        f_star.expect_shape("feature_distill", &[b, d])?;
        let fwd = self
            .gpu
            .feature_distill_fwd(tape.value(f).as_slice(), f_star.as_slice(), lambda, [b, d])
            .map_err(gpu_err)?;
        let gpu = self.gpu.clone();
        Ok(tape.custom(
            &[f],
            Tensor::scalar(fwd.loss),
            Box::new(move |g, _| {
                let df = gpu.feature_distill_bwd(&fwd, g.item()?).map_err(cuda)?;
                Ok(vec![Some(Tensor::from_vec(&[b, d], df)?)])
            }),
        )?)
    }
}
