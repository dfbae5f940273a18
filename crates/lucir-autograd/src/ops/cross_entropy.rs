//! Mean cross-entropy of B×C logits against integer labels:
//! `L = −(1/B) Σ_b log softmax(z_b)[y_b]`, `∂z = (softmax(z) − onehot(y))/B`.

use lucir_tensor::{log_softmax_rows, Float, Tensor};

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
        let log_p = log_softmax_rows(self.value(z))?;
        let lp = log_p.as_slice();
        let total: T = labels
            .iter()
            .enumerate()
            .map(|(r, &y)| -lp[r * c + y])
            .sum();
        let loss = Tensor::scalar(if b == 0 {
            T::zero()
        } else {
            total / T::of_usize(b)
        });
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
        let [b, c] = self.log_p.dims2("cross_entropy backward")?;
        let k = ctx.g().item()? / T::of_usize(b.max(1));
        let mut dz = self.log_p.map(|l| l.exp() * k);
        let d = dz.as_slice_mut();
        for (r, &y) in self.labels.iter().enumerate() {
            d[r * c + y] -= k;
        }
        ctx.add(self.z, dz)
    }
}
