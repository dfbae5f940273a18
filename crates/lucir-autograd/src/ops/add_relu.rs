//! `y = max(a + b, 0)` fused (the end of a residual block); the backward masks the output
//! gradient by `y > 0` once and hands it to both inputs.

use lucir_tensor::Float;

use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct AddReluBack {
    a: Var,
    b: Var,
    y: Var,
}

impl<T: Float> Tape<T> {
    /// `max(a + b, 0)`.
    pub fn add_relu(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = lucir_tensor::add_relu(self.value(a), self.value(b))?;
        let out = Var(self.len());
        Ok(self.push(y, &[a, b], AddReluBack { a, b, y: out }))
    }
}

impl<T: Float> Backward<T> for AddReluBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let g = ctx.take_g();
        let g = lucir_tensor::relu_bwd(ctx.value(self.y), g)?;
        if ctx.wants(self.a) {
            ctx.add(self.a, g.clone())?;
        }
        ctx.add(self.b, g)
    }
}
