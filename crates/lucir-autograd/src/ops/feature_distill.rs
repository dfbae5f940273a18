//! Feature distillation, the loss of LUCIR's less-forget constraint (L_dis^G, §3.2, Eq. 6;
//! docs/design.md §3):
//! `L_LF = λ·(1/B) Σ_b (1 − ⟨f̄_b, f̄*_b⟩)` with f B×D the current features and f* B×D the frozen
//! previous model's (a constant: no gradient flows into it).
//! `∂f_b = −(λ/B)·(f̄*_b − f̄_b⟨f̄_b, f̄*_b⟩)/‖f_b‖`.

use lucir_tensor::{Float, Tensor};

use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct FeatureDistillBack<T> {
    f: Var,
    f_star: Tensor<T>,
    lambda: T,
}

impl<T: Float> Tape<T> {
    /// The less-forget loss of features `f` against the previous model's `f_star` (a
    /// constant) with weight `lambda`.
    pub fn feature_distill(&mut self, f: Var, f_star: &Tensor<T>, lambda: T) -> Result<Var> {
        let loss = lucir_tensor::feature_distill(self.value(f), f_star, lambda)?;
        let back = FeatureDistillBack {
            f,
            f_star: f_star.clone(),
            lambda,
        };
        Ok(self.push(loss, &[f], back))
    }
}

impl<T: Float> Backward<T> for FeatureDistillBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let f = ctx.value(self.f);
        let df = lucir_tensor::feature_distill_bwd(f, &self.f_star, self.lambda, ctx.g())?;
        ctx.add(self.f, df)
    }
}
