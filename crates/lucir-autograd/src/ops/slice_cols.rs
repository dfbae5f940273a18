//! Column slice `x[:, start..end]` of a B×C matrix (e.g. the old-class logits for distillation).

use lucir_tensor::{Float, Tensor};

use crate::ops::host_only;
use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

struct SliceColsBack {
    x: Var,
    start: usize,
    end: usize,
}

impl<T: Float> Tape<T> {
    /// Columns `start..end` of `x`.
    pub fn slice_cols(&mut self, x: Var, start: usize, end: usize) -> Result<Var> {
        host_only("slice_cols", &[self.value(x)])?;
        let [b, c] = self.value(x).dims2("slice_cols")?;
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
        let w = end - start;
        let mut data = Vec::with_capacity(b * w);
        for r in 0..b {
            data.extend_from_slice(&self.value(x).as_slice()[r * c + start..r * c + end]);
        }
        let y = Tensor::from_vec(&[b, w], data)?;
        Ok(self.push(y, &[x], SliceColsBack { x, start, end }))
    }
}

impl<T: Float> Backward<T> for SliceColsBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let [b, c] = ctx.value(self.x).dims2("slice_cols backward")?;
        let w = self.end - self.start;
        let mut dx = Tensor::zeros(&[b, c]);
        let g = ctx.g().as_slice();
        let d = dx.as_slice_mut();
        for r in 0..b {
            d[r * c + self.start..r * c + self.end].copy_from_slice(&g[r * w..(r + 1) * w]);
        }
        ctx.add(self.x, dx)
    }
}
