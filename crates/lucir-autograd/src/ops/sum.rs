//! Reduction to a scalar: `Σ x⊙r` with a constant weight tensor r (gradient checks use it to
//! turn any output into a scalar loss).

use lucir_tensor::{Float, Tensor};

use crate::ops::dot;
use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct SumWeightedBack<T> {
    x: Var,
    weights: Tensor<T>,
}

impl<T: Float> Tape<T> {
    /// `Σ_j x_j·r_j`, a one-element tensor; `r` has the shape of `x`.
    pub fn sum_weighted(&mut self, x: Var, weights: Tensor<T>) -> Result<Var> {
        weights.expect_shape("sum_weighted", self.value(x).shape())?;
        let y = Tensor::scalar(dot(self.value(x).as_slice(), weights.as_slice()));
        Ok(self.push(y, &[x], SumWeightedBack { x, weights }))
    }
}

impl<T: Float> Backward<T> for SumWeightedBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let g = ctx.g().item()?;
        let dx = self.weights.map(|r| r * g);
        ctx.add(self.x, dx)
    }
}
