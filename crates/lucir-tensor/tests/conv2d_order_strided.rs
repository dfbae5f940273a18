//! The f32 stride-2 direct kernels (3×3 with padding 1, 1×1 without: a ResNet's downsampling
//! layer and its projection shortcut) against a scalar model of their summation order, bit for
//! bit, as `conv2d_order` does for the stride-1 kernels: each output one fused multiply-add
//! chain from +0 over (input channel, tap), taps past the border included; each input gradient
//! element one chain over (output channel, the taps of its phase), the taps in kernel order;
//! each weight gradient entry one chain over the output positions of a chunk's images in order
//! ([`reduction_chunks`] chunks), the chunks' sums added in order; an added input gradient
//! `old + new`.
//!
//! Both kernel versions are held to this one model: the AVX-512 kernels and, forced with
//! `force_avx2_convolutions`, the AVX2 ones where the CPU has AVX-512; the AVX2 ones where it
//! has only AVX2. One test: the forcing is a process setting.

mod common;
mod conv_order;

use common::{rng, uniform};
use conv_order::{at, check_passes, on_each_version, Model};
use lucir_tensor::{reduction_chunks, Conv2dGeometry, Tensor};

/// N, Ci, Co, H, W (input), k.
type Shape = [usize; 6];

/// Output rows and columns of a stride-2 layer on H×W inputs.
fn out(h: usize, w: usize) -> (usize, usize) {
    (h.div_ceil(2), w.div_ceil(2))
}

/// Input element (row, column) that tap `t` of output (r, q) reads, padding (k − 1)/2.
fn tap_at(k: usize, t: usize, r: usize, q: usize) -> (isize, isize) {
    let pad = (k as isize - 1) / 2;
    let (ky, kx) = ((t / k) as isize, (t % k) as isize);
    (2 * r as isize + ky - pad, 2 * q as isize + kx - pad)
}

fn forward_model(x: &[f32], wt: &[f32], [n, ci, co, h, w, k]: Shape) -> Vec<f32> {
    let (ho, wo) = out(h, w);
    let mut y = Vec::with_capacity(n * co * ho * wo);
    for i in 0..n {
        for o in 0..co {
            for r in 0..ho {
                for q in 0..wo {
                    let mut acc = 0.0f32;
                    for c in 0..ci {
                        for t in 0..k * k {
                            let (yy, xx) = tap_at(k, t, r, q);
                            let v = at(x, [ci, h, w], i, c, yy, xx);
                            acc = wt[(o * ci + c) * k * k + t].mul_add(v, acc);
                        }
                    }
                    y.push(acc);
                }
            }
        }
    }
    y
}

/// Each input element sums, over the output channels, the taps that reach it, in kernel
/// order; a tap reaches input (yy, xx) from the output (r, q) with `tap_at(t, r, q) = (yy,
/// xx)`, if that output exists.
fn input_grad_model(dy: &[f32], wt: &[f32], [n, ci, co, h, w, k]: Shape) -> Vec<f32> {
    let (ho, wo) = out(h, w);
    let pad = (k - 1) / 2;
    let mut dx = Vec::with_capacity(n * ci * h * w);
    for i in 0..n {
        for c in 0..ci {
            for yy in 0..h {
                for xx in 0..w {
                    let mut acc = 0.0f32;
                    for o in 0..co {
                        for t in 0..k * k {
                            let (ky, kx) = (t / k, t % k);
                            // Only the taps of this element's phase: 2r = yy − ky + pad.
                            let (ry, rx) = (yy + pad, xx + pad);
                            if ry < ky || rx < kx || (ry - ky) % 2 != 0 || (rx - kx) % 2 != 0 {
                                continue;
                            }
                            let (r, q) = (((ry - ky) / 2) as isize, ((rx - kx) / 2) as isize);
                            let d = at(dy, [co, ho, wo], i, o, r, q);
                            acc = wt[(o * ci + c) * k * k + t].mul_add(d, acc);
                        }
                    }
                    dx.push(acc);
                }
            }
        }
    }
    dx
}

