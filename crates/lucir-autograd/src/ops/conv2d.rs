//! 2-D convolution without bias (lucir-tensor's direct kernels or im2col + gemm), input
//! N×Ci×H×W, weight Co×Ci×KH×KW.

use lucir_tensor::{Conv2dGeometry, Float};

use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct Conv2dBack {
    x: Var,
    w: Var,
    geometry: Conv2dGeometry,
}

impl<T: Float> Tape<T> {
    /// `conv2d(x, w)` with the given stride and padding.
    pub fn conv2d(&mut self, x: Var, w: Var, geometry: Conv2dGeometry) -> Result<Var> {
        let y = lucir_tensor::conv2d(self.value(x), self.value(w), geometry)?;
        Ok(self.push(y, &[x, w], Conv2dBack { x, w, geometry }))
    }
}

impl<T: Float> Backward<T> for Conv2dBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        if ctx.wants(self.x) {
            // A block's input already holds the shortcut's gradient: add into it.
            let acc = ctx.take_grad(self.x);
            let (x, w, g) = (ctx.value(self.x), ctx.value(self.w), ctx.g());
            let (dx, dw) = match acc {
                Some(acc) => lucir_tensor::conv2d_bwd_add(x, w, g, self.geometry, acc)?,
                None => lucir_tensor::conv2d_bwd(x, w, g, self.geometry)?,
            };
            ctx.add(self.x, dx)?;
            ctx.add(self.w, dw)
        } else {
            let (x, w, g) = (ctx.value(self.x), ctx.value(self.w), ctx.g());
            let dw = lucir_tensor::conv2d_bwd_weight(x, w, g, self.geometry)?;
            ctx.add(self.w, dw)
        }
    }
}
