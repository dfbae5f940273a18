//! Device tensors (the storage enum of docs/design.md §5): moving tensors to a CUDA device and
//! back is exact, and every op with a CUDA arm matches its CPU arm — bit for bit where the
//! device computes the same expression element by element (add, ReLU and its mask, gradient
//! accumulation), within |a − b| ≤ 1e-4·|b| + 1e-5·max|b| for cuBLAS's matrix products. Mixed
//! devices are an error naming the op, and so is an op whose CUDA arm is not written. Without
//! the `cuda` feature, opening a device is `Error::Cuda(NotCompiled)`; with it but without a
//! GPU, each device test prints `skipped: no CUDA device` and checks nothing.

use lucir::tensor::{Device, Error, Tensor};

/// Without the feature the device cannot be opened, and says why instead of panicking.
#[cfg(not(feature = "cuda"))]
#[test]
fn without_the_feature_a_device_is_not_compiled() {
    match Device::cuda(0) {
        Err(Error::Cuda(lucir::cuda::Error::NotCompiled)) => {}
        other => panic!("expected Cuda(NotCompiled), got {other:?}"),
    }
}

/// A CPU tensor stays where it is: `to_device(Cpu)` and `to_cpu` are clones.
#[test]
fn cpu_tensors_move_nowhere() {
    let t = Tensor::from_vec(&[2, 3], vec![1.0f32, -2.0, 3.0, -4.0, 5.0, -6.0]).unwrap();
    assert!(t.is_cpu());
    assert_eq!(t.device(), Device::Cpu);
    assert_eq!(t.to_device(&Device::Cpu).unwrap(), t);
    assert_eq!(t.to_cpu().unwrap(), t);
    let z = Tensor::<f32>::zeros_on(&Device::Cpu, &[4]).unwrap();
    assert_eq!(z, Tensor::zeros(&[4]));
}

#[cfg(feature = "cuda")]
mod gpu_common;

#[cfg(feature = "cuda")]
mod device {
    use super::*;
    use crate::gpu_common::{assert_close, device, random};
    use lucir::tensor::{
        add, add_relu, add_row_bias, batch_norm_eval_add, batch_norm_eval_bwd, batch_norm_train,
        batch_norm_train_add, batch_norm_train_bwd, batch_norm_update_running, column_sums, conv2d,
        conv2d_bwd, conv2d_bwd_add, conv2d_bwd_data, conv2d_bwd_weight, cross_entropy,
        cross_entropy_bwd, global_avg_pool, global_avg_pool_bwd, log_softmax_rows,
        log_softmax_rows_bwd, matmul, relu, relu_bwd, sgd_update, sgd_update_many, Conv2dGeometry,
        SgdHyper, SgdTarget, Transpose,
    };

    /// Reads a device tensor back and compares it with the CPU's within the normwise tolerance.
    fn close(what: &str, got: &Tensor<f32>, want: &Tensor<f32>) {
        let got = got.to_cpu().unwrap();
        assert_eq!(got.shape(), want.shape(), "{what}");
        assert_close(what, got.as_slice(), want.as_slice());
    }

    /// Reads a device tensor back and requires the CPU's bits.
    fn same(what: &str, got: &Tensor<f32>, want: &Tensor<f32>) {
        assert_eq!(&got.to_cpu().unwrap(), want, "{what}");
    }

    fn tensor(shape: &[usize], seed: u64) -> Tensor<f32> {
        Tensor::from_vec(shape, random(shape.iter().product(), seed)).unwrap()
    }

    /// Shapes off every block size, an empty one and a large one (more elements than one grid
    /// of the grid-stride loops covers in a pass).
    const SHAPES: [&[usize]; 5] = [&[1], &[3, 5, 7], &[0, 4], &[16, 16, 32, 32], &[1 << 23]];

