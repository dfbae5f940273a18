//! The slice loops of the memory-bound ops (batch norm, ReLU, residual adds), compiled for
//! AVX-512, AVX2+FMA and baseline x86-64 (see [`versioned!`]) and picked at run time
//! ([`Version::current`]), so one binary uses the widest vectors the CPU has.
//!
//! Every version computes the same bits: Rust never fuses `a·b + c` into an FMA on its own, and
//! each reduction fixes its order (`LANES` lanes, then the lanes in order, then the tail). The
//! tests force each version in turn and compare their bits.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::cpu::Version;
use crate::Float;

/// The CPU kernels this process runs: the version of the memory-bound loops, `avx512`
/// (AVX-512F+VL), `avx2-fma` or `baseline`, then `+winograd` or `+winograd4` where the 3×3
/// stride-1 convolutions run as Winograd's ([`crate::Conv3x3`]), or `+bf16` where their
/// products are bf16 ([`crate::Precision`], which takes Winograd's layers). Two runs with the
/// same name give the same bits for the same inputs and thread count.
pub fn kernel_path() -> String {
    use crate::{Conv3x3, Precision};
    let precision = crate::precision();
    let precision = match precision.available() {
        true if precision != Precision::F32 => format!("+{}", precision.name()),
        _ => String::new(),
    };
    let conv = crate::conv3x3();
    let conv = match conv.available() && precision.is_empty() {
        true if conv != Conv3x3::Direct => format!("+{}", conv.name()),
        _ => String::new(),
    };
    format!("{}{conv}{precision}", Version::detected().name())
}

