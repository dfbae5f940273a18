//! Fully connected layer `y = x·Wᵀ + b`: x B×D, W C×D, b C, y B×C.

use lucir_tensor::{matmul, Float, Tensor, Transpose};

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
            let bias = bias.as_slice().to_vec();
            if c > 0 {
                for row in y.as_slice_mut().chunks_mut(c) {
                    for (v, bv) in row.iter_mut().zip(&bias) {
                        *v += *bv;
                    }
                }
            }
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
        let db = match self.b {
            Some(_) => {
                let [_, c] = g.dims2("linear backward")?;
                let mut s = vec![T::zero(); c];
                if c > 0 {
                    for row in g.as_slice().chunks(c) {
                        for (a, v) in s.iter_mut().zip(row) {
                            *a += *v;
                        }
                    }
                }
                Some(Tensor::from_vec(&[c], s)?)
            }
            None => None,
        };
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
