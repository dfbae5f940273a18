//! Row L2 normalisation of a B×D matrix: `v̄ = v / max(‖v‖, ε)`.

use lucir_tensor::{Float, Tensor};

use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct NormalizeBack<T> {
    x: Var,
    y: Var,
    norms: Tensor<T>,
}

impl<T: Float> Tape<T> {
    /// Normalises each row to unit L2 norm.
    pub fn l2_normalize_rows(&mut self, x: Var) -> Result<Var> {
        let (y, norms) = lucir_tensor::l2_normalize_rows(self.value(x))?;
        let out = Var(self.len());
        Ok(self.push(y, &[x], NormalizeBack { x, y: out, norms }))
    }
}

impl<T: Float> Backward<T> for NormalizeBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let dx = lucir_tensor::l2_normalize_rows_bwd(ctx.value(self.y), &self.norms, ctx.g())?;
        ctx.add(self.x, dx)
    }
}
