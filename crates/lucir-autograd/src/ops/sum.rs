//! Reduction to a scalar: `Σ x⊙r` with a constant weight tensor r (gradient checks use it to
//! turn any output into a scalar loss).

use lucir_tensor::{dot, scale_by, Float, Tensor};

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
        let y = dot(self.value(x), &weights)?;
        Ok(self.push(y, &[x], SumWeightedBack { x, weights }))
    }
}

impl<T: Float> Backward<T> for SumWeightedBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let dx = scale_by(&self.weights, ctx.g())?;
        ctx.add(self.x, dx)
    }
}
