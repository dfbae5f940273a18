//! Knowledge distillation (iCaRL/LwF-style baselines): with temperature τ,
//! `p = softmax(t/τ)` (constant targets from the previous model), `q = softmax(z/τ)`,
//! `L = τ²·(1/B) Σ_b KL(p_b ‖ q_b)`, `∂z = τ·(q − p)/B`.

use lucir_tensor::{Float, Tensor};

use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

struct KdBack<T> {
    z: Var,
    log_q: Tensor<T>,
    log_p: Tensor<T>,
    tau: T,
}

impl<T: Float> Tape<T> {
    /// Distillation loss of logits `z` (B×C) towards target logits `targets` (B×C).
    pub fn kd(&mut self, z: Var, targets: &Tensor<T>, tau: T) -> Result<Var> {
        self.value(z).dims2("kd")?;
        targets.expect_shape("kd", self.value(z).shape())?;
        if tau.is_nan() || tau <= T::zero() {
            return Err(Error::invalid("kd", "temperature must be positive"));
        }
        let (loss, log_q, log_p) = lucir_tensor::kd(self.value(z), targets, tau)?;
        let back = KdBack {
            z,
            log_q,
            log_p,
            tau,
        };
        Ok(self.push(loss, &[z], back))
    }
}

impl<T: Float> Backward<T> for KdBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let dz = lucir_tensor::kd_bwd(&self.log_q, &self.log_p, self.tau, ctx.g())?;
        ctx.add(self.z, dz)
    }
}
