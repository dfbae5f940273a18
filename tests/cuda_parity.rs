//! CPU ↔ CUDA parity of the LUCIR head kernels: for seeded random inputs of awkward sizes, the
//! kernels' forward and backward match the CPU ops (the autograd reference) within
//! |a − b| ≤ 1e-4·|b| + 1e-5·max|b|, reporting the worst element; so does the head step on a
//! tape of device tensors, the path training uses. Cases include a feature row whose norm is
//! clamped at ε, old- and new-class rows for the margin loss, K clamped to the new classes,
//! and a NaN cosine. Without the `cuda`
//! feature or without a GPU every test prints `skipped: no CUDA device` and checks nothing.

/// (B, C, D): not multiples of the block sizes, batch 1 included.
#[allow(dead_code)]
const SHAPES: [(usize, usize, usize); 4] = [(1, 1, 1), (3, 7, 5), (33, 101, 67), (130, 1000, 513)];

#[cfg(feature = "cuda")]
mod gpu_common;

#[cfg(feature = "cuda")]
mod parity {
    use super::SHAPES;
    use crate::gpu_common::{assert_close, device, gpu, random};
    use lucir::autograd::Tape;
    use lucir::cuda::MarginRankArgs;
    use lucir::tensor::{Device, Tensor};

    /// F with its first row zero (when it has two or more), so one norm is clamped at ε.
    fn features(b: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut f = random(b * d, seed);
        if b > 1 {
            f[..d].fill(0.0);
        }
        f
    }

    #[test]
    fn cosine_logits_kernels_match_cpu() {
        let Some(gpu) = gpu() else { return };
        for (b, c, d) in SHAPES {
            let (f, theta) = (features(b, d, 1), random(c * d, 2));
            let (g, extra) = (random(b * c, 3), random(b * c, 4));
            let sigma = 3.5f32;
            let fwd = gpu.cosine_logits_fwd(&f, &theta, sigma, [b, c, d]).unwrap();
            let bwd = gpu.cosine_logits_bwd(&fwd, &g, Some(&extra), true).unwrap();
            let plain = gpu.cosine_logits_bwd(&fwd, &g, None, false).unwrap();
            // CPU: L = Σ z⊙G + Σ cos⊙extra, so ∂L/∂z = G and ∂L/∂cos (extra) = extra.
            let mut t = Tape::new();
            let fv = t.leaf(Tensor::from_vec(&[b, d], f.clone()).unwrap());
            let tv = t.leaf(Tensor::from_vec(&[c, d], theta.clone()).unwrap());
            let sv = t.leaf(Tensor::scalar(sigma));
            let cos = t.cosine_logits(fv, tv).unwrap();
            let z = t.scale(cos, sv).unwrap();
            let l1 = t
                .sum_weighted(z, Tensor::from_vec(&[b, c], g.clone()).unwrap())
                .unwrap();
            let l2 = t
                .sum_weighted(cos, Tensor::from_vec(&[b, c], extra.clone()).unwrap())
                .unwrap();
            let loss = t.add(l1, l2).unwrap();
            let shape = format!("B={b} C={c} D={d}");
            assert_close(
                &format!("cos {shape}"),
                &fwd.cos(&gpu).unwrap(),
                t.value(cos).as_slice(),
            );
            assert_close(
                &format!("z {shape}"),
                &fwd.z(&gpu).unwrap(),
                t.value(z).as_slice(),
            );
            let (f_norm, _) = fwd.norms(&gpu).unwrap();
            if b > 1 {
                assert_eq!(f_norm[0], 1e-12, "the zero row's norm is clamped at ε");
            }
            t.backward(loss).unwrap();
            assert_close(
                &format!("dF {shape}"),
                &bwd.df,
                t.grad(fv).unwrap().as_slice(),
            );
            assert_close(
                &format!("dΘ {shape}"),
                &bwd.dtheta,
                t.grad(tv).unwrap().as_slice(),
            );
            assert_close(
                &format!("dσ {shape}"),
                &[bwd.dsigma.expect("asked for")],
                t.grad(sv).unwrap().as_slice(),
            );
            assert_eq!(plain.dsigma, None);
            // Without `extra` the kernels see a null pointer: the gradient of Σ z⊙G alone.
            let mut t = Tape::new();
            let fv = t.leaf(Tensor::from_vec(&[b, d], f.clone()).unwrap());
            let tv = t.leaf(Tensor::from_vec(&[c, d], theta.clone()).unwrap());
            let cos = t.cosine_logits(fv, tv).unwrap();
            let sc = t.constant(Tensor::scalar(sigma));
            let z = t.scale(cos, sc).unwrap();
            let l = t
                .sum_weighted(z, Tensor::from_vec(&[b, c], g.clone()).unwrap())
                .unwrap();
            t.backward(l).unwrap();
            assert_close(
                &format!("dF, no extra {shape}"),
                &plain.df,
                t.grad(fv).unwrap().as_slice(),
            );
            assert_close(
                &format!("dΘ, no extra {shape}"),
                &plain.dtheta,
                t.grad(tv).unwrap().as_slice(),
            );
        }
    }

