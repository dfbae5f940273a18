//! Row concatenation `[a; b]` of two matrices with equal widths (R1×D, R2×D → (R1+R2)×D): how
//! the split cosine head joins its old and new class blocks.

use lucir_tensor::{Float, Tensor};

use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

struct ConcatRowsBack {
    a: Var,
    b: Var,
    split: usize,
}

impl<T: Float> Tape<T> {
    /// Stacks the rows of `b` under those of `a`.
    pub fn concat_rows(&mut self, a: Var, b: Var) -> Result<Var> {
        let [ra, da] = self.value(a).dims2("concat_rows")?;
        let [rb, db] = self.value(b).dims2("concat_rows")?;
        if da != db {
            return Err(Error::invalid(
                "concat_rows",
                format!("widths differ: {da} and {db}"),
            ));
        }
        let mut data = self.value(a).as_slice().to_vec();
        data.extend_from_slice(self.value(b).as_slice());
        let y = Tensor::from_vec(&[ra + rb, da], data)?;
        Ok(self.push(
            y,
            &[a, b],
            ConcatRowsBack {
                a,
                b,
                split: ra * da,
            },
        ))
    }
}

impl<T: Float> Backward<T> for ConcatRowsBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let (ga, gb) = ctx.g().as_slice().split_at(self.split);
        let da = Tensor::from_vec(ctx.value(self.a).shape(), ga.to_vec())?;
        let db = Tensor::from_vec(ctx.value(self.b).shape(), gb.to_vec())?;
        ctx.add(self.a, da)?;
        ctx.add(self.b, db)
    }
}
