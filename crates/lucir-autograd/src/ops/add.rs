//! `y = a + b` (same shapes): the residual connection and the sum of loss terms.

use lucir_tensor::Float;

use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct AddBack {
    a: Var,
    b: Var,
}

impl<T: Float> Tape<T> {
    /// `a + b`.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = lucir_tensor::add(self.value(a), self.value(b))?;
        Ok(self.push(y, &[a, b], AddBack { a, b }))
    }
}

impl<T: Float> Backward<T> for AddBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let g = ctx.take_g();
        if ctx.wants(self.a) {
            ctx.add(self.a, g.clone())?;
        }
        ctx.add(self.b, g)
    }
}
