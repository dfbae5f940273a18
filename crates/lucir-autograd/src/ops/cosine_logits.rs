//! Cosine similarity between features and class embeddings (LUCIR §3.2, docs/design.md §3):
//! `cos_bc = ⟨f̄_b, θ̄_c⟩`, f B×D, θ C×D, cos B×C. The scale σ is a separate op ([`Tape::scale`]),
//! so the margin-ranking loss can read the unscaled cosines.
//!
//! Backward with `H = ∂L/∂cos`: `g = H·θ̄`, `e = Hᵀ·f̄`, `∂f = (g − f̄⟨f̄, g⟩)/‖f‖`,
//! `∂θ = (e − θ̄⟨θ̄, e⟩)/‖θ‖`.

use lucir_tensor::{l2_normalize_rows, l2_normalize_rows_bwd, matmul, Float, Tensor, Transpose};

use crate::tape::Backward;
use crate::{BackwardCtx, Result, Tape, Var};

struct CosineLogitsBack<T> {
    f: Var,
    theta: Var,
    f_bar: Tensor<T>,
    f_norm: Tensor<T>,
    t_bar: Tensor<T>,
    t_norm: Tensor<T>,
}

impl<T: Float> Tape<T> {
    /// Cosine similarity matrix of the rows of `f` and `theta`.
    pub fn cosine_logits(&mut self, f: Var, theta: Var) -> Result<Var> {
        let (f_bar, f_norm) = l2_normalize_rows(self.value(f))?;
        let (t_bar, t_norm) = l2_normalize_rows(self.value(theta))?;
        let cos = matmul(&f_bar, Transpose::No, &t_bar, Transpose::Yes)?;
        let back = CosineLogitsBack {
            f,
            theta,
            f_bar,
            f_norm,
            t_bar,
            t_norm,
        };
        Ok(self.push(cos, &[f, theta], back))
    }
}

impl<T: Float> Backward<T> for CosineLogitsBack<T> {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        if ctx.wants(self.f) {
            let g = matmul(ctx.g(), Transpose::No, &self.t_bar, Transpose::No)?;
            let df = l2_normalize_rows_bwd(&self.f_bar, &self.f_norm, &g)?;
            ctx.add(self.f, df)?;
        }
        if ctx.wants(self.theta) {
            let e = matmul(ctx.g(), Transpose::Yes, &self.f_bar, Transpose::No)?;
            let dt = l2_normalize_rows_bwd(&self.t_bar, &self.t_norm, &e)?;
            ctx.add(self.theta, dt)?;
        }
        Ok(())
    }
}
