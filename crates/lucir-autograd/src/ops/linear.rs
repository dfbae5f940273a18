//! Fully connected layer `y = x·Wᵀ + b`: x B×D, W C×D, b C, y B×C.

use lucir_tensor::{add_row_bias, column_sums, matmul, Float, Transpose};

use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

struct LinearBack {
    x: Var,
    w: Var,
    b: Option<Var>,
}

impl<T: Float> Tape<T> {
    /// `x·Wᵀ (+ b)`.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        let mut y = matmul(self.value(x), Transpose::No, self.value(w), Transpose::Yes)?;
        let mut inputs = vec![x, w];
        if let Some(b) = b {
            let c = y.shape()[1];
            let bias = self.value(b);
            if bias.shape() != [c] {
                return Err(Error::invalid(
                    "linear",
                    format!("bias shape {:?} does not match {c} outputs", bias.shape()),
                ));
            }
            add_row_bias(&mut y, bias)?;
            inputs.push(b);
        }
        Ok(self.push(y, &inputs, LinearBack { x, w, b }))
    }
}

impl<T: Float> Backward<T> for LinearBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let g = ctx.g();
        let dx = ctx
            .wants(self.x)
            .then(|| matmul(g, Transpose::No, ctx.value(self.w), Transpose::No))
            .transpose()?;
        let dw = ctx
            .wants(self.w)
            .then(|| matmul(g, Transpose::Yes, ctx.value(self.x), Transpose::No))
            .transpose()?;
        let db = self.b.map(|_| column_sums(g)).transpose()?;
        if let Some(dx) = dx {
            ctx.add(self.x, dx)?;
        }
        if let Some(dw) = dw {
            ctx.add(self.w, dw)?;
        }
        if let (Some(b), Some(db)) = (self.b, db) {
            ctx.add(b, db)?;
        }
        Ok(())
    }
}