    #[test]
    fn tensors_round_trip_exactly() {
        let Some(dev) = device() else { return };
        for (i, shape) in SHAPES.iter().enumerate() {
            let t = tensor(shape, i as u64);
            let d = t.to_device(&dev).unwrap();
            assert!(!d.is_cpu());
            assert_eq!(d.device(), dev);
            assert_eq!(d.shape(), t.shape());
            let back = d.to_cpu().unwrap();
            assert!(back.is_cpu());
            assert_eq!(back.as_slice(), t.as_slice(), "shape {shape:?}");
            let r = d.reshape(&[t.len()]).unwrap();
            assert_eq!(r.to_cpu().unwrap().as_slice(), t.as_slice());
        }
        let z = Tensor::<f32>::zeros_on(&dev, &[3, 5]).unwrap();
        assert_eq!(z.to_cpu().unwrap(), Tensor::zeros(&[3, 5]));
        assert_eq!(
            Tensor::scalar(2.5f32)
                .to_device(&dev)
                .unwrap()
                .item()
                .unwrap(),
            2.5
        );
    }

    #[test]
    fn f64_tensors_stay_on_the_cpu() {
        let Some(dev) = device() else { return };
        let e = Tensor::<f64>::zeros(&[2]).to_device(&dev).unwrap_err();
        assert!(matches!(e, Error::Device { .. }), "{e}");
    }

    #[test]
    fn elementwise_ops_equal_the_cpu_bit_for_bit() {
        let Some(dev) = device() else { return };
        for (i, shape) in SHAPES.iter().enumerate() {
            let (a, b) = (tensor(shape, 10 + i as u64), tensor(shape, 20 + i as u64));
            let (da, db) = (a.to_device(&dev).unwrap(), b.to_device(&dev).unwrap());
            let host = |t: Tensor<f32>| t.to_cpu().unwrap();
            assert_eq!(
                host(add(&da, &db).unwrap()),
                add(&a, &b).unwrap(),
                "add {shape:?}"
            );
            let y = add_relu(&a, &b).unwrap();
            let dy_ = add_relu(&da, &db).unwrap();
            assert_eq!(host(dy_.clone()), y, "add_relu {shape:?}");
            assert_eq!(
                host(relu(&da).unwrap()),
                relu(&a).unwrap(),
                "relu {shape:?}"
            );
            let g = tensor(shape, 30 + i as u64);
            let dg = g.to_device(&dev).unwrap();
            assert_eq!(
                host(relu_bwd(&dy_, dg).unwrap()),
                relu_bwd(&y, g).unwrap(),
                "relu_bwd {shape:?}"
            );
            let (mut acc, mut dacc) = (a.clone(), da.clone());
            acc.add_assign(&b).unwrap();
            dacc.add_assign(&db).unwrap();
            assert_eq!(host(dacc), acc, "add_assign {shape:?}");
        }
    }

    #[test]
    fn matmul_matches_the_cpu_in_every_transpose() {
        let Some(dev) = device() else { return };
        let no_yes = [Transpose::No, Transpose::Yes];
        for (m, n, k) in [
            (1, 1, 1),
            (3, 7, 5),
            (128, 100, 64),
            (33, 1000, 513),
            (5, 3, 0),
        ] {
            for ta in no_yes {
                for tb in no_yes {
                    let sa = if ta == Transpose::No { [m, k] } else { [k, m] };
                    let sb = if tb == Transpose::No { [k, n] } else { [n, k] };
                    let (a, b) = (tensor(&sa, 1), tensor(&sb, 2));
                    let (da, db) = (a.to_device(&dev).unwrap(), b.to_device(&dev).unwrap());
                    let want = matmul(&a, ta, &b, tb).unwrap();
                    let got = matmul(&da, ta, &db, tb).unwrap().to_cpu().unwrap();
                    assert_eq!(got.shape(), want.shape());
                    let what = format!("matmul M={m} N={n} K={k} {ta:?} {tb:?}");
                    assert_close(&what, got.as_slice(), want.as_slice());
                }
            }
        }
    }

