//! Evaluation (docs/design.md §3 "Evaluation"): CNN and NME predictions, accuracies, forgetting and
//! average incremental accuracy.

use crate::Features;

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Predicted class per row of logits (argmax; ties to the lower class).
pub fn predict_argmax(logits: &Features) -> Vec<usize> {
    (0..logits.rows()).map(|i| argmax(logits.row(i))).collect()
}

/// NME class means: for each class, the mean of f̄ over its exemplars and the mean of f̄ over the
/// mirrored exemplars, averaged, then normalised (as the authors' code does; the two means are
/// not normalised on their own). `plain[c]` and `flipped[c]` hold the (unnormalised) features
/// of class c's exemplars. Returns C×D row-major.
pub fn nme_class_means(plain: &[Features], flipped: &[Features]) -> Vec<f32> {
    let unit = |v: &mut Vec<f32>| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= n);
    };
    let class_mean = |f: &Features| {
        let f = f.normalized();
        let mut m = vec![0f32; f.dim];
        for i in 0..f.rows() {
            for (a, v) in m.iter_mut().zip(f.row(i)) {
                *a += v;
            }
        }
        let n = f.rows().max(1) as f32;
        m.iter_mut().for_each(|x| *x /= n);
        m
    };
    let mut out = Vec::new();
    for (p, q) in plain.iter().zip(flipped) {
        let (a, b) = (class_mean(p), class_mean(q));
        let mut m: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect();
        unit(&mut m);
        out.extend(m);
    }
    out
}

/// NME prediction: argmax_c ⟨f̄(x), μ_c⟩ for each row of `feats` (`means` C×D).
pub fn predict_nme(feats: &Features, means: &[f32]) -> Vec<usize> {
    let f = feats.normalized();
    let d = f.dim.max(1);
    (0..f.rows())
        .map(|i| {
            let scores: Vec<f32> = means
                .chunks(d)
                .map(|m| m.iter().zip(f.row(i)).map(|(a, b)| a * b).sum())
                .collect();
            argmax(&scores)
        })
        .collect()
}

/// Accuracy (%) over all rows, over rows with label < `split`, and over the rest.
pub fn accuracy_split(pred: &[usize], labels: &[usize], split: usize) -> (f64, f64, f64) {
    let pct = |f: &dyn Fn(usize) -> bool| {
        let (mut hit, mut n) = (0usize, 0usize);
        for (p, l) in pred.iter().zip(labels) {
            if f(*l) {
                n += 1;
                hit += usize::from(p == l);
            }
        }
        if n == 0 {
            f64::NAN
        } else {
            100.0 * hit as f64 / n as f64
        }
    };
    (pct(&|_| true), pct(&|l| l < split), pct(&|l| l >= split))
}

/// Per-class accuracy (%) for classes `0..classes`.
pub fn per_class_accuracy(pred: &[usize], labels: &[usize], classes: usize) -> Vec<f64> {
    let mut hit = vec![0usize; classes];
    let mut n = vec![0usize; classes];
    for (p, l) in pred.iter().zip(labels) {
        if *l < classes {
            n[*l] += 1;
            hit[*l] += usize::from(p == l);
        }
    }
    hit.iter()
        .zip(&n)
        .map(|(h, n)| {
            if *n == 0 {
                f64::NAN
            } else {
                100.0 * *h as f64 / *n as f64
            }
        })
        .collect()
}

/// Forgetting after the latest phase: mean over the classes learned before it of (best earlier
/// per-class accuracy − current per-class accuracy). `history[t][c]` is class c's accuracy after
/// phase t (NaN where not yet seen). 0 after the first phase.
pub fn forgetting(history: &[Vec<f64>]) -> f64 {
    let Some((now, before)) = history.split_last() else {
        return 0.0;
    };
    let mut drops = Vec::new();
    for (c, cur) in now.iter().enumerate() {
        let best = before
            .iter()
            .filter_map(|h| h.get(c).copied())
            .filter(|v| !v.is_nan())
            .fold(f64::NAN, f64::max);
        if !best.is_nan() && !cur.is_nan() {
            drops.push(best - cur);
        }
    }
    if drops.is_empty() {
        0.0
    } else {
        drops.iter().sum::<f64>() / drops.len() as f64
    }
}

/// Average incremental accuracy: the mean of the per-phase accuracies, base phase included.
pub fn average_incremental_accuracy(per_phase: &[f64]) -> f64 {
    if per_phase.is_empty() {
        return f64::NAN;
    }
    per_phase.iter().sum::<f64>() / per_phase.len() as f64
}