fn weight_grad_model(x: &[f32], dy: &[f32], [n, ci, co, h, w, k]: Shape) -> Vec<f32> {
    let (ho, wo) = out(h, w);
    let per = n.div_ceil(reduction_chunks(n));
    let mut total: Option<Vec<f32>> = None;
    for first in (0..n).step_by(per.max(1)) {
        let mut acc = vec![0.0f32; co * ci * k * k];
        for i in first..(first + per).min(n) {
            for r in 0..ho {
                for q in 0..wo {
                    for o in 0..co {
                        let d = dy[((i * co + o) * ho + r) * wo + q];
                        for c in 0..ci {
                            for t in 0..k * k {
                                let (yy, xx) = tap_at(k, t, r, q);
                                let a = &mut acc[(o * ci + c) * k * k + t];
                                *a = d.mul_add(at(x, [ci, h, w], i, c, yy, xx), *a);
                            }
                        }
                    }
                }
            }
        }
        total = Some(match total {
            None => acc,
            Some(mut sum) => {
                sum.iter_mut().zip(&acc).for_each(|(a, b)| *a += *b);
                sum
            }
        });
    }
    total.unwrap_or_else(|| vec![0.0; co * ci * k * k])
}

/// Every checked pass of one shape against the model; `kernels` names the version in messages.
fn check_shape(r: &mut rand_chacha::ChaCha8Rng, s: Shape, kernels: &str) {
    let [n, ci, co, h, w, k] = s;
    let (ho, wo) = out(h, w);
    let g = Conv2dGeometry {
        stride: 2,
        pad: (k - 1) / 2,
    };
    let f = |t: Tensor<f64>| t.cast::<f32>();
    let x = f(uniform(r, &[n, ci, h, w], -1.0, 1.0));
    let wt = f(uniform(r, &[co, ci, k, k], -1.0, 1.0));
    let dy = f(uniform(r, &[n, co, ho, wo], -1.0, 1.0));
    let old = f(uniform(r, &[n, ci, h, w], -1.0, 1.0));
    let (xs, ws, dys) = (x.as_slice(), wt.as_slice(), dy.as_slice());
    let what = format!("{kernels}, {n}×{ci}×{h}×{w} → {co}, {k}×{k}/2");
    let model = Model {
        y: forward_model(xs, ws, s),
        dx: input_grad_model(dys, ws, s),
        dw: weight_grad_model(xs, dys, s),
    };
    check_passes([&x, &wt, &dy, &old], g, &model, &what);
}

/// Each shape against the model, inputs drawn from one seed: the ResNets' downsampling layers
/// and shortcuts on 28×28 and 32×32 inputs, then odd sizes (odd sides, channel counts off the
/// vector widths, a 1×1 image).
fn check_all(kernels: &str) {
    let shapes: [Shape; 14] = [
        [3, 16, 32, 28, 28, 3],
        [3, 16, 32, 28, 28, 1],
        [2, 32, 64, 14, 14, 3],
        [2, 32, 64, 14, 14, 1],
        [1, 16, 32, 32, 32, 3],
        [1, 32, 64, 16, 16, 1],
        [1, 64, 128, 8, 8, 3],
        [2, 64, 128, 8, 8, 1],
        [3, 5, 11, 13, 12, 3],
        [3, 7, 3, 7, 9, 1],
        [5, 4, 6, 5, 5, 3],
        [1, 2, 13, 1, 1, 3],
        [2, 3, 5, 2, 3, 1],
        [1, 9, 17, 3, 2, 3],
    ];
    let mut r = rng(43);
    for s in shapes {
        check_shape(&mut r, s, kernels);
    }
}

#[test]
fn stride2_kernels_sum_in_the_modelled_order() {
    on_each_version("stride2_kernels_sum_in_the_modelled_order", check_all);
}