    /// [N, Ci, H, W, Co, K, stride, pad]: every ResNet-20/32/56/18 layer kind (the stems, 3×3
    /// stride 1 and 2, the 1×1 stride-2 shortcuts, ResNet-18's 7×7 stem), odd batches and sides.
    const CONVS: [[usize; 8]; 9] = [
        [3, 3, 32, 32, 16, 3, 1, 1],
        [1, 1, 28, 28, 16, 3, 1, 1],
        [21, 16, 32, 32, 16, 3, 1, 1],
        [3, 16, 32, 32, 32, 3, 2, 1],
        [3, 16, 15, 15, 32, 1, 2, 0],
        [5, 32, 16, 16, 64, 3, 2, 1],
        [3, 64, 8, 8, 64, 3, 1, 1],
        [2, 3, 37, 37, 64, 7, 2, 3],
        [0, 16, 8, 8, 16, 3, 1, 1],
    ];

    #[test]
    fn convolutions_match_the_cpu_forward_and_backward() {
        let Some(dev) = device() else { return };
        convolutions_match(&dev);
    }

    /// The same through im2col and cuBLAS (what runs where cuDNN cannot be loaded): whole
    /// batches at once, then in chunks of a few images (as large batches go), down to one.
    #[test]
    fn im2col_convolutions_match_the_cpu_forward_and_backward() {
        let Some(dev) = device() else { return };
        let Device::Cuda(gpu) = &dev else {
            unreachable!("a CUDA device")
        };
        gpu.use_im2col_convolutions(true);
        convolutions_match(&dev);
        gpu.set_im2col_chunk_floats(40_000);
        convolutions_match(&dev);
    }

    /// Every shape of [`CONVS`] on `dev` against the CPU: forward, both gradients together and
    /// alone, the gradient added into another, and the weight gradient's bits repeated.
    fn convolutions_match(dev: &Device) {
        for (i, &[n, ci, h, w, co, k, stride, pad]) in CONVS.iter().enumerate() {
            let g = Conv2dGeometry { stride, pad };
            let seed = 100 * i as u64;
            let (x, wt) = (
                tensor(&[n, ci, h, w], seed),
                tensor(&[co, ci, k, k], seed + 1),
            );
            let y = conv2d(&x, &wt, g).unwrap();
            let dy = tensor(y.shape(), seed + 2);
            let acc = tensor(x.shape(), seed + 3);
            let on = |t: &Tensor<f32>| t.to_device(dev).unwrap();
            let (dx_, dw_, ddy) = (on(&x), on(&wt), on(&dy));
            let what = format!("N={n} Ci={ci} {h}×{w} Co={co} {k}×{k}/{stride} pad {pad}");
            let close = |name: &str, got: Tensor<f32>, want: &Tensor<f32>| {
                let got = got.to_cpu().unwrap();
                assert_eq!(got.shape(), want.shape(), "{name} {what}");
                assert_close(&format!("{name} {what}"), got.as_slice(), want.as_slice());
            };
            close("y", conv2d(&dx_, &dw_, g).unwrap(), &y);
            let (dx, dw) = conv2d_bwd(&x, &wt, &dy, g).unwrap();
            let (gdx, gdw) = conv2d_bwd(&dx_, &dw_, &ddy, g).unwrap();
            close("dx", gdx, &dx);
            close("dw", gdw.clone(), &dw);
            close(
                "dx alone",
                conv2d_bwd_data(&dx_, &dw_, &ddy, g).unwrap(),
                &dx,
            );
            close(
                "dw alone",
                conv2d_bwd_weight(&dx_, &dw_, &ddy, g).unwrap(),
                &dw,
            );
            let (sum, dw2) = conv2d_bwd_add(&x, &wt, &dy, g, acc.clone()).unwrap();
            let (gsum, gdw2) = conv2d_bwd_add(&dx_, &dw_, &ddy, g, on(&acc)).unwrap();
            close("acc + dx", gsum, &sum);
            close("dw (adding)", gdw2, &dw2);
            // The same call twice gives the same bits (deterministic algorithms).
            let again = conv2d_bwd_weight(&dx_, &dw_, &ddy, g).unwrap();
            assert_eq!(
                again.to_cpu().unwrap(),
                gdw.to_cpu().unwrap(),
                "dw repeats {what}"
            );
        }
    }

