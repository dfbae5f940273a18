//! The slice loops of the memory-bound ops (batch norm, ReLU, residual adds), compiled for
//! AVX-512, AVX2+FMA and baseline x86-64 and picked at run time with `multiversion`, so one
//! binary uses the widest vectors the CPU has.
//!
//! Every version computes the same bits: Rust never fuses `a·b + c` into an FMA on its own, and
//! each reduction fixes its order (eight lanes, then the lanes in order, then the tail).

use multiversion::multiversion;

use crate::Float;

/// `g` where `mask > 0`, else 0: the gradient through a ReLU whose output is `mask`.
#[inline(always)]
pub(crate) fn masked<T: Float>(g: T, mask: T) -> T {
    if mask > T::zero() {
        g
    } else {
        T::zero()
    }
}

/// Sums `f(j)` over `0..n` with eight accumulators (lane `j mod 8` for the whole chunks of eight,
/// then the tail), so the loop vectorises and the order is fixed.
#[inline(always)]
fn sum8<T: Float, const K: usize>(n: usize, f: impl Fn(usize) -> [T; K]) -> [T; K] {
    let mut acc = [[T::zero(); 8]; K];
    let whole = n - n % 8;
    for base in (0..whole).step_by(8) {
        for lane in 0..8 {
            let v = f(base + lane);
            for k in 0..K {
                acc[k][lane] += v[k];
            }
        }
    }
    let mut out = [T::zero(); K];
    for k in 0..K {
        for lane in 0..8 {
            out[k] += acc[k][lane];
        }
    }
    for j in whole..n {
        let v = f(j);
        for k in 0..K {
            out[k] += v[k];
        }
    }
    out
}

/// `Σ a_j`.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn sum<T: Float>(a: &[T]) -> T {
    sum8(a.len(), |j| [a[j]])[0]
}

/// `(Σ a_j, Σ a_j·b_j)`; `a` and `b` have equal lengths.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn sum_and_dot<T: Float>(a: &[T], b: &[T]) -> (T, T) {
    let b = &b[..a.len()];
    let [s, p] = sum8(a.len(), |j| [a[j], a[j] * b[j]]);
    (s, p)
}

/// `(Σ g_j, Σ g_j·b_j)` with `g_j = masked(a_j, mask_j)`; equal lengths.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn masked_sum_and_dot<T: Float>(a: &[T], mask: &[T], b: &[T]) -> (T, T) {
    let (mask, b) = (&mask[..a.len()], &b[..a.len()]);
    let [s, p] = sum8(a.len(), |j| {
        let g = masked(a[j], mask[j]);
        [g, g * b[j]]
    });
    (s, p)
}

/// `Σ (a_j − mean)²`.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn sum_sq_dev<T: Float>(a: &[T], mean: T) -> T {
    let [s] = sum8(a.len(), |j| {
        let e = a[j] - mean;
        [e * e]
    });
    s
}

/// `y = x·scale + shift`, then `max(y, 0)` when `relu`; equal lengths.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn affine<T: Float>(x: &[T], y: &mut [T], scale: T, shift: T, relu: bool) {
    let x = &x[..y.len()];
    if relu {
        for (o, i) in y.iter_mut().zip(x) {
            let v = *i * scale + shift;
            *o = if v > T::zero() { v } else { T::zero() };
        }
    } else {
        for (o, i) in y.iter_mut().zip(x) {
            *o = *i * scale + shift;
        }
    }
}

/// `out = a·g + b·x + c` with `g` masked by `mask > 0` when a mask is given; equal lengths.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn axpbypc<T: Float>(
    out: &mut [T],
    g: &[T],
    mask: Option<&[T]>,
    x: &[T],
    [a, b, c]: [T; 3],
) {
    let (g, x) = (&g[..out.len()], &x[..out.len()]);
    match mask {
        Some(m) => {
            let m = &m[..out.len()];
            for j in 0..out.len() {
                out[j] = a * masked(g[j], m[j]) + b * x[j] + c;
            }
        }
        None => {
            for j in 0..out.len() {
                out[j] = a * g[j] + b * x[j] + c;
            }
        }
    }
}

