//! Global average pooling (N×C×H×W → N×C) and max pooling.

use lucir_tensor::{Float, MaxPoolArgmax, MaxPoolGeometry};

use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct GapBack {
    x: Var,
}

struct MaxPoolBack {
    x: Var,
    argmax: MaxPoolArgmax,
    geometry: MaxPoolGeometry,
}

impl<T: Float> Tape<T> {
    /// Mean over H×W per image and channel.
    pub fn global_avg_pool(&mut self, x: Var) -> Result<Var> {
        let y = lucir_tensor::global_avg_pool(self.value(x))?;
        Ok(self.push(y, &[x], GapBack { x }))
    }

    /// Max over square windows.
    pub fn max_pool2d(&mut self, x: Var, geometry: MaxPoolGeometry) -> Result<Var> {
        let (y, argmax) = lucir_tensor::max_pool2d(self.value(x), geometry)?;
        let back = MaxPoolBack {
            x,
            argmax,
            geometry,
        };
        Ok(self.push(y, &[x], back))
    }
}

impl<T: Float> Backward<T> for GapBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let dx = lucir_tensor::global_avg_pool_bwd(ctx.value(self.x).shape(), ctx.g())?;
        ctx.add(self.x, dx)
    }
}

impl<T: Float> Backward<T> for MaxPoolBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let shape = ctx.value(self.x).shape();
        let dx = lucir_tensor::max_pool2d_bwd(shape, &self.argmax, self.geometry, ctx.g())?;
        ctx.add(self.x, dx)
    }
}