    #[test]
    fn batch_norm_ops_match_the_cpu() {
        let Some(dev) = device() else { return };
        for (i, dims) in [[3, 5, 7, 7], [16, 16, 32, 32], [1, 4, 1, 1]]
            .into_iter()
            .enumerate()
        {
            let c = dims[1];
            let s = 300 + 10 * i as u64;
            let (x, r, dy) = (tensor(&dims, s), tensor(&dims, s + 1), tensor(&dims, s + 2));
            let (g, b) = (tensor(&[c], s + 3), tensor(&[c], s + 4));
            let (rm, rv) = (
                tensor(&[c], s + 5),
                tensor(&[c], s + 6).map(|v| v.abs() + 0.5),
            );
            let on = |t: &Tensor<f32>| t.to_device(&dev).unwrap();
            let (dx_, dr, ddy, dg, db, drm, drv) =
                (on(&x), on(&r), on(&dy), on(&g), on(&b), on(&rm), on(&rv));
            for relu in [false, true] {
                let what = format!("{dims:?} relu={relu}");
                let (y, st) = batch_norm_train(&x, &g, &b, 1e-5, relu).unwrap();
                let (gy, gst) = batch_norm_train(&dx_, &dg, &db, 1e-5, relu).unwrap();
                close(&format!("train y {what}"), &gy, &y);
                close(&format!("mean {what}"), &gst.mean, &st.mean);
                close(&format!("var {what}"), &gst.var, &st.var);
                let (ya, _) = batch_norm_train_add(&x, &g, &b, 1e-5, &r, relu).unwrap();
                let (gya, _) = batch_norm_train_add(&dx_, &dg, &db, 1e-5, &dr, relu).unwrap();
                close(&format!("train+add y {what}"), &gya, &ya);
                // The CPU backward with the device's statistics, so both masks agree.
                let host_st = lucir::tensor::BatchNormStats {
                    mean: gst.mean.to_cpu().unwrap(),
                    var: gst.var.to_cpu().unwrap(),
                    inv_std: gst.inv_std.to_cpu().unwrap(),
                    count: gst.count,
                };
                let (dx, dgam, dbet) =
                    batch_norm_train_bwd(&x, &g, &b, &host_st, &dy, relu).unwrap();
                let (gdx, gdgam, gdbet) =
                    batch_norm_train_bwd(&dx_, &dg, &db, &gst, &ddy, relu).unwrap();
                close(&format!("train dx {what}"), &gdx, &dx);
                close(&format!("dγ {what}"), &gdgam, &dgam);
                close(&format!("dβ {what}"), &gdbet, &dbet);
                for res in [None, Some((&r, &dr))] {
                    let ye =
                        batch_norm_eval_add(&x, [&g, &b], (&rm, &rv), 1e-5, res.map(|p| p.0), relu);
                    let gye = batch_norm_eval_add(
                        &dx_,
                        [&dg, &db],
                        (&drm, &drv),
                        1e-5,
                        res.map(|p| p.1),
                        relu,
                    );
                    close(&format!("eval y {what}"), &gye.unwrap(), &ye.unwrap());
                }
                let (edx, edg, edb) =
                    batch_norm_eval_bwd(&x, [&g, &b], (&rm, &rv), 1e-5, &dy, relu).unwrap();
                let (gedx, gedg, gedb) =
                    batch_norm_eval_bwd(&dx_, [&dg, &db], (&drm, &drv), 1e-5, &ddy, relu).unwrap();
                close(&format!("eval dx {what}"), &gedx, &edx);
                close(&format!("eval dγ {what}"), &gedg, &edg);
                close(&format!("eval dβ {what}"), &gedb, &edb);
                let (mut m, mut v) = (rm.clone(), rv.clone());
                batch_norm_update_running((&mut m, &mut v), &host_st, 0.1).unwrap();
                let (mut gm, mut gv) = (drm.clone(), drv.clone());
                batch_norm_update_running((&mut gm, &mut gv), &gst, 0.1).unwrap();
                same(&format!("running mean {what}"), &gm, &m);
                same(&format!("running var {what}"), &gv, &v);
            }
        }
    }

