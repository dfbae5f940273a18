//! `y = max(x, 0)`; the backward passes `dy` where `y > 0`.

use lucir_tensor::Float;

use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct ReluBack {
    x: Var,
    y: Var,
}

impl<T: Float> Tape<T> {
    /// ReLU.
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        let y = lucir_tensor::relu(self.value(x))?;
        let out = Var(self.len());
        Ok(self.push(y, &[x], ReluBack { x, y: out }))
    }
}

impl<T: Float> Backward<T> for ReluBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let g = ctx.take_g();
        let dx = lucir_tensor::relu_bwd(ctx.value(self.y), g)?;
        ctx.add(self.x, dx)
    }
}
