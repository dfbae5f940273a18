//! Mean cross-entropy of B×C logits against integer labels:
//! `L = −(1/B) Σ_b log softmax(z_b)[y_b]`, `∂z = (softmax(z) − onehot(y))/B`.

use lucir_tensor::{Float, Tensor};

use crate::ops::check_labels;
use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct CrossEntropyBack<T> {
    z: Var,
    log_p: Tensor<T>,
    labels: Vec<usize>,
}

impl<T: Float> Tape<T> {
    /// Mean cross-entropy; `labels[b]` indexes a column of `z`.
    pub fn cross_entropy(&mut self, z: Var, labels: &[usize]) -> Result<Var> {
        let [b, c] = self.value(z).dims2("cross_entropy")?;
        check_labels("cross_entropy", labels, b, c)?;
        let (loss, log_p) = lucir_tensor::cross_entropy(self.value(z), labels)?;
        let back = CrossEntropyBack {
            z,
            log_p,
            labels: labels.to_vec(),
        };
        Ok(self.push(loss, &[z], back))
    }
}

impl<T: Float> Backward<T> for CrossEntropyBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let dz = lucir_tensor::cross_entropy_bwd(&self.log_p, &self.labels, ctx.g())?;
        ctx.add(self.z, dz)
    }
}
