//! Knowledge distillation (iCaRL/LwF-style baselines): with temperature τ,
//! `p = softmax(t/τ)` (constant targets from the previous model), `q = softmax(z/τ)`,
//! `L = τ²·(1/B) Σ_b KL(p_b ‖ q_b)`, `∂z = τ·(q − p)/B`.

use lucir_tensor::{log_softmax_rows, Float, Tensor};

use crate::ops::host_only;
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
        host_only("kd", &[self.value(z), targets])?;
        let [b, _] = self.value(z).dims2("kd")?;
        targets.expect_shape("kd", self.value(z).shape())?;
        if tau.is_nan() || tau <= T::zero() {
            return Err(Error::invalid("kd", "temperature must be positive"));
        }
        let log_q = log_softmax_rows(&self.value(z).map(|v| v / tau))?;
        let log_p = log_softmax_rows(&targets.map(|v| v / tau))?;
        let kl: T = log_p
            .as_slice()
            .iter()
            .zip(log_q.as_slice())
            .map(|(lp, lq)| lp.exp() * (*lp - *lq))
            .sum();
        let loss = Tensor::scalar(if b == 0 {
            T::zero()
        } else {
            tau * tau * kl / T::of_usize(b)
        });
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
        let [b, _] = self.log_q.dims2("kd backward")?;
        let k = ctx.g().item()? * self.tau / T::of_usize(b.max(1));
        let data = self
            .log_q
            .as_slice()
            .iter()
            .zip(self.log_p.as_slice())
            .map(|(lq, lp)| (lq.exp() - lp.exp()) * k)
            .collect();
        let dz = Tensor::from_vec(self.log_q.shape(), data)?;
        ctx.add(self.z, dz)
    }
}
