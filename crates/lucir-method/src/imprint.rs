//! Imprinted weights for new classes (LUCIR §3.2, docs/design.md §3 "Imprinting"):
//! θ_c = a · normalise(mean over the class's training images of f̄(x)), a = mean ‖θ_o‖ over the
//! old class embeddings.

use lucir_tensor::Tensor;

use crate::{Error, Features, Result};

/// New-class rows (Cn×D) from per-class normalised features and the old embeddings (Co×D).
/// `per_class[j]` holds the L2-normalised features of new class j's training images.
pub fn imprint_weights(per_class: &[Features], old: &Tensor<f32>) -> Result<Tensor<f32>> {
    let [co, d] = old.dims2("imprint")?;
    if co == 0 {
        return Err(Error::Config(
            "imprinting needs at least one old class".into(),
        ));
    }
    let a: f32 = old
        .as_slice()
        .chunks(d)
        .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
        .sum::<f32>()
        / co as f32;
    let mut rows = Vec::with_capacity(per_class.len() * d);
    for f in per_class {
        if f.dim != d || f.rows() == 0 {
            return Err(Error::Config(format!(
                "imprinting needs at least one {d}-wide feature per new class"
            )));
        }
        let mut mean = vec![0f32; d];
        for i in 0..f.rows() {
            for (m, v) in mean.iter_mut().zip(f.row(i)) {
                *m += v;
            }
        }
        let n = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        rows.extend(mean.iter().map(|v| a * v / n));
    }
    Ok(Tensor::from_vec(&[per_class.len(), d], rows)?)
}
