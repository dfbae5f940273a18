//! Row-wise log-softmax of B×C logits.

use lucir_tensor::Float;

use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct LogSoftmaxBack {
    x: Var,
    y: Var,
}

impl<T: Float> Tape<T> {
    /// `z − logsumexp(z)` per row.
    pub fn log_softmax(&mut self, x: Var) -> Result<Var> {
        let y = lucir_tensor::log_softmax_rows(self.value(x))?;
        let out = Var(self.len());
        Ok(self.push(y, &[x], LogSoftmaxBack { x, y: out }))
    }
}

impl<T: Float> Backward<T> for LogSoftmaxBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let dx = lucir_tensor::log_softmax_rows_bwd(ctx.value(self.y), ctx.g())?;
        ctx.add(self.x, dx)
    }
}