/// `out = k·g` with `g` masked by `mask > 0` when a mask is given; equal lengths.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn scale_masked<T: Float>(out: &mut [T], g: &[T], mask: Option<&[T]>, k: T) {
    let g = &g[..out.len()];
    match mask {
        Some(m) => {
            let m = &m[..out.len()];
            for j in 0..out.len() {
                out[j] = k * masked(g[j], m[j]);
            }
        }
        None => {
            for j in 0..out.len() {
                out[j] = k * g[j];
            }
        }
    }
}

/// `out = f(a, b)` elementwise; equal lengths.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn zip_map<T: Float, F: Fn(T, T) -> T>(a: &[T], b: &[T], out: &mut [T], f: F) {
    let (a, b) = (&a[..out.len()], &b[..out.len()]);
    for j in 0..out.len() {
        out[j] = f(a[j], b[j]);
    }
}

/// `g = f(g, b)` in place; equal lengths.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn zip_apply<T: Float, F: Fn(T, T) -> T>(g: &mut [T], b: &[T], f: F) {
    let b = &b[..g.len()];
    for j in 0..g.len() {
        g[j] = f(g[j], b[j]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The eight-lane order written out plainly.
    fn lanes_ref(v: &[f32]) -> f32 {
        let whole = v.len() - v.len() % 8;
        let mut lane = [0f32; 8];
        for (j, x) in v[..whole].iter().enumerate() {
            lane[j % 8] += x;
        }
        let mut s = 0f32;
        for l in lane {
            s += l;
        }
        for x in &v[whole..] {
            s += x;
        }
        s
    }

    fn vecs(n: usize, seed: u64) -> [Vec<f32>; 3] {
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        std::array::from_fn(|_| (0..n).map(|_| r.random_range(-2f32..2.0)).collect())
    }

    proptest! {
        #[test]
        fn dispatched_kernels_match_plain_loops_bit_for_bit(n in 0usize..100, seed in any::<u64>()) {
            let [a, m, b] = vecs(n, seed);
            let g: Vec<f32> = a.iter().zip(&m).map(|(x, y)| masked(*x, *y)).collect();
            let ab: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
            let gb: Vec<f32> = g.iter().zip(&b).map(|(x, y)| x * y).collect();
            prop_assert_eq!(sum(&a), lanes_ref(&a));
            prop_assert_eq!(sum_and_dot(&a, &b), (lanes_ref(&a), lanes_ref(&ab)));
            prop_assert_eq!(masked_sum_and_dot(&a, &m, &b), (lanes_ref(&g), lanes_ref(&gb)));
            let dev: Vec<f32> = a.iter().map(|x| (x - 0.25) * (x - 0.25)).collect();
            prop_assert_eq!(sum_sq_dev(&a, 0.25), lanes_ref(&dev));

            let mut out = vec![0f32; n];
            affine(&a, &mut out, 1.5, -0.5, true);
            prop_assert!(out.iter().zip(&a).all(|(o, x)| *o == (x * 1.5 - 0.5).max(0.0)));
            axpbypc(&mut out, &a, Some(&m), &b, [2.0, 3.0, 0.5]);
            prop_assert!((0..n).all(|j| out[j] == 2.0 * g[j] + 3.0 * b[j] + 0.5));
            scale_masked(&mut out, &a, Some(&m), 3.0);
            prop_assert!((0..n).all(|j| out[j] == 3.0 * g[j]));
            zip_map(&a, &b, &mut out, |x, y| x - y);
            prop_assert!((0..n).all(|j| out[j] == a[j] - b[j]));
            zip_apply(&mut out, &m, masked);
            prop_assert!((0..n).all(|j| out[j] == masked(a[j] - b[j], m[j])));
        }
    }
}
