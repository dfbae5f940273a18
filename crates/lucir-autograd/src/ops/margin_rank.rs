//! Inter-class separation by margin ranking (LUCIR §3.3, Eq. 8; docs/design.md §3), on the unscaled
//! cosines `cos` (B×C, classes 0..n_old are old). For each row b whose label is old,
//! `s⁺ = cos[b, y_b]` and `s_1..s_K` are its K = min(k, C − n_old) largest new-class cosines;
//! `L = (1/P) Σ_{b,k} max(0, m − s⁺ + s_k)` with P = (old rows)·K, and 0 when P = 0.
//! Each active pair (term > 0) sends −1/P into `cos[b, y_b]` and +1/P into `cos[b, k]`.

use lucir_tensor::{Float, MarginRankPairs};

use crate::ops::check_labels;
use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

struct MarginRankBack {
    cos: Var,
    labels: Vec<usize>,
    state: MarginRankPairs,
}

impl<T: Float> Tape<T> {
    /// Margin ranking of the cosines `cos` (B×C) of old-class rows against their K hardest
    /// new classes (`n_old` old classes, margin `m`).
    pub fn margin_rank(
        &mut self,
        cos: Var,
        labels: &[usize],
        n_old: usize,
        k: usize,
        m: T,
    ) -> Result<Var> {
        let [b, c] = self.value(cos).dims2("margin_rank")?;
        check_labels("margin_rank", labels, b, c)?;
        if n_old > c {
            return Err(Error::invalid(
                "margin_rank",
                format!("{n_old} old classes but only {c} columns"),
            ));
        }
        let (loss, state) = lucir_tensor::margin_rank(self.value(cos), labels, (n_old, k, m))?;
        let back = MarginRankBack {
            cos,
            labels: labels.to_vec(),
            state,
        };
        Ok(self.push(loss, &[cos], back))
    }
}

impl<T: Float> Backward<T> for MarginRankBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        let cos = ctx.value(self.cos);
        // No pair inside the margin: no gradient at all (not an added zero).
        if self.state.pairs == 0 || (cos.is_cpu() && self.state.active.is_empty()) {
            return Ok(());
        }
        let d = lucir_tensor::margin_rank_bwd(cos, &self.labels, &self.state, ctx.g())?;
        ctx.add(self.cos, d)
    }
}
