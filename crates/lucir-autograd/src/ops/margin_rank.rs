//! Inter-class separation by margin ranking (LUCIR §3.3, Eq. 8; docs/design.md §3), on the unscaled
//! cosines `cos` (B×C, classes 0..n_old are old). For each row b whose label is old,
//! `s⁺ = cos[b, y_b]` and `s_1..s_K` are its K = min(k, C − n_old) largest new-class cosines;
//! `L = (1/P) Σ_{b,k} max(0, m − s⁺ + s_k)` with P = (old rows)·K, and 0 when P = 0.
//! Each active pair (term > 0) sends −1/P into `cos[b, y_b]` and +1/P into `cos[b, k]`.

use lucir_tensor::{topk_rows, Float, Tensor};

use crate::ops::check_labels;
use crate::tape::Backward;
use crate::{BackwardCtx, Error, Result, Tape, Var};

struct MarginRankBack {
    cos: Var,
    /// Flat indices (positive, hard negative) of the active pairs.
    active: Vec<(usize, usize)>,
    pairs: usize,
}

impl<T: Float> Tape<T> {
    /// Margin-ranking loss with margin `m` over the top-`k` new-class cosines.
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
        let k = k.min(c - n_old);
        let old_rows: Vec<usize> = (0..b).filter(|&r| labels[r] < n_old).collect();
        let pairs = old_rows.len() * k;
        let mut active = Vec::new();
        let mut total = T::zero();
        if pairs > 0 {
            let cv = self.value(cos).as_slice();
            let new_cols: Vec<T> = old_rows
                .iter()
                .flat_map(|&r| cv[r * c + n_old..(r + 1) * c].iter().copied())
                .collect();
            let new_cols = Tensor::from_vec(&[old_rows.len(), c - n_old], new_cols)?;
            let top = topk_rows(&new_cols, k)?;
            for (i, &r) in old_rows.iter().enumerate() {
                let pos = r * c + labels[r];
                for &j in &top[i * k..(i + 1) * k] {
                    let neg = r * c + n_old + j;
                    let term = m - cv[pos] + cv[neg];
                    if term > T::zero() {
                        total += term;
                        active.push((pos, neg));
                    }
                }
            }
        }
        let loss = Tensor::scalar(if pairs == 0 {
            T::zero()
        } else {
            total / T::of_usize(pairs)
        });
        Ok(self.push(loss, &[cos], MarginRankBack { cos, active, pairs }))
    }
}

impl<T: Float> Backward<T> for MarginRankBack {
    fn backward(&self, ctx: &mut BackwardCtx<'_, T>) -> Result<()> {
        if self.active.is_empty() {
            return Ok(());
        }
        let w = ctx.g().item()? / T::of_usize(self.pairs);
        let mut d = Tensor::zeros(ctx.value(self.cos).shape());
        let dv = d.as_slice_mut();
        for &(pos, neg) in &self.active {
            dv[pos] -= w;
            dv[neg] += w;
        }
        ctx.add(self.cos, d)
    }
}
