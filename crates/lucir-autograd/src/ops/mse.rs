//! Mean squared error `L = (1/n) Σ (a − b)²` over all n elements; both sides may carry gradients.

use lucir_tensor::{Float, Tensor};

use crate::ops::host_only;
use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct MseBack {
    a: Var,
    b: Var,
}

impl<T: Float> Tape<T> {
    /// Mean squared difference of two same-shaped tensors.
    pub fn mse(&mut self, a: Var, b: Var) -> Result<Var> {
        host_only("mse", &[self.value(a), self.value(b)])?;
        self.value(b).expect_shape("mse", self.value(a).shape())?;
        let n = self.value(a).len().max(1);
        let s: T = self
            .value(a)
            .as_slice()
            .iter()
            .zip(self.value(b).as_slice())
            .map(|(x, y)| (*x - *y) * (*x - *y))
            .sum();
        let loss = Tensor::scalar(s / T::of_usize(n));
        Ok(self.push(loss, &[a, b], MseBack { a, b }))
    }
}

impl<T: Float> Backward<T> for MseBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let (a, b) = (ctx.value(self.a), ctx.value(self.b));
        let k = T::of(2.0) * ctx.g().item()? / T::of_usize(a.len().max(1));
        let data: Vec<T> = a
            .as_slice()
            .iter()
            .zip(b.as_slice())
            .map(|(x, y)| (*x - *y) * k)
            .collect();
        let da = Tensor::from_vec(a.shape(), data)?;
        let db = da.map(|v| -v);
        ctx.add(self.a, da)?;
        ctx.add(self.b, db)
    }
}