    #[test]
    fn pooling_softmax_loss_bias_and_sgd_match_the_cpu() {
        let Some(dev) = device() else { return };
        let on = |t: &Tensor<f32>| t.to_device(&dev).unwrap();
        for (i, dims) in [[3, 5, 7, 7], [128, 64, 8, 8]].into_iter().enumerate() {
            let x = tensor(&dims, 400 + i as u64);
            let y = global_avg_pool(&x).unwrap();
            close(
                &format!("gap {dims:?}"),
                &global_avg_pool(&on(&x)).unwrap(),
                &y,
            );
            let dy = tensor(y.shape(), 410 + i as u64);
            let dx = global_avg_pool_bwd(&dims, &dy).unwrap();
            close(
                &format!("gap bwd {dims:?}"),
                &global_avg_pool_bwd(&dims, &on(&dy)).unwrap(),
                &dx,
            );
        }
        for (i, (b, c)) in [(1, 1), (3, 7), (128, 100), (33, 1000)]
            .into_iter()
            .enumerate()
        {
            let seed = 500 + 10 * i as u64;
            let z = tensor(&[b, c], seed).map(|v| 4.0 * v);
            let labels: Vec<usize> = (0..b).map(|r| (r * 7 + 3) % c).collect();
            let lp = log_softmax_rows(&z).unwrap();
            close(
                &format!("log_softmax {b}×{c}"),
                &log_softmax_rows(&on(&z)).unwrap(),
                &lp,
            );
            let g = tensor(&[b, c], seed + 1);
            let dz = log_softmax_rows_bwd(&lp, &g).unwrap();
            let gdz = log_softmax_rows_bwd(&on(&lp), &on(&g)).unwrap();
            close(&format!("log_softmax bwd {b}×{c}"), &gdz, &dz);
            let (loss, log_p) = cross_entropy(&z, &labels).unwrap();
            let (gloss, glog_p) = cross_entropy(&on(&z), &labels).unwrap();
            close(&format!("cross-entropy {b}×{c}"), &gloss, &loss);
            let up = Tensor::scalar(2.5f32);
            let dz = cross_entropy_bwd(&log_p, &labels, &up).unwrap();
            let gdz = cross_entropy_bwd(&glog_p, &labels, &on(&up)).unwrap();
            close(&format!("cross-entropy bwd {b}×{c}"), &gdz, &dz);
            let bias = tensor(&[c], seed + 2);
            let (mut yc, mut yg) = (g.clone(), on(&g));
            add_row_bias(&mut yc, &bias).unwrap();
            add_row_bias(&mut yg, &on(&bias)).unwrap();
            same(&format!("bias add {b}×{c}"), &yg, &yc);
            same(
                &format!("column sums {b}×{c}"),
                &column_sums(&on(&g)).unwrap(),
                &column_sums(&g).unwrap(),
            );
        }
        // Distillation towards the previous model's logits of the old classes (a column
        // slice), forward and backward.
        let (b, c, old) = (33, 12, 7);
        let (z, t) = (
            tensor(&[b, c], 520).map(|v| 3.0 * v),
            tensor(&[b, old], 521),
        );
        let zo = lucir::tensor::slice_cols(&z, 0, old).unwrap();
        let gzo = lucir::tensor::slice_cols(&on(&z), 0, old).unwrap();
        same("slice_cols", &gzo, &zo);
        let (loss, lq, lp) = lucir::tensor::kd(&zo, &t, 2.0).unwrap();
        let (gloss, glq, glp) = lucir::tensor::kd(&gzo, &on(&t), 2.0).unwrap();
        close("kd loss", &gloss, &loss);
        let up = Tensor::scalar(1.5f32);
        let dz = lucir::tensor::kd_bwd(&lq, &lp, 2.0, &up).unwrap();
        let gdz = lucir::tensor::kd_bwd(&glq, &glp, 2.0, &on(&up)).unwrap();
        close("kd dz", &gdz, &dz);
        let dx = lucir::tensor::slice_cols_bwd(&dz, c, 0).unwrap();
        let gdx = lucir::tensor::slice_cols_bwd(&on(&dz), c, 0).unwrap();
        same("slice_cols bwd", &gdx, &dx);
        // Three SGD updates: the same parameter and velocity bits.
        let h = SgdHyper {
            lr: 0.1,
            weight_decay: 5e-4,
            momentum: 0.9,
        };
        let (mut p, mut gp) = (tensor(&[1000, 3], 600), on(&tensor(&[1000, 3], 600)));
        let (mut v, mut gv) = (None, None);
        for step in 0..3 {
            let g = tensor(&[1000, 3], 610 + step);
            v = Some(sgd_update(&mut p, &g, v.take(), h).unwrap());
            gv = Some(sgd_update(&mut gp, &on(&g), gv.take(), h).unwrap());
            same(&format!("sgd p, step {step}"), &gp, &p);
            same(
                &format!("sgd v, step {step}"),
                gv.as_ref().unwrap(),
                v.as_ref().unwrap(),
            );
        }
        // A grouped update (one launch) of tensors of several sizes, one of them on its first
        // step: the CPU's bits, tensor by tensor.
        let shapes: [&[usize]; 4] = [&[1000, 3], &[16, 3, 3, 3], &[70_000], &[1]];
        let mut cpu: Vec<Tensor<f32>> = (0..4).map(|i| tensor(shapes[i], 620 + i as u64)).collect();
        let mut gpu: Vec<Tensor<f32>> = cpu.iter().map(on).collect();
        let mut vc: Vec<Option<Tensor<f32>>> = vec![None; 4];
        let mut vg = vc.clone();
        for step in 0..3u64 {
            let grads: Vec<Tensor<f32>> = (0..4)
                .map(|i| tensor(shapes[i], 630 + 4 * step + i as u64))
                .collect();
            let on_grads: Vec<Tensor<f32>> = grads.iter().map(on).collect();
            // The last tensor joins at the second step: its first update inside a group.
            let live = if step == 0 { 3 } else { 4 };
            let group =
                |ps: &mut [Tensor<f32>], gs: &[Tensor<f32>], vs: &mut [Option<Tensor<f32>>]| {
                    let targets = ps[..live]
                        .iter_mut()
                        .zip(gs)
                        .zip(vs.iter_mut())
                        .map(|((p, g), v)| SgdTarget { p, g, v: v.take() })
                        .collect();
                    for (slot, v) in vs.iter_mut().zip(sgd_update_many(targets, h).unwrap()) {
                        *slot = Some(v);
                    }
                };
            group(&mut cpu, &grads, &mut vc);
            group(&mut gpu, &on_grads, &mut vg);
            for i in 0..live {
                same(&format!("grouped sgd p{i}, step {step}"), &gpu[i], &cpu[i]);
                let (a, b) = (vg[i].as_ref().unwrap(), vc[i].as_ref().unwrap());
                same(&format!("grouped sgd v{i}, step {step}"), a, b);
            }
        }
    }

