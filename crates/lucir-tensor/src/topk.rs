//! Top-k per row of a B×C matrix: the k largest entries of each row, largest first.

use crate::{Error, Float, Result, Tensor};

fn check<T: Float>(op: &'static str, x: &Tensor<T>, k: usize) -> Result<[usize; 2]> {
    let [b, c] = x.dims2(op)?;
    if k > c {
        return Err(Error::arg(op, format!("k = {k} exceeds the {c} columns")));
    }
    Ok([b, c])
}

/// Column indices (B×k, row-major) of the k largest values per row, largest first; ties go to
/// the lower column index. NaN compares below every number.
pub fn topk_rows<T: Float>(x: &Tensor<T>, k: usize) -> Result<Vec<usize>> {
    crate::device::on_cpu("topk_rows", &[x])?;
    let [_, c] = check("topk_rows", x, k)?;
    let mut out = Vec::with_capacity(x.len() / c.max(1) * k);
    if c == 0 {
        return Ok(out);
    }
    let mut best: Vec<usize> = Vec::with_capacity(k);
    for row in x.as_slice().chunks(c) {
        best.clear();
        for j in 0..c {
            let v = row[j];
            if v.is_nan() {
                continue;
            }
            // Insertion into a sorted list of at most k entries: O(C·k), k is tiny (2 in LUCIR).
            let pos = best.iter().position(|&b| v > row[b]).unwrap_or(best.len());
            if pos < k {
                best.insert(pos, j);
                best.truncate(k);
            }
        }
        // Rows with NaNs: fill with the remaining columns so the result always has k per row.
        let mut j = 0;
        while best.len() < k {
            if !best.contains(&j) {
                best.push(j);
            }
            j += 1;
        }
        out.extend_from_slice(&best);
    }
    Ok(out)
}

/// Sort-based reference for [`topk_rows`].
pub fn topk_rows_ref<T: Float>(x: &Tensor<T>, k: usize) -> Result<Vec<usize>> {
    crate::device::on_cpu("topk_rows_ref", &[x])?;
    let [_, c] = check("topk_rows_ref", x, k)?;
    let mut out = Vec::new();
    if c == 0 {
        return Ok(out);
    }
    for row in x.as_slice().chunks(c) {
        let mut idx: Vec<usize> = (0..c).collect();
        idx.sort_by(|&a, &b| {
            let key = |i: usize| {
                if row[i].is_nan() {
                    f64::NEG_INFINITY
                } else {
                    row[i].as_f64()
                }
            };
            key(b).total_cmp(&key(a)).then(a.cmp(&b))
        });
        out.extend_from_slice(&idx[..k]);
    }
    Ok(out)
}