    /// How a margin case's random cosines are changed.
    #[derive(Clone, Copy)]
    enum Cosines {
        Random,
        /// B = 1, C = 2: one active pair, 0.5 − 0.2 + 0.1 > 0.
        OnePair,
        /// A NaN among row 0's new-class cosines.
        OneNan,
        /// Rounded to multiples of 0.25: ties within and across the warp lanes' shares.
        Ties,
        /// Row 0: two of four new-class cosines NaN; row 1: three (slots filled by column;
        /// a NaN negative's hinge is 0).
        ManyNans,
    }

    /// (B, C, n_old, K, labels, cosines): old and new rows in every case; K = 2 over one new
    /// class and K = 5 over three (both clamped, with pairs); K = 16 (the most) over 200 new
    /// classes; NaNs; ties.
    fn margin_cases() -> Vec<(usize, usize, usize, usize, Vec<usize>, Cosines)> {
        let mut cases = vec![
            (1, 2, 1, 2, vec![0], Cosines::OnePair),
            (3, 7, 4, 5, vec![0, 5, 3], Cosines::OneNan),
            (4, 5, 4, 2, vec![1, 4, 0, 2], Cosines::Random),
            (
                6,
                80,
                10,
                4,
                (0..6).map(|i| i * 3 % 12).collect(),
                Cosines::Ties,
            ),
            (5, 300, 100, 16, vec![3, 150, 99, 0, 7], Cosines::Random),
            (2, 40, 36, 4, vec![0, 1], Cosines::ManyNans),
        ];
        for (b, c, _) in SHAPES {
            if c >= 4 {
                let labels = (0..b).map(|i| (i * 5 + 1) % c).collect();
                cases.push((b, c, c / 2, 2, labels, Cosines::Random));
            }
        }
        cases
    }

    #[test]
    fn margin_rank_kernels_match_cpu() {
        let Some(gpu) = gpu() else { return };
        for (case, (b, c, n_old, k, labels, how)) in margin_cases().into_iter().enumerate() {
            assert!(
                labels.iter().any(|&l| l < n_old),
                "the case has old-class rows"
            );
            let mut cos = random(b * c, 5 + case as u64);
            match how {
                Cosines::Random => {}
                Cosines::OnePair => cos = vec![0.2, 0.1],
                Cosines::OneNan => cos[6] = f32::NAN,
                Cosines::Ties => cos.iter_mut().for_each(|v| *v = (*v * 4.0).round() / 4.0),
                Cosines::ManyNans => {
                    for j in [37, 39, c + 36, c + 37, c + 38] {
                        cos[j] = f32::NAN;
                    }
                    // Low positives (labels 0 and 1), so the remaining pairs are active.
                    cos[0] = -0.9;
                    cos[c + 1] = -0.9;
                }
            }
            let args = MarginRankArgs {
                n_old,
                k,
                margin: 0.5,
            };
            let fwd = gpu.margin_rank_fwd(&cos, &labels, args, [b, c]).unwrap();
            let dcos = gpu.margin_rank_bwd(&fwd, 1.5).unwrap();
            let mut t = Tape::new();
            let cv = t.leaf(Tensor::from_vec(&[b, c], cos.clone()).unwrap());
            let l = t.margin_rank(cv, &labels, n_old, k, 0.5).unwrap();
            let scaled = t.sum_weighted(l, Tensor::scalar(1.5)).unwrap();
            let shape = format!("B={b} C={c} n_old={n_old} K={k}");
            assert!(
                t.value(l).item().unwrap() > 0.0,
                "{shape}: the case has active pairs"
            );
            assert_close(
                &format!("margin loss {shape}"),
                &[fwd.loss],
                t.value(l).as_slice(),
            );
            t.backward(scaled).unwrap();
            let want = t
                .grad(cv)
                .cloned()
                .unwrap_or_else(|| Tensor::zeros(&[b, c]));
            assert_close(&format!("dcos {shape}"), &dcos, want.as_slice());
        }
    }