    /// ResNet-18's stem pool (3×3, stride 2, padding 1) and a window without padding: the
    /// same maxima and the same routed gradients (each input adds the gradients of the
    /// windows it won, in the CPU's order).
    #[test]
    fn max_pooling_matches_the_cpu() {
        let Some(dev) = device() else { return };
        let cases = [
            ([2, 3, 9, 9], 3, 2, 1),
            ([4, 64, 56, 56], 3, 2, 1),
            ([1, 2, 6, 7], 2, 2, 0),
        ];
        for (i, (dims, kernel, stride, pad)) in cases.into_iter().enumerate() {
            let g = lucir::tensor::MaxPoolGeometry {
                kernel,
                stride,
                pad,
            };
            let x = tensor(&dims, 700 + i as u64);
            let (y, arg) = lucir::tensor::max_pool2d(&x, g).unwrap();
            let (gy, garg) = lucir::tensor::max_pool2d(&x.to_device(&dev).unwrap(), g).unwrap();
            same(&format!("max pool {dims:?}"), &gy, &y);
            let dy = tensor(y.shape(), 710 + i as u64);
            let dx = lucir::tensor::max_pool2d_bwd(&dims, &arg, g, &dy).unwrap();
            let gdy = dy.to_device(&dev).unwrap();
            let gdx = lucir::tensor::max_pool2d_bwd(&dims, &garg, g, &gdy).unwrap();
            same(&format!("max pool bwd {dims:?}"), &gdx, &dx);
        }
    }

