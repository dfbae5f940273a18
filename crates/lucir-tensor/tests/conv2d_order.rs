//! The f32 3×3 stride-1 direct kernels against a scalar model of their summation order, bit
//! for bit: each output is one fused multiply-add chain from +0 over (input channel, tap),
//! border taps included; the input gradient the same chain over (output channel, tap) of the
//! flipped kernel; each weight gradient entry one chain over the positions of a chunk's images
//! in order ([`reduction_chunks`] chunks), the chunks' sums added in order; a fused input map
//! is `x·scale + shift` (two roundings) then `max(·, 0)`, and a gradient added into an
//! existing one is `old + new`. Forward, backward, the input gradient added into a given one,
//! the weight gradient alone, and the mapped forms, over the ResNets' layer shapes and odd ones.
//!
//! Both kernel versions are held to this one model: the AVX-512 kernels and, forced with
//! `force_avx2_convolutions`, the AVX2 ones where the CPU has AVX-512; the AVX2 ones where it
//! has only AVX2. So the two give the same bits, which is what lets a run on a CPU without
//! AVX-512 repeat one made with it. One test: the forcing is a process setting.

mod common;
mod conv_order;

use common::{rng, uniform};
use conv_order::{at, bits, check_passes, on_each_version, Model};
use lucir_tensor::{
    conv2d_mapped, conv2d_mapped_bwd, reduction_chunks, ChannelMap, Conv2dGeometry, Tensor,
};

/// N, Ci, Co, H, W.
type Shape = [usize; 5];

/// A 3×3 "same" convolution of `x` (N × `from` channels) with `wt(o, c, tap)` into `to`
/// channels, each output one chain over (c, tap).
fn chain_conv(
    x: &[f32],
    wt: impl Fn(usize, usize, usize) -> f32,
    [n, from, to, h, w]: Shape,
) -> Vec<f32> {
    let mut y = Vec::with_capacity(n * to * h * w);
    for i in 0..n {
        for o in 0..to {
            for r in 0..h {
                for col in 0..w {
                    let mut acc = 0.0f32;
                    for c in 0..from {
                        for t in 0..9 {
                            let (ky, kx) = ((t / 3) as isize, (t % 3) as isize);
                            let v = at(
                                x,
                                [from, h, w],
                                i,
                                c,
                                r as isize + ky - 1,
                                col as isize + kx - 1,
                            );
                            acc = wt(o, c, t).mul_add(v, acc);
                        }
                    }
                    y.push(acc);
                }
            }
        }
    }
    y
}

/// The weight gradient as the kernels sum it.
fn chain_weight_grad(x: &[f32], dy: &[f32], [n, ci, co, h, w]: Shape) -> Vec<f32> {
    let per = n.div_ceil(reduction_chunks(n));
    let mut total: Option<Vec<f32>> = None;
    for first in (0..n).step_by(per.max(1)) {
        let mut acc = vec![0.0f32; co * ci * 9];
        for i in first..(first + per).min(n) {
            for r in 0..h {
                for col in 0..w {
                    for o in 0..co {
                        let d = dy[((i * co + o) * h + r) * w + col];
                        for c in 0..ci {
                            for t in 0..9 {
                                let (ky, kx) = ((t / 3) as isize, (t % 3) as isize);
                                let v = at(
                                    x,
                                    [ci, h, w],
                                    i,
                                    c,
                                    r as isize + ky - 1,
                                    col as isize + kx - 1,
                                );
                                let a = &mut acc[(o * ci + c) * 9 + t];
                                *a = d.mul_add(v, *a);
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
    total.unwrap_or_else(|| vec![0.0; co * ci * 9])
}

/// `map` applied as the kernels apply it while filling their planes.
fn chain_map(x: &[f32], map: &ChannelMap<f32>, [_, ci, _, h, w]: Shape) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(k, &v)| {
            let c = k / (h * w) % ci;
            let v = v * map.scale[c] + map.shift[c];
            if !map.relu || v > 0.0 {
                v
            } else {
                0.0
            }
        })
        .collect()
}

/// Every checked pass of one shape against the model; `kernels` names the version in messages.
fn check_shape(r: &mut rand_chacha::ChaCha8Rng, s: Shape, kernels: &str) {
    let [n, ci, co, h, w] = s;
    let g = Conv2dGeometry { stride: 1, pad: 1 };
    let f = |t: Tensor<f64>| t.cast::<f32>();
    let x = f(uniform(r, &[n, ci, h, w], -1.0, 1.0));
    let k = f(uniform(r, &[co, ci, 3, 3], -1.0, 1.0));
    let dy = f(uniform(r, &[n, co, h, w], -1.0, 1.0));
    let old = f(uniform(r, &[n, ci, h, w], -1.0, 1.0));
    let (xs, ks, dys) = (x.as_slice(), k.as_slice(), dy.as_slice());
    let what = format!("{kernels}, {n}×{ci}×{h}×{w} → {co}");

    let fwd = |xv: &[f32]| chain_conv(xv, |o, c, t| ks[(o * ci + c) * 9 + t], s);
    let model = Model {
        y: fwd(xs),
        dx: chain_conv(
            dys,
            |c, o, t| ks[(o * ci + c) * 9 + 8 - t],
            [n, co, ci, h, w],
        ),
        dw: chain_weight_grad(xs, dys, s),
    };
    check_passes([&x, &k, &dy, &old], g, &model, &what);

    for relu in [false, true] {
        let map = ChannelMap {
            scale: f(uniform(r, &[ci], 0.5, 1.5)).into_vec(),
            shift: f(uniform(r, &[ci], -0.5, 0.5)).into_vec(),
            relu,
        };
        let mapped = chain_map(xs, &map, s);
        let y = conv2d_mapped(&x, &map, &k, g).unwrap();
        assert_eq!(
            bits(y.as_slice()),
            bits(&fwd(&mapped)),
            "mapped forward {what}, relu {relu}"
        );
        let (dm, dw) = conv2d_mapped_bwd(&x, &map, &k, &dy, g).unwrap();
        assert_eq!(
            bits(dm.as_slice()),
            bits(&model.dx),
            "mapped input gradient {what}"
        );
        let dw_mapped = chain_weight_grad(&mapped, dys, s);
        assert_eq!(
            bits(dw.as_slice()),
            bits(&dw_mapped),
            "mapped weight gradient {what}"
        );
    }
}

/// Each shape against the model, inputs drawn from one seed.
fn check_all(kernels: &str) {
    let shapes: [Shape; 14] = [
        [3, 16, 16, 28, 28],
        [1, 32, 32, 14, 14],
        [3, 64, 64, 7, 7],
        [2, 1, 16, 28, 28],
        [2, 3, 16, 32, 32],
        [1, 16, 16, 32, 32],
        [2, 32, 32, 16, 16],
        [1, 64, 64, 8, 8],
        [1, 128, 128, 14, 14],
        [1, 5, 11, 9, 17],
        [3, 7, 3, 13, 12],
        [5, 4, 6, 5, 5],
        [1, 2, 13, 1, 1],
        [2, 3, 5, 2, 3],
    ];
    let mut r = rng(41);
    for s in shapes {
        check_shape(&mut r, s, kernels);
    }
}

#[test]
fn direct_kernels_sum_in_the_modelled_order() {
    on_each_version("direct_kernels_sum_in_the_modelled_order", check_all);
}
