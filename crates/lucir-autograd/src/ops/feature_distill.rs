//! Feature distillation, the loss of LUCIR's less-forget constraint (L_dis^G, §3.2, Eq. 6;
//! docs/design.md §3):
//! `L_LF = λ·(1/B) Σ_b (1 − ⟨f̄_b, f̄*_b⟩)` with f B×D the current features and f* B×D the frozen
//! previous model's (a constant: no gradient flows into it).
//! `∂f_b = −(λ/B)·(f̄*_b − f̄_b⟨f̄_b, f̄*_b⟩)/‖f_b‖`.

use lucir_tensor::{l2_normalize_rows, l2_normalize_rows_bwd, Float, Tensor};

use crate::ops::dot;
use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct FeatureDistillBack<T> {
    f: Var,
    f_bar: Tensor<T>,
    f_norm: Vec<T>,
    star_bar: Tensor<T>,
    lambda: T,
}

impl<T: Float> Tape<T> {
    /// Feature-distillation (less-forget) loss of features `f` against the previous model's
    /// features `f_star`.
    pub fn feature_distill(&mut self, f: Var, f_star: &Tensor<T>, lambda: T) -> Result<Var> {
        let [b, d] = self.value(f).dims2("feature_distill")?;
        f_star.expect_shape("feature_distill", &[b, d])?;
        let (f_bar, f_norm) = l2_normalize_rows(self.value(f))?;
        let (star_bar, _) = l2_normalize_rows(f_star)?;
        let total: T = if d == 0 {
            T::of_usize(b)
        } else {
            f_bar
                .as_slice()
                .chunks(d)
                .zip(star_bar.as_slice().chunks(d))
                .map(|(x, y)| T::one() - dot(x, y))
                .sum()
        };
        let loss = Tensor::scalar(if b == 0 {
            T::zero()
        } else {
            lambda * total / T::of_usize(b)
        });
        let back = FeatureDistillBack {
            f,
            f_bar,
            f_norm,
            star_bar,
            lambda,
        };
        Ok(self.push(loss, &[f], back))
    }
}

impl<T: Float> Backward<T> for FeatureDistillBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let [b, _] = self.f_bar.dims2("feature_distill backward")?;
        let k = -self.lambda * ctx.g().item()? / T::of_usize(b.max(1));
        // ∂L/∂f̄ = k·f̄*, then through the row normalisation.
        let g_bar = self.star_bar.map(|v| v * k);
        let df = l2_normalize_rows_bwd(&self.f_bar, &self.f_norm, &g_bar)?;
        ctx.add(self.f, df)
    }
}
