//! CPU ↔ CUDA parity of the LUCIR head kernels: for seeded random inputs of awkward sizes, the
//! kernels' forward and backward match the CPU ops (the autograd reference) within
//! |a − b| ≤ 1e-5 + 1e-4·|b|, reporting the worst element. Without the `cuda` feature or
//! without a GPU every test prints `skipped: no CUDA device` and checks nothing.

/// (B, C, D): not multiples of the block sizes, batch 1 included.
#[allow(dead_code)]
const SHAPES: [(usize, usize, usize); 4] = [(1, 1, 1), (3, 7, 5), (33, 101, 67), (130, 1000, 513)];

#[cfg(feature = "cuda")]
mod parity {
    use super::SHAPES;
    use lucir::autograd::Tape;
    use lucir::cuda::Gpu;
    use lucir::tensor::Tensor;

    /// The GPU, or `None` (printing why) when the machine has none. Any other failure — a PTX
    /// the driver refuses, a kernel missing from a module — fails the test.
    fn gpu() -> Option<Gpu> {
        match Gpu::new(0) {
            Ok(g) => Some(g),
            Err(e @ lucir::cuda::Error::NoDevice(_)) => {
                println!("skipped: no CUDA device ({e})");
                None
            }
            Err(e) => panic!("a CUDA device is present but unusable: {e}"),
        }
    }

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Asserts closeness and reports the worst element; a non-finite value on either side
    /// where the other is finite fails.
    fn assert_close(what: &str, gpu: &[f32], cpu: &[f32]) {
        assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
        if let Some(i) = (0..gpu.len()).find(|&i| gpu[i].is_finite() != cpu[i].is_finite()) {
            panic!("{what}: element {i}: gpu {} cpu {}", gpu[i], cpu[i]);
        }
        let mut worst = (0.0f32, 0usize);
        for (i, (a, b)) in gpu.iter().zip(cpu).enumerate() {
            let excess = (a - b).abs() - (1e-5 + 1e-4 * b.abs());
            if excess > worst.0 || i == 0 {
                worst = (excess, i);
            }
        }
        let i = worst.1;
        println!(
            "{what}: worst element {i}: gpu {} cpu {} (excess over tolerance {:.3e})",
            gpu[i], cpu[i], worst.0
        );
        assert!(
            worst.0 <= 0.0,
            "{what}: element {i} differs: gpu {} cpu {}",
            gpu[i],
            cpu[i]
        );
    }

    #[test]
    fn cosine_logits_kernels_match_cpu() {
        let Some(gpu) = gpu() else { return };
        for (b, c, d) in SHAPES {
            let (f, theta) = (random(b * d, 1), random(c * d, 2));
            let (g, extra) = (random(b * c, 3), random(b * c, 4));
            let sigma = 3.5f32;
            let fwd = gpu.cosine_logits_fwd(&f, &theta, sigma, [b, c, d]).unwrap();
            let bwd = gpu
                .cosine_logits_bwd(&f, &theta, sigma, &g, Some(&extra), &fwd.cos, [b, c, d])
                .unwrap();
            // CPU: L = Σ z⊙G + Σ cos⊙extra, so ∂L/∂z = G and ∂L/∂cos (extra) = extra.
            let mut t = Tape::new();
            let fv = t.leaf(Tensor::from_vec(&[b, d], f.clone()).unwrap());
            let tv = t.leaf(Tensor::from_vec(&[c, d], theta.clone()).unwrap());
            let sv = t.leaf(Tensor::scalar(sigma));
            let cos = t.cosine(fv, tv).unwrap();
            let z = t.scale(cos, sv).unwrap();
            let l1 = t
                .sum_weighted(z, Tensor::from_vec(&[b, c], g.clone()).unwrap())
                .unwrap();
            let l2 = t
                .sum_weighted(cos, Tensor::from_vec(&[b, c], extra.clone()).unwrap())
                .unwrap();
            let loss = t.add(l1, l2).unwrap();
            let shape = format!("B={b} C={c} D={d}");
            assert_close(&format!("cos {shape}"), &fwd.cos, t.value(cos).as_slice());
            assert_close(&format!("z {shape}"), &fwd.z, t.value(z).as_slice());
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
                &[bwd.dsigma],
                t.grad(sv).unwrap().as_slice(),
            );
        }
    }

    #[test]
    fn margin_rank_kernels_match_cpu() {
        let Some(gpu) = gpu() else { return };
        for (b, c, _) in SHAPES {
            let n_old = c / 2;
            let cos = random(b * c, 5);
            let labels: Vec<usize> = (0..b).map(|i| (i * 7 + 3) % c).collect();
            let loss = gpu
                .margin_rank_fwd(&cos, &labels, n_old, 2, 0.5, [b, c])
                .unwrap();
            let dcos = gpu
                .margin_rank_bwd(&cos, &labels, n_old, 2, 0.5, 1.5, [b, c])
                .unwrap();
            let mut t = Tape::new();
            let cv = t.leaf(Tensor::from_vec(&[b, c], cos.clone()).unwrap());
            let l = t.margin_rank(cv, &labels, n_old, 2, 0.5).unwrap();
            let scaled = t.sum_weighted(l, Tensor::scalar(1.5)).unwrap();
            let shape = format!("B={b} C={c}");
            assert_close(
                &format!("margin loss {shape}"),
                &[loss],
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
            let (f, f_star) = (random(b * d, 6), random(b * d, 7));
            let lambda = 11.18f32;
            let loss = gpu
                .feature_distill_fwd(&f, &f_star, lambda, [b, d])
                .unwrap();
            let df = gpu
                .feature_distill_bwd(&f, &f_star, lambda, 0.7, [b, d])
                .unwrap();
            let mut t = Tape::new();
            let fv = t.leaf(Tensor::from_vec(&[b, d], f.clone()).unwrap());
            let star = Tensor::from_vec(&[b, d], f_star.clone()).unwrap();
            let l = t.less_forget(fv, &star, lambda).unwrap();
            let scaled = t.sum_weighted(l, Tensor::scalar(0.7)).unwrap();
            let shape = format!("B={b} D={d}");
            assert_close(
                &format!("less-forget loss {shape}"),
                &[loss],
                t.value(l).as_slice(),
            );
            t.backward(scaled).unwrap();
            assert_close(&format!("dF {shape}"), &df, t.grad(fv).unwrap().as_slice());
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_parity_needs_the_cuda_feature() {
    let err = lucir::cuda::Gpu::new(0).unwrap_err();
    assert_eq!(err, lucir::cuda::Error::NotCompiled);
    println!("skipped: no CUDA device ({err}); build with `--features cuda` on a GPU machine");
}
