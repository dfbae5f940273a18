//! Row concatenation `[a; b]` of two matrices with equal widths (R1×D, R2×D → (R1+R2)×D): how
//! the split cosine head joins its old and new class blocks.

use lucir_tensor::Float;

use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

struct ConcatRowsBack {
    a: Var,
    b: Var,
    rows: usize,
}

impl<T: Float> Tape<T> {
    /// Stacks the rows of `b` under those of `a`.
    pub fn concat_rows(&mut self, a: Var, b: Var) -> Result<Var> {
        let [ra, da] = self.value(a).dims2("concat_rows")?;
        let [_, db] = self.value(b).dims2("concat_rows")?;
        if da != db {
            return Err(Error::invalid(
                "concat_rows",
                format!("widths differ: {da} and {db}"),
            ));
        }
        let y = lucir_tensor::concat_rows(self.value(a), self.value(b))?;
        Ok(self.push(y, &[a, b], ConcatRowsBack { a, b, rows: ra }))
    }
}

impl<T: Float> Backward<T> for ConcatRowsBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let (da, db) = lucir_tensor::split_rows(ctx.g(), self.rows)?;
        ctx.add(self.a, da)?;
        ctx.add(self.b, db)
    }
}
