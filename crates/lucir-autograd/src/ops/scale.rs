//! `y = σ·x` with a learnable one-element σ (the cosine head's scale): `∂σ = Σ g⊙x`, `∂x = σ·g`.

use lucir_tensor::{dot, scale_by, Float};

use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

struct ScaleBack {
    x: Var,
    sigma: Var,
}

impl<T: Float> Tape<T> {
    /// `x·σ` for a one-element σ (the cosine classifier's learnable scale).
    pub fn scale(&mut self, x: Var, sigma: Var) -> Result<Var> {
        if self.value(sigma).len() != 1 {
            return Err(Error::invalid(
                "scale",
                format!(
                    "sigma must have one element, shape is {:?}",
                    self.value(sigma).shape()
                ),
            ));
        }
        let y = scale_by(self.value(x), self.value(sigma))?;
        Ok(self.push(y, &[x, sigma], ScaleBack { x, sigma }))
    }
}

impl<T: Float> Backward<T> for ScaleBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let x = ctx.value(self.x);
        let sigma = ctx.value(self.sigma);
        let ds = dot(ctx.g(), x)?.reshape(sigma.shape())?;
        let dx = scale_by(ctx.g(), sigma)?;
        ctx.add(self.sigma, ds)?;
        ctx.add(self.x, dx)
    }
}