    #[test]
    fn mixed_devices_and_missing_arms_are_errors_naming_the_op() {
        let Some(dev) = device() else { return };
        let a = tensor(&[2, 3], 1);
        let da = a.to_device(&dev).unwrap();
        let e = add(&a, &da).unwrap_err();
        assert!(matches!(e, Error::Device { op: "add", .. }), "{e}");
        let e = lucir::tensor::topk_rows(&da, 1).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Device {
                    op: "topk_rows",
                    ..
                }
            ),
            "{e}"
        );
    }

    /// A loader's batches rendered on the device from its uploaded split: the host loader's
    /// images bit for bit, its labels and ids, for two training epochs (the second resumed
    /// after its first batch, a short last batch) and the mirrored test transform, on RGB
    /// images and on grey images twice as wide as high (a central window far along the row).
    #[test]
    fn batches_rendered_on_the_device_match_the_host_loader() {
        let Some(dev) = device() else { return };
        for shape in [[3, 10, 12], [1, 10, 20]] {
            device_batches_match(&dev, shape);
        }
    }

    fn device_batches_match(dev: &Device, shape: [usize; 3]) {
        use lucir::data::{Augment, Loader, Normalization, Pixels, Sample, Split};
        use std::sync::Arc;
        let n = 40;
        let pixels: Vec<u8> = random(n * shape.iter().product::<usize>(), 900)
            .iter()
            .map(|v| ((v + 1.0) * 127.5).clamp(0.0, 255.0) as u8)
            .collect();
        let split = Arc::new(Split {
            images: Pixels::Memory(pixels),
            labels: (0..n).map(|i| i % 5).collect(),
            shape,
        });
        // Every split image but a few, so that positions and split indices differ.
        let samples: Vec<Sample> = (0..n)
            .filter(|i| i % 7 != 3)
            .map(|id| Sample { id, label: id % 5 })
            .collect();
        let augment = Augment {
            crop: 8,
            pad: 2,
            flip: true,
        };
        let norm = || match shape[0] {
            3 => Normalization::cifar(),
            _ => Normalization::fmnist(),
        };
        let train = Loader::train(split.clone(), samples.clone(), 16, norm(), augment, 7);
        let test = Loader::test(split, samples, 16, norm(), augment, true);
        for (loader, epoch, first) in [(&train, 0, 0), (&train, 1, 1), (&test, 0, 0)] {
            let px = loader
                .upload_pixels(dev)
                .unwrap()
                .expect("an in-memory split");
            let host: Vec<_> = loader
                .epoch_from(epoch, first)
                .map(|b| b.unwrap())
                .collect();
            let on: Vec<_> = loader
                .epoch_on(&px, epoch, first)
                .map(|b| b.unwrap())
                .collect();
            assert_eq!(on.len(), host.len(), "epoch {epoch} from {first}");
            for (k, (d, h)) in on.iter().zip(&host).enumerate() {
                assert_eq!((&d.labels, &d.ids), (&h.labels, &h.ids), "batch {k}");
                assert!(!d.images.is_cpu(), "batch {k} is rendered on the device");
                same(
                    &format!("{shape:?} epoch {epoch}, batch {k}"),
                    &d.images,
                    &h.images,
                );
            }
        }
        assert!(train.upload_pixels(&Device::Cpu).unwrap().is_none());
    }
}