    #[test]
    fn feature_distill_kernels_match_cpu() {
        let Some(gpu) = gpu() else { return };
        for (b, _, d) in SHAPES {
            let (f, f_star) = (features(b, d, 6), random(b * d, 7));
            let lambda = 11.18f32;
            let fwd = gpu
                .feature_distill_fwd(&f, &f_star, lambda, [b, d])
                .unwrap();
            let df = gpu.feature_distill_bwd(&fwd, 0.7).unwrap();
            let mut t = Tape::new();
            let fv = t.leaf(Tensor::from_vec(&[b, d], f.clone()).unwrap());
            let star = Tensor::from_vec(&[b, d], f_star.clone()).unwrap();
            let l = t.feature_distill(fv, &star, lambda).unwrap();
            let scaled = t.sum_weighted(l, Tensor::scalar(0.7)).unwrap();
            let shape = format!("B={b} D={d}");
            assert_close(
                &format!("feature-distill loss {shape}"),
                &[fwd.loss],
                t.value(l).as_slice(),
            );
            t.backward(scaled).unwrap();
            assert_close(&format!("dF {shape}"), &df, t.grad(fv).unwrap().as_slice());
        }
    }

    /// The path training uses: the head ops on a tape of device tensors (cosine logits, σ,
    /// cross-entropy, margin ranking, feature distillation) against the same loss on the CPU —
    /// every loss term and every input gradient.
    #[test]
    fn the_head_step_on_device_tensors_matches_the_cpu() {
        let Some(dev) = device() else { return };
        let (b, d, n_old, n_new) = (24, 64, 8, 3);
        let c = n_old + n_new;
        let f = Tensor::from_vec(&[b, d], random(b * d, 11)).unwrap();
        let theta = Tensor::from_vec(&[c, d], random(c * d, 12)).unwrap();
        let f_star = Tensor::from_vec(&[b, d], random(b * d, 13)).unwrap();
        let labels: Vec<usize> = (0..b).map(|i| (i * 5) % c).collect();
        let run = |device: &Device| {
            let on = |t: &Tensor<f32>| t.to_device(device).unwrap();
            let mut t = Tape::<f32>::new();
            let fv = t.leaf(on(&f));
            let tv = t.leaf(on(&theta));
            let sv = t.leaf(on(&Tensor::scalar(4.0f32)));
            let cos = t.cosine_logits(fv, tv).unwrap();
            let z = t.scale(cos, sv).unwrap();
            let ce = t.cross_entropy(z, &labels).unwrap();
            let mr = t.margin_rank(cos, &labels, n_old, 2, 0.5).unwrap();
            let lf = t.feature_distill(fv, &on(&f_star), 7.5).unwrap();
            let s = t.add(ce, mr).unwrap();
            let loss = t.add(s, lf).unwrap();
            t.backward(loss).unwrap();
            let item = |v| t.value(v).item().unwrap();
            let terms = vec![item(ce), item(mr), item(lf), item(loss)];
            let grad = |v| t.grad(v).unwrap().to_cpu().unwrap().into_vec();
            (terms, grad(fv), grad(tv), grad(sv))
        };
        let (g, cpu) = (run(&dev), run(&Device::Cpu));
        assert!(cpu.0[1] > 0.0, "the batch has active margin pairs");
        assert_close("head loss terms (CE, MR, LF, total)", &g.0, &cpu.0);
        assert_close("head dF", &g.1, &cpu.1);
        assert_close("head dΘ", &g.2, &cpu.2);
        assert_close("head dσ", &g.3, &cpu.3);
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_parity_needs_the_cuda_feature() {
    let err = lucir::cuda::Gpu::new(0).unwrap_err();
    assert_eq!(err, lucir::cuda::Error::NotCompiled);
    println!("skipped: no CUDA device ({err}); build with `--features cuda` on a GPU machine");
}
