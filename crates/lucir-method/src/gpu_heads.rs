//! The LUCIR head ops on the GPU (docs/design.md §5): cosine similarity, margin ranking and the
//! less-forget loss, each recorded on the tape as a custom op whose forward and backward are the
//! `lucir-cuda` kernels. Values cross to the device and back per call; the rest of the step
//! (backbone, cross-entropy, σ) stays on the CPU.

use std::sync::Arc;

use lucir_autograd::{Tape, Var};
use lucir_cuda::Gpu;
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
    pub fn cosine(&self, tape: &mut Tape<f32>, f: Var, theta: Var) -> Result<Var> {
        let [b, d] = tape.value(f).dims2("cosine")?;
        let [c, _] = tape.value(theta).dims2("cosine")?;
        let fwd = self
            .gpu
            .cosine_logits_fwd(
                tape.value(f).as_slice(),
                tape.value(theta).as_slice(),
                1.0,
                [b, c, d],
            )
            .map_err(gpu_err)?;
        let cos = Tensor::from_vec(&[b, c], fwd.cos.clone())?;
        let gpu = self.gpu.clone();
        let cos_saved = fwd.cos;
        Ok(tape.custom(
            &[f, theta],
            cos,
            Box::new(move |g, inputs| {
                // With σ = 1 and the cos-gradient as G, H = ∂L/∂cos exactly.
                let bwd = gpu
                    .cosine_logits_bwd(
                        inputs[0].as_slice(),
                        inputs[1].as_slice(),
                        1.0,
                        g.as_slice(),
                        None,
                        &cos_saved,
                        [b, c, d],
                    )
                    .map_err(cuda)?;
                Ok(vec![
                    Some(Tensor::from_vec(&[b, d], bwd.df)?),
                    Some(Tensor::from_vec(&[c, d], bwd.dtheta)?),
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
        (n_old, k, margin): (usize, usize, f32),
    ) -> Result<Var> {
        let [b, c] = tape.value(cos).dims2("margin_rank")?;
        let loss = self
            .gpu
            .margin_rank_fwd(tape.value(cos).as_slice(), labels, n_old, k, margin, [b, c])
            .map_err(gpu_err)?;
        let (gpu, labels) = (self.gpu.clone(), labels.to_vec());
        Ok(tape.custom(
            &[cos],
            Tensor::scalar(loss),
            Box::new(move |g, inputs| {
                let dcos = gpu
                    .margin_rank_bwd(
                        inputs[0].as_slice(),
                        &labels,
                        n_old,
                        k,
                        margin,
                        g.item()?,
                        [b, c],
                    )
                    .map_err(cuda)?;
                Ok(vec![Some(Tensor::from_vec(&[b, c], dcos)?)])
            }),
        )?)
    }

    /// Less-forget loss λ·mean(1 − ⟨f̄, f̄*⟩) (see `Tape::less_forget`).
    pub fn less_forget(
        &self,
        tape: &mut Tape<f32>,
        f: Var,
        f_star: &Tensor<f32>,
        lambda: f32,
    ) -> Result<Var> {
        let [b, d] = tape.value(f).dims2("less_forget")?;
        f_star.expect_shape("less_forget", &[b, d])?;
        let loss = self
            .gpu
            .feature_distill_fwd(tape.value(f).as_slice(), f_star.as_slice(), lambda, [b, d])
            .map_err(gpu_err)?;
        let (gpu, star) = (self.gpu.clone(), f_star.as_slice().to_vec());
        Ok(tape.custom(
            &[f],
            Tensor::scalar(loss),
            Box::new(move |g, inputs| {
                let df = gpu
                    .feature_distill_bwd(inputs[0].as_slice(), &star, lambda, g.item()?, [b, d])
                    .map_err(cuda)?;
                Ok(vec![Some(Tensor::from_vec(&[b, d], df)?)])
            }),
        )?)
    }
}