/// Each function compiled three times — its body in a portable inner function, inlined into
/// one with AVX-512F+VL and one with AVX2+FMA enabled — and a dispatch on
/// [`Version::current`]. Generic parameters take one bound each; parameters are plain names.
macro_rules! versioned {
    ($(
        $(#[$attr:meta])*
        $vis:vis fn $name:ident<$($g:ident: $bound:path),*>($($arg:ident: $ty:ty),* $(,)?)
            $(-> $ret:ty)? $body:block
    )*) => {$(
        $(#[$attr])*
        $vis fn $name<$($g: $bound),*>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable<$($g: $bound),*>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl")]
            fn avx512<$($g: $bound),*>($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2_fma<$($g: $bound),*>($($arg: $ty),*) $(-> $ret)? {
                portable($($arg),*)
            }

            match Version::current() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Version::current` is a version the CPU runs.
                Version::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Version::Avx2Fma => unsafe { avx2_fma($($arg),*) },
                _ => portable($($arg),*),
            }
        }
    )*};
}

/// `g` where `mask > 0`, else 0: the gradient through a ReLU whose output is `mask`.
#[inline(always)]
pub(crate) fn masked<T: Float>(g: T, mask: T) -> T {
    if mask > T::zero() {
        g
    } else {
        T::zero()
    }
}

/// `g` where `x·scale + shift > 0`, else 0: the gradient through the ReLU of a fused
/// `max(x·scale + shift, 0)`, its mask recomputed from `x` with the forward pass's expression
/// (so the same bits decide) instead of read from the stored output.
#[inline(always)]
pub(crate) fn gated<T: Float>(g: T, x: T, (scale, shift): (T, T)) -> T {
    masked(g, x * scale + shift)
}

/// Lanes of the reductions: element `j` of a whole chunk goes to accumulator `j mod LANES`.
/// Thirty-two `f32` lanes are two AVX-512 or four AVX2 registers, enough independent additions
/// to hide the adder's latency.
pub(crate) const LANES: usize = 32;

/// Lanes for the rest of a range after its whole [`LANES`] chunks (`TAIL_LANES` divides `LANES`).
pub(crate) const TAIL_LANES: usize = 8;

/// Where [`prefetch`] asks for lines to go.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    L1,
    L2,
}

/// Asks for the cache lines of the `bytes` bytes from `p` to be brought into `level`: a hint
/// (x86-64 `prefetcht0`/`prefetcht1`, nothing elsewhere) that neither reads nor faults.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T, bytes: usize, level: Level) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..bytes).step_by(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        let at = p.cast::<i8>().wrapping_add(off);
        // SAFETY: a prefetch neither faults nor reads into the program.
        unsafe {
            match level {
                Level::L1 => _mm_prefetch::<_MM_HINT_T0>(at),
                Level::L2 => _mm_prefetch::<_MM_HINT_T1>(at),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes, level);
}

/// Sums `f(a_j, b_j)` over `j` in each of `ranges` (of `a` and `b`, which have equal lengths;
/// pass `a` twice for a one-input sum) in a fixed order that vectorises. In every range, element
/// `j` of the whole [`LANES`] chunks goes to lane `j mod LANES` and of the next whole
/// [`TAIL_LANES`] chunks to lane `j mod TAIL_LANES`; the few elements left go, range after range,
/// to one scalar sum. At the end the lanes are added in order, then the scalar sum.
///
/// A batch norm reduces over the N planes of a channel as one call, so the lanes are added up
/// once per channel, not once per (small) plane. The planes lie an image apart, a jump the
/// hardware's stream prefetch does not follow: while a range is summed, the same offsets of the
/// next range are prefetched, a chunk's worth per chunk.
#[inline(always)]
fn sum_lanes<T: Float, const K: usize>(
    a: &[T],
    b: &[T],
    ranges: impl Iterator<Item = Range<usize>>,
    f: impl Fn(T, T) -> [T; K],
) -> [T; K] {
    /// Adds `f` of one chunk of `L ≤ LANES` elements to lanes `0..L`.
    #[inline(always)]
    fn add<T: Float, const K: usize, const L: usize>(
        acc: &mut [[T; LANES]; K],
        ca: &[T],
        cb: &[T],
        f: &impl Fn(T, T) -> [T; K],
    ) {
        let (ca, cb): (&[T; L], &[T; L]) = (
            ca.try_into().expect("a whole chunk"),
            cb.try_into().expect("a whole chunk"),
        );
        for lane in 0..L {
            let v = f(ca[lane], cb[lane]);
            for k in 0..K {
                acc[k][lane] += v[k];
            }
        }
    }

    let b = &b[..a.len()];
    let two = !std::ptr::eq(a, b);
    let chunk = LANES * std::mem::size_of::<T>();
    let mut acc = [[T::zero(); LANES]; K];
    let mut rest = [T::zero(); K];
    let mut ranges = ranges.peekable();
    while let Some(r) = ranges.next() {
        let next = ranges.peek().map_or(a.len(), |n| n.start);
        let (pa, pb) = (a.as_ptr().wrapping_add(next), b.as_ptr().wrapping_add(next));
        let (a, b) = (&a[r.clone()], &b[r]);
        let whole = a.len() - a.len() % LANES;
        for (k, (ca, cb)) in a[..whole]
            .chunks_exact(LANES)
            .zip(b[..whole].chunks_exact(LANES))
            .enumerate()
        {
            prefetch(pa.wrapping_add(k * LANES), chunk, Level::L1);
            if two {
                prefetch(pb.wrapping_add(k * LANES), chunk, Level::L1);
            }
            add::<T, K, LANES>(&mut acc, ca, cb, &f);
        }
        let short = whole + (a.len() - whole) / TAIL_LANES * TAIL_LANES;
        for (ca, cb) in a[whole..short]
            .chunks_exact(TAIL_LANES)
            .zip(b[whole..short].chunks_exact(TAIL_LANES))
        {
            add::<T, K, TAIL_LANES>(&mut acc, ca, cb, &f);
        }
        for (x, y) in a[short..].iter().zip(&b[short..]) {
            let v = f(*x, *y);
            for k in 0..K {
                rest[k] += v[k];
            }
        }
    }
    let mut out = [T::zero(); K];
    for k in 0..K {
        for lane in 0..LANES {
            out[k] += acc[k][lane];
        }
        out[k] += rest[k];
    }
    out
}

versioned! {
    /// `Σ a_j` over `ranges`.
    pub(crate) fn sum<T: Float, R: Iterator<Item = Range<usize>>>(a: &[T], ranges: R) -> T {
        sum_lanes(a, a, ranges, |x, _| [x])[0]
    }
}

versioned! {
    /// `(Σ a_j, Σ a_j·b_j)` over `ranges`; `a` and `b` have equal lengths.
    pub(crate) fn sum_and_dot<T: Float, R: Iterator<Item = Range<usize>>>(
        a: &[T],
        b: &[T],
        ranges: R,
    ) -> (T, T) {
        let [s, p] = sum_lanes(a, b, ranges, |x, y| [x, x * y]);
        (s, p)
    }
}

versioned! {
    /// `(Σ g_j, Σ g_j·x_j)` over `ranges` with `g_j = gated(a_j, x_j, gate)`; equal lengths.
    pub(crate) fn gated_sum_and_dot<T: Float, R: Iterator<Item = Range<usize>>>(
        a: &[T],
        x: &[T],
        ranges: R,
        gate: (T, T),
    ) -> (T, T) {
        let [s, p] = sum_lanes(a, x, ranges, |g, x| {
            let g = gated(g, x, gate);
            [g, g * x]
        });
        (s, p)
    }
}

versioned! {
    /// `Σ (a_j − mean)²` over `ranges`.
    pub(crate) fn sum_sq_dev<T: Float, R: Iterator<Item = Range<usize>>>(
        a: &[T],
        ranges: R,
        mean: T,
    ) -> T {
        let [s] = sum_lanes(a, a, ranges, |x, _| {
            let e = x - mean;
            [e * e]
        });
        s
    }
}

versioned! {
    /// `y = x·scale + shift`, then `max(y, 0)` when `relu`; equal lengths.
    pub(crate) fn affine<T: Float>(
        x: &[T],
        y: &mut [MaybeUninit<T>],
        scale: T,
        shift: T,
        relu: bool,
    ) {
        let x = &x[..y.len()];
        if relu {
            for (o, i) in y.iter_mut().zip(x) {
                let v = *i * scale + shift;
                o.write(if v > T::zero() { v } else { T::zero() });
            }
        } else {
            for (o, i) in y.iter_mut().zip(x) {
                o.write(*i * scale + shift);
            }
        }
    }
}

versioned! {
    /// `y = (x·scale + shift) + r`, then `max(·, 0)` when `relu`; equal lengths: a batch norm's
    /// output plus a residual, with the operations of [`affine`] and of the fused add+ReLU.
    pub(crate) fn affine_add<T: Float>(
        x: &[T],
        r: &[T],
        y: &mut [MaybeUninit<T>],
        scale: T,
        shift: T,
        relu: bool,
    ) {
        let (x, r) = (&x[..y.len()], &r[..y.len()]);
        if relu {
            for ((o, i), r) in y.iter_mut().zip(x).zip(r) {
                let v = (*i * scale + shift) + *r;
                o.write(if v > T::zero() { v } else { T::zero() });
            }
        } else {
            for ((o, i), r) in y.iter_mut().zip(x).zip(r) {
                o.write((*i * scale + shift) + *r);
            }
        }
    }
}

versioned! {
    /// `out = a·g + b·x + c` (`abc` = `[a, b, c]`), `g` gated by `x` (see [`gated`]) when a gate
    /// is given; equal lengths.
    pub(crate) fn axpbypc<T: Float>(
        out: &mut [MaybeUninit<T>],
        g: &[T],
        x: &[T],
        gate: Option<(T, T)>,
        abc: [T; 3],
    ) {
        let [a, b, c] = abc;
        let (g, x) = (&g[..out.len()], &x[..out.len()]);
        match gate {
            Some(gate) => {
                for j in 0..out.len() {
                    out[j].write(a * gated(g[j], x[j], gate) + b * x[j] + c);
                }
            }
            None => {
                for j in 0..out.len() {
                    out[j].write(a * g[j] + b * x[j] + c);
                }
            }
        }
    }
}

versioned! {
    /// `out = k·g`, `g` gated by `x` (see [`gated`]) when a gate is given; equal lengths.
    pub(crate) fn scale_gated<T: Float>(
        out: &mut [MaybeUninit<T>],
        g: &[T],
        x: &[T],
        gate: Option<(T, T)>,
        k: T,
    ) {
        let g = &g[..out.len()];
        match gate {
            Some(gate) => {
                let x = &x[..out.len()];
                for j in 0..out.len() {
                    out[j].write(k * gated(g[j], x[j], gate));
                }
            }
            None => {
                for j in 0..out.len() {
                    out[j].write(k * g[j]);
                }
            }
        }
    }
}

versioned! {
    /// `out = f(a, b)` elementwise; equal lengths.
    pub(crate) fn zip_map<T: Float, F: Fn(T, T) -> T>(
        a: &[T],
        b: &[T],
        out: &mut [MaybeUninit<T>],
        f: F,
    ) {
        let (a, b) = (&a[..out.len()], &b[..out.len()]);
        for j in 0..out.len() {
            out[j].write(f(a[j], b[j]));
        }
    }
}

versioned! {
    /// `g = f(g, b)` in place; equal lengths.
    pub(crate) fn zip_apply<T: Float, F: Fn(T, T) -> T>(g: &mut [T], b: &[T], f: F) {
        let b = &b[..g.len()];
        for j in 0..g.len() {
            g[j] = f(g[j], b[j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The lane order of `sum_lanes` written out plainly.
    fn lanes_ref(v: &[f32], ranges: &[Range<usize>]) -> f32 {
        let mut lane = [0f32; LANES];
        let mut rest = 0f32;
        for r in ranges {
            let v = &v[r.clone()];
            let whole = v.len() - v.len() % LANES;
            let short = whole + (v.len() - whole) / TAIL_LANES * TAIL_LANES;
            for (j, x) in v.iter().enumerate() {
                match j {
                    _ if j < whole => lane[j % LANES] += x,
                    _ if j < short => lane[j % TAIL_LANES] += x,
                    _ => rest += x,
                }
            }
        }
        let mut s = 0f32;
        for l in lane {
            s += l;
        }
        s + rest
    }

    /// `v` as the output type of the kernels (which only write finished values into it).
    fn uninit(v: &mut [f32]) -> &mut [MaybeUninit<f32>] {
        // SAFETY: same layout; the kernels store only initialised f32 values.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len()) }
    }

    fn vecs(n: usize, seed: u64) -> [Vec<f32>; 3] {
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        std::array::from_fn(|_| (0..n).map(|_| r.random_range(-2f32..2.0)).collect())
    }

    proptest! {
        #[test]
        fn dispatched_kernels_match_plain_loops_bit_for_bit(
            plane in 0usize..120, count in 1usize..4, gap in 0usize..3, seed in any::<u64>(),
        ) {
            // `count` planes of `plane` elements, `gap` elements apart (like one channel's planes).
            let n = count * (plane + gap);
            let ranges: Vec<Range<usize>> =
                (0..count).map(|i| i * (plane + gap)..i * (plane + gap) + plane).collect();
            let rs = || ranges.iter().cloned();
            let [a, m, b] = vecs(n, seed);
            let gate = (1.5f32, -0.25f32);
            let g: Vec<f32> = a.iter().zip(&b).map(|(x, y)| masked(*x, y * gate.0 + gate.1)).collect();
            let ab: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
            let gb: Vec<f32> = g.iter().zip(&b).map(|(x, y)| x * y).collect();
            prop_assert_eq!(sum(&a, rs()), lanes_ref(&a, &ranges));
            prop_assert_eq!(sum_and_dot(&a, &b, rs()), (lanes_ref(&a, &ranges), lanes_ref(&ab, &ranges)));
            prop_assert_eq!(
                gated_sum_and_dot(&a, &b, rs(), gate),
                (lanes_ref(&g, &ranges), lanes_ref(&gb, &ranges))
            );
            let dev: Vec<f32> = a.iter().map(|x| (x - 0.25) * (x - 0.25)).collect();
            prop_assert_eq!(sum_sq_dev(&a, rs(), 0.25), lanes_ref(&dev, &ranges));

            let mut out = vec![0f32; n];
            affine(&a, uninit(&mut out), 1.5, -0.5, true);
            prop_assert!(out.iter().zip(&a).all(|(o, x)| *o == (x * 1.5 - 0.5).max(0.0)));
            axpbypc(uninit(&mut out), &a, &b, Some(gate), [2.0, 3.0, 0.5]);
            prop_assert!((0..n).all(|j| out[j] == 2.0 * g[j] + 3.0 * b[j] + 0.5));
            scale_gated(uninit(&mut out), &a, &b, Some(gate), 3.0);
            prop_assert!((0..n).all(|j| out[j] == 3.0 * g[j]));
            zip_map(&a, &b, uninit(&mut out), |x, y| x - y);
            prop_assert!((0..n).all(|j| out[j] == a[j] - b[j]));
            zip_apply(&mut out, &m, masked);
            prop_assert!((0..n).all(|j| out[j] == masked(a[j] - b[j], m[j])));
        }
    }

    /// Every output of every loop over `count` planes of `plane` elements `gap` apart, as the
    /// bits of its f64 value (f32 → f64 is exact), in the version `Version::current` gives.
    fn all_outputs<T: Float>(plane: usize, count: usize, gap: usize, seed: u64) -> Vec<u64> {
        let n = count * (plane + gap);
        let ranges: Vec<Range<usize>> = (0..count)
            .map(|i| i * (plane + gap)..i * (plane + gap) + plane)
            .collect();
        let rs = || ranges.iter().cloned();
        let [a, m, b]: [Vec<T>; 3] =
            vecs(n, seed).map(|v| v.into_iter().map(|x| T::of(x.into())).collect());
        let k = |v: f64| T::of(v);
        let gate = (k(1.5), k(-0.25));
        let (s, (s2, p), (s3, p3)) = (
            sum(&a, rs()),
            sum_and_dot(&a, &b, rs()),
            gated_sum_and_dot(&a, &b, rs(), gate),
        );
        let mut got = vec![s, s2, p, s3, p3, sum_sq_dev(&a, rs(), k(0.25))];
        let mut out = vec![T::zero(); n];
        let uninit = |v: &mut [T]| -> &mut [MaybeUninit<T>] {
            // SAFETY: same layout; the loops store only initialised values.
            unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len()) }
        };
        for relu in [false, true] {
            affine(&a, uninit(&mut out), k(1.5), k(-0.5), relu);
            got.extend_from_slice(&out);
            affine_add(&a, &b, uninit(&mut out), k(0.75), k(0.125), relu);
            got.extend_from_slice(&out);
        }
        for g in [Some(gate), None] {
            axpbypc(uninit(&mut out), &a, &b, g, [k(2.0), k(3.0), k(0.5)]);
            got.extend_from_slice(&out);
            scale_gated(uninit(&mut out), &a, &b, g, k(0.3));
            got.extend_from_slice(&out);
        }
        zip_map(&a, &b, uninit(&mut out), |x, y| x * y - x);
        got.extend_from_slice(&out);
        zip_apply(&mut out, &m, masked);
        got.extend_from_slice(&out);
        got.iter().map(|v| v.as_f64().to_bits()).collect()
    }

    /// Each version the CPU runs (AVX2+FMA, baseline) gives the bits of the AVX-512 one, for
    /// every loop, in f32 and f64, over lengths that end a 32- and an 8-lane chunk anywhere.
    #[test]
    fn every_version_computes_the_bits_of_avx512() {
        let cases = |f: fn(usize, usize, usize, u64) -> Vec<u64>| -> Vec<Vec<u64>> {
            let mut all = Vec::new();
            for plane in (0..80).chain([127, 128, 129, 200]) {
                for (count, gap) in [(1, 0), (2, 1), (3, 2)] {
                    all.push(f(plane, count, gap, plane as u64 * 7 + count as u64));
                }
            }
            all
        };
        let Some(want) =
            Version::Avx512.force(|| [cases(all_outputs::<f32>), cases(all_outputs::<f64>)])
        else {
            eprintln!(
                "skipped: this CPU lacks AVX-512F+VL, the version the others are compared with"
            );
            return;
        };
        for v in [Version::Avx2Fma, Version::Portable] {
            match v.force(|| [cases(all_outputs::<f32>), cases(all_outputs::<f64>)]) {
                Some(got) => assert!(got == want, "{} differs from avx512", v.name()),
                None => eprintln!("skipped: this CPU does not run the {} version", v.name()),
            }
        }
    }

    /// The switch the test above relies on: forcing a version makes `Version::current` say so
    /// on this thread, and only while the closure runs.
    #[test]
    fn forcing_a_version_holds_for_the_closure_only() {
        for v in Version::ALL {
            if let Some(inner) = v.force(Version::current) {
                assert_eq!(inner, v);
            }
            assert_eq!(Version::current(), Version::detected());
        }
        assert!(Version::Portable.available());
    }
}
