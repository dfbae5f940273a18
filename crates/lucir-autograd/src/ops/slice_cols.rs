//! Column slice `x[:, start..end]` of a B×C matrix (e.g. the old-class logits for distillation).

use lucir_tensor::Float;

use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

struct SliceColsBack {
    x: Var,
    start: usize,
}

impl<T: Float> Tape<T> {
    /// Columns `start..end` of `x`.
    pub fn slice_cols(&mut self, x: Var, start: usize, end: usize) -> Result<Var> {
        let [_, c] = self.value(x).dims2("slice_cols")?;
        if start > end || end > c {
            return Err(Error::invalid(
                "slice_cols",
                format!(
                    "columns {start}–{} outside 0–{}",
                    end.saturating_sub(1),
                    c.saturating_sub(1)
                ),
            ));
        }
        let y = lucir_tensor::slice_cols(self.value(x), start, end)?;
        Ok(self.push(y, &[x], SliceColsBack { x, start }))
    }
}

impl<T: Float> Backward<T> for SliceColsBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let [_, c] = ctx.value(self.x).dims2("slice_cols backward")?;
        let dx = lucir_tensor::slice_cols_bwd(ctx.g(), c, self.start)?;
        ctx.add(self.x, dx)
    }
}
