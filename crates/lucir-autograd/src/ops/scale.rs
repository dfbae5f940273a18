//! `y = σ·x` with a learnable one-element σ (the cosine head's scale): `∂σ = Σ g⊙x`, `∂x = σ·g`.

use lucir_tensor::Float;

use crate::ops::dot;
use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

struct ScaleBack {
    x: Var,
    sigma: Var,
}

impl<T: Float> Tape<T> {
    /// Multiplies `x` by the one-element `sigma`.
    pub fn scale(&mut self, x: Var, sigma: Var) -> Result<Var> {
        let s = self.value(sigma).item().map_err(|_| {
            Error::invalid(
                "scale",
                format!(
                    "sigma must have one element, shape is {:?}",
                    self.value(sigma).shape()
                ),
            )
        })?;
        let y = self.value(x).map(|v| v * s);
        Ok(self.push(y, &[x, sigma], ScaleBack { x, sigma }))
    }
}

impl<T: Float> Backward<T> for ScaleBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let x = ctx.value(self.x);
        let sigma = ctx.value(self.sigma);
        let ds = sigma.map(|_| dot(ctx.g().as_slice(), x.as_slice()));
        let s = sigma.item()?;
        let dx = ctx.g().map(|v| v * s);
        ctx.add(self.sigma, ds)?;
        ctx.add(self.x, dx)
    }
}
