//! CPU ↔ CUDA parity of the training-path kernels — batch norm (training and evaluation mode,
//! with the fused residual add and ReLU, the backward passes and the running statistics),
//! global average and max pooling, log-softmax and cross-entropy: for seeded random inputs of
//! awkward sizes (N=3, C=5, 7×7) and ResNet-like ones (N=16, C=16, 32×32), the device results
//! match the `lucir_tensor` ops (and the autograd and layer code that uses them) within
//! |a − b| ≤ 1e-4·|b| + 1e-5·max|b|, reporting the worst element. The batch-norm forward and
//! backward passes also give the same bits on a second run. Without a GPU every test prints
//! `skipped: no CUDA device` and checks nothing.
#![cfg(feature = "cuda")]

mod gpu_common;

use gpu_common::{assert_close, gpu};
use lucir::autograd::Tape;
use lucir::cuda::{BatchNormMode, BatchNormRelu, BatchNormStats, Gpu, MaxPoolWindow, RunningStats};
use lucir::nn::{BatchNorm2d, Mode};
use lucir::tensor::{self as lt, MaxPoolGeometry, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A device buffer of f32.
type Buf = lucir::cuda::Buffer;

const EPS: f32 = 1e-5;
/// N×C×H×W: awkward sizes, a single image, ResNet's first stage on CIFAR at batch 16.
const SHAPES: [[usize; 4]; 3] = [[3, 5, 7, 7], [1, 4, 5, 3], [16, 16, 32, 32]];

/// `n` values uniform in `[lo, hi)`.
fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn tensor(shape: &[usize], v: &[f32]) -> Tensor<f32> {
    Tensor::from_vec(shape, v.to_vec()).unwrap()
}

fn up(gpu: &Gpu, v: &[f32]) -> Buf {
    gpu.upload(v).unwrap()
}

fn down(gpu: &Gpu, b: &Buf, n: usize) -> Vec<f32> {
    gpu.download(b, n).unwrap()
}

/// One batch norm's inputs: x (mean ≈ 0.25), γ, β, a residual, an output gradient, running
/// statistics.
struct BnCase {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    res: Vec<f32>,
    dy: Vec<f32>,
    running: (Vec<f32>, Vec<f32>),
}

fn bn_case([n, c, h, w]: [usize; 4], seed: u64) -> BnCase {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len = n * c * h * w;
    BnCase {
        x: uniform(&mut rng, len, -1.75, 2.25),
        gamma: uniform(&mut rng, c, 0.5, 1.5),
        beta: uniform(&mut rng, c, -0.5, 0.5),
        res: uniform(&mut rng, len, -1.0, 1.0),
        dy: uniform(&mut rng, len, -1.0, 1.0),
        running: (
            uniform(&mut rng, c, -0.5, 0.5),
            uniform(&mut rng, c, 0.5, 2.0),
        ),
    }
}

/// A batch-norm case on the device: x, γ, β, residual, dy, running mean, running variance.
struct BnDev([Buf; 7]);

impl BnDev {
    fn of(gpu: &Gpu, k: &BnCase) -> Self {
        BnDev([
            up(gpu, &k.x),
            up(gpu, &k.gamma),
            up(gpu, &k.beta),
            up(gpu, &k.res),
            up(gpu, &k.dy),
            up(gpu, &k.running.0),
            up(gpu, &k.running.1),
        ])
    }
}

/// The ReLU mask the backward pass is given: from the stored output when a residual is added
/// (the fused add node), recomputed from x otherwise.
fn relu_mask(y: &Buf, relu: bool, residual: bool) -> BatchNormRelu<'_> {
    match (relu, residual) {
        (false, _) => BatchNormRelu::Off,
        (true, false) => BatchNormRelu::Fused,
        (true, true) => BatchNormRelu::Output(y),
    }
}

/// The CPU backward pass's `(dy, relu)`: with a residual, `dy` masked by the (device) output
/// and no ReLU inside the batch norm (the fused add node's backward); otherwise `dy` as it is.
fn cpu_grad_in(
    dims: [usize; 4],
    k: &BnCase,
    y: &[f32],
    relu: bool,
    residual: bool,
) -> (Tensor<f32>, bool) {
    let dy = tensor(&dims, &k.dy);
    match (relu, residual) {
        (true, true) => (lt::relu_bwd(&tensor(&dims, y), dy).unwrap(), false),
        _ => (dy, relu),
    }
}

/// Compares the device gradients with the CPU's `(dx, dγ, dβ)` and the residual's gradient.
fn check_grads(
    gpu: &Gpu,
    what: &str,
    grads: &lucir::cuda::BatchNormGrads,
    (dx, dg, db): &(Tensor<f32>, Tensor<f32>, Tensor<f32>),
    dres: Option<&Tensor<f32>>,
) {
    let (len, c) = (dx.as_slice().len(), dg.len());
    let (dg, db) = (dg.as_slice(), db.as_slice());
    assert_close(
        &format!("dx {what}"),
        &down(gpu, &grads.dx, len),
        dx.as_slice(),
    );
    assert_close(&format!("dγ {what}"), &down(gpu, &grads.dgamma, c), dg);
    assert_close(&format!("dβ {what}"), &down(gpu, &grads.dbeta, c), db);
    match (dres, &grads.dres) {
        (Some(r), Some(d)) => {
            assert_close(&format!("dres {what}"), &down(gpu, d, len), r.as_slice())
        }
        (None, None) => {}
        _ => {
            panic!("{what}: the residual's gradient is returned exactly with a ReLU after the add")
        }
    }
}

/// The device statistics as the CPU type (the CPU backward pass then sees the same values, so
/// its recomputed ReLU mask is the device's).
fn stats_of(gpu: &Gpu, s: &BatchNormStats, c: usize) -> lt::BatchNormStats<f32> {
    lt::BatchNormStats {
        mean: tensor(&[c], &down(gpu, &s.mean, c)),
        var: tensor(&[c], &down(gpu, &s.var, c)),
        inv_std: tensor(&[c], &down(gpu, &s.inv_std, c)),
        count: s.count,
    }
}

#[test]
fn batch_norm_train_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    for (seed, dims) in SHAPES.into_iter().enumerate() {
        let [n, c, h, w] = dims;
        let len = n * c * h * w;
        let k = bn_case(dims, seed as u64);
        let d = BnDev::of(&gpu, &k);
        let [x, gamma, beta, res, dy, ..] = &d.0;
        let (xt, rt) = (tensor(&dims, &k.x), tensor(&dims, &k.res));
        let (gt, bt) = (tensor(&[c], &k.gamma), tensor(&[c], &k.beta));
        for relu in [false, true] {
            for residual in [false, true] {
                let what = format!("{dims:?} relu={relu} residual={residual}");
                let r = residual.then_some(res);
                let (y, stats) = gpu
                    .batch_norm_train_fwd(x, (gamma, beta), EPS, r, relu, dims)
                    .unwrap();
                let (y_cpu, st) = match residual {
                    true => lt::batch_norm_train_add(&xt, &gt, &bt, EPS, &rt, relu),
                    false => lt::batch_norm_train(&xt, &gt, &bt, EPS, relu),
                }
                .unwrap();
                let y_dev = down(&gpu, &y, len);
                assert_close(&format!("y {what}"), &y_dev, y_cpu.as_slice());
                let sd = stats_of(&gpu, &stats, c);
                for (name, a, b) in [
                    ("mean", &sd.mean, &st.mean),
                    ("var", &sd.var, &st.var),
                    ("inv_std", &sd.inv_std, &st.inv_std),
                ] {
                    assert_close(&format!("{name} {what}"), a.as_slice(), b.as_slice());
                }
                assert_eq!(stats.count, st.count, "{what}: count");

                let mask = relu_mask(&y, relu, residual);
                let grads = gpu
                    .batch_norm_bwd(
                        x,
                        (gamma, beta),
                        BatchNormMode::Train(&stats),
                        dy,
                        mask,
                        dims,
                    )
                    .unwrap();
                let (g, fused) = cpu_grad_in(dims, &k, &y_dev, relu, residual);
                let cpu = lt::batch_norm_train_bwd(&xt, &gt, &bt, &sd, &g, fused).unwrap();
                check_grads(&gpu, &what, &grads, &cpu, (relu && residual).then_some(&g));
            }
        }
    }
}

#[test]
fn batch_norm_eval_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    for (seed, dims) in SHAPES.into_iter().enumerate() {
        let len = dims.iter().product();
        let k = bn_case(dims, 10 + seed as u64);
        let d = BnDev::of(&gpu, &k);
        let [x, gamma, beta, res, dy, rm, rv] = &d.0;
        let running = RunningStats {
            mean: rm,
            var: rv,
            eps: EPS,
        };
        let c = dims[1];
        let (rmh, rvh) = (tensor(&[c], &k.running.0), tensor(&[c], &k.running.1));
        let (gt, bt) = (tensor(&[c], &k.gamma), tensor(&[c], &k.beta));
        let (xt, rt) = (tensor(&dims, &k.x), tensor(&dims, &k.res));
        for relu in [false, true] {
            for residual in [false, true] {
                let what = format!("eval {dims:?} relu={relu} residual={residual}");
                let r = residual.then_some(res);
                let y = gpu
                    .batch_norm_eval_fwd(x, (gamma, beta), running, r, relu, dims)
                    .unwrap();
                let r_cpu = residual.then_some(&rt);
                let running_cpu = (&rmh, &rvh);
                let y_cpu = lt::batch_norm_eval_add(&xt, [&gt, &bt], running_cpu, EPS, r_cpu, relu)
                    .unwrap();
                let y_dev = down(&gpu, &y, len);
                assert_close(&format!("y {what}"), &y_dev, y_cpu.as_slice());

                let mask = relu_mask(&y, relu, residual);
                let mode = BatchNormMode::Eval(running);
                let grads = gpu
                    .batch_norm_bwd(x, (gamma, beta), mode, dy, mask, dims)
                    .unwrap();
                let (g, fused) = cpu_grad_in(dims, &k, &y_dev, relu, residual);
                let cpu =
                    lt::batch_norm_eval_bwd(&xt, [&gt, &bt], running_cpu, EPS, &g, fused).unwrap();
                check_grads(&gpu, &what, &grads, &cpu, (relu && residual).then_some(&g));
            }
        }
    }
}

/// The statistics alone and the running-statistics update match `BatchNorm2d`'s training-mode
/// forward (momentum 0.1, unbiased running variance), starting from non-trivial running values.
#[test]
fn batch_norm_running_statistics_match_the_layer() {
    let Some(gpu) = gpu() else { return };
    for (seed, dims) in SHAPES.into_iter().enumerate() {
        let c = dims[1];
        let k = bn_case(dims, 20 + seed as u64);
        let mut layer = BatchNorm2d::<f32>::new(c);
        layer.running_mean = tensor(&[c], &k.running.0);
        layer.running_var = tensor(&[c], &k.running.1);
        let eps = layer.eps as f32;
        let x = up(&gpu, &k.x);
        let stats = gpu.batch_norm_stats(&x, eps, dims).unwrap();
        let (mut rm, mut rv) = (up(&gpu, &k.running.0), up(&gpu, &k.running.1));
        gpu.batch_norm_update_running(&stats, layer.momentum as f32, &mut rm, &mut rv)
            .unwrap();

        let xt = tensor(&dims, &k.x);
        let st = lt::batch_norm_stats(&xt, eps).unwrap();
        let mut tape = Tape::new();
        let xv = tape.leaf(xt);
        layer.forward(&mut tape, xv, Mode::Train, false).unwrap();

        let what = format!("{dims:?}");
        let sd = stats_of(&gpu, &stats, c);
        for (name, a, b) in [
            ("mean", &sd.mean, &st.mean),
            ("var", &sd.var, &st.var),
            ("inv_std", &sd.inv_std, &st.inv_std),
        ] {
            assert_close(&format!("stats {name} {what}"), a.as_slice(), b.as_slice());
        }
        let (rm_cpu, rv_cpu) = (layer.running_mean.as_slice(), layer.running_var.as_slice());
        assert_close(&format!("running mean {what}"), &down(&gpu, &rm, c), rm_cpu);
        assert_close(&format!("running var {what}"), &down(&gpu, &rv, c), rv_cpu);
    }
}

/// Every output of a training-mode forward and backward pass, as bits.
fn bn_bits(gpu: &Gpu, d: &BnDev, dims: [usize; 4], relu: bool, residual: bool) -> Vec<Vec<u32>> {
    let [x, gamma, beta, res, dy, ..] = &d.0;
    let (len, c) = (dims.iter().product(), dims[1]);
    let (y, stats) = gpu
        .batch_norm_train_fwd(x, (gamma, beta), EPS, residual.then_some(res), relu, dims)
        .unwrap();
    let mask = relu_mask(&y, relu, residual);
    let mode = BatchNormMode::Train(&stats);
    let g = gpu
        .batch_norm_bwd(x, (gamma, beta), mode, dy, mask, dims)
        .unwrap();
    let mut out = vec![
        (&y, len),
        (&stats.mean, c),
        (&stats.var, c),
        (&stats.inv_std, c),
        (&g.dx, len),
        (&g.dgamma, c),
        (&g.dbeta, c),
    ];
    if let Some(r) = &g.dres {
        out.push((r, len));
    }
    out.into_iter()
        .map(|(b, n)| down(gpu, b, n).iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// The per-channel reductions have a fixed order: a second run gives the same bits.
#[test]
fn batch_norm_is_deterministic() {
    let Some(gpu) = gpu() else { return };
    for dims in [[16, 16, 32, 32], [3, 5, 7, 7]] {
        let d = BnDev::of(&gpu, &bn_case(dims, 30));
        for (relu, residual) in [(false, false), (true, false), (true, true)] {
            let first = bn_bits(&gpu, &d, dims, relu, residual);
            let second = bn_bits(&gpu, &d, dims, relu, residual);
            for (i, (a, b)) in first.iter().zip(&second).enumerate() {
                assert!(
                    a == b,
                    "{dims:?} relu={relu} residual={residual}: output {i} differs between runs"
                );
            }
        }
    }
}

#[test]
fn global_avg_pool_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    for (seed, dims) in SHAPES.into_iter().enumerate() {
        let [n, c, h, w] = dims;
        let mut rng = ChaCha8Rng::seed_from_u64(40 + seed as u64);
        let x = uniform(&mut rng, n * c * h * w, -1.0, 1.0);
        let dy = uniform(&mut rng, n * c, -1.0, 1.0);
        let y = gpu.global_avg_pool_fwd(&up(&gpu, &x), dims).unwrap();
        let dx = gpu.global_avg_pool_bwd(&up(&gpu, &dy), dims).unwrap();
        let y_cpu = lt::global_avg_pool(&tensor(&dims, &x)).unwrap();
        let dx_cpu = lt::global_avg_pool_bwd(&dims, &tensor(&[n, c], &dy)).unwrap();
        let what = format!("{dims:?}");
        assert_close(
            &format!("gap y {what}"),
            &down(&gpu, &y, n * c),
            y_cpu.as_slice(),
        );
        let dx = down(&gpu, &dx, n * c * h * w);
        assert_close(&format!("gap dx {what}"), &dx, dx_cpu.as_slice());
    }
}

/// Max pooling with ResNet's stem window (3, stride 2, pad 1), non-overlapping and stride-1
/// windows, a 5-wide one; once with values rounded to quarters (ties: the first in scan order
/// wins, on both sides).
#[test]
fn max_pool2d_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let windows = [(3, 2, 1), (2, 2, 0), (3, 1, 1), (5, 3, 2)];
    for (seed, dims) in SHAPES.into_iter().enumerate() {
        let [n, c, h, w] = dims;
        for ties in [false, true] {
            let mut rng = ChaCha8Rng::seed_from_u64(50 + seed as u64);
            let mut x = uniform(&mut rng, n * c * h * w, -2.0, 2.0);
            if ties {
                x.iter_mut().for_each(|v| *v = (*v * 4.0).round() / 4.0);
            }
            let (xd, xt) = (up(&gpu, &x), tensor(&dims, &x));
            for (kernel, stride, pad) in windows {
                let geometry = MaxPoolGeometry {
                    kernel,
                    stride,
                    pad,
                };
                let Ok((y_cpu, arg_cpu)) = lt::max_pool2d(&xt, geometry) else {
                    continue; // the window does not fit this image
                };
                let win = MaxPoolWindow {
                    kernel,
                    stride,
                    pad,
                };
                let what = format!("{dims:?} {win:?} ties={ties}");
                let mp = gpu.max_pool2d_fwd(&xd, win, dims).unwrap();
                assert_eq!(&mp.dims[..], y_cpu.shape(), "{what}: output dims");
                assert_eq!(win.out_dims(dims).unwrap(), mp.dims);
                let m = y_cpu.as_slice().len();
                assert_close(
                    &format!("max y {what}"),
                    &down(&gpu, &mp.y, m),
                    y_cpu.as_slice(),
                );
                let lt::MaxPoolArgmax::Cpu(host_arg) = &arg_cpu else {
                    panic!("{what}: a CPU pool keeps its positions on the host");
                };
                assert_eq!(&mp.argmax(&gpu).unwrap(), host_arg, "{what}: argmax");
                let dy = uniform(&mut rng, m, -1.0, 1.0);
                let dx = gpu
                    .max_pool2d_bwd(&mp.argmax, &up(&gpu, &dy), win, dims)
                    .unwrap();
                let dyt = tensor(y_cpu.shape(), &dy);
                let dx_cpu = lt::max_pool2d_bwd(&dims, &arg_cpu, geometry, &dyt).unwrap();
                let dx = down(&gpu, &dx, x.len());
                assert_close(&format!("max dx {what}"), &dx, dx_cpu.as_slice());
            }
        }
    }
}

/// (B, C): one element, awkward, CIFAR-100 and ImageNet heads.
const ROWS: [(usize, usize); 5] = [(1, 1), (3, 7), (33, 101), (128, 100), (130, 1000)];

/// Logits in (−4, 4), row 0 shifted by 80 (the row maximum keeps it finite).
fn logits(rng: &mut ChaCha8Rng, b: usize, c: usize) -> Vec<f32> {
    let mut z = uniform(rng, b * c, -4.0, 4.0);
    z[..c].iter_mut().for_each(|v| *v += 80.0);
    z
}

#[test]
fn log_softmax_rows_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    for (seed, (b, c)) in ROWS.into_iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(60 + seed as u64);
        let z = logits(&mut rng, b, c);
        let dy = uniform(&mut rng, b * c, -1.0, 1.0);
        let y = gpu.log_softmax_rows_fwd(&up(&gpu, &z), [b, c]).unwrap();
        let y_dev = down(&gpu, &y, b * c);
        let y_cpu = lt::log_softmax_rows(&tensor(&[b, c], &z)).unwrap();
        let what = format!("B={b} C={c}");
        assert_close(&format!("log_softmax y {what}"), &y_dev, y_cpu.as_slice());
        // Backward from the device's forward output, on both sides.
        let dz = gpu
            .log_softmax_rows_bwd(&y, &up(&gpu, &dy), [b, c])
            .unwrap();
        let dz_cpu =
            lt::log_softmax_rows_bwd(&tensor(&[b, c], &y_dev), &tensor(&[b, c], &dy)).unwrap();
        let dz = down(&gpu, &dz, b * c);
        assert_close(&format!("log_softmax dz {what}"), &dz, dz_cpu.as_slice());
    }
}

/// The cross-entropy forward pass, its backward pass and the fused pass against the autograd
/// op, with an upstream gradient of 2.5 (the tape scales the loss).
#[test]
fn cross_entropy_matches_autograd() {
    let Some(gpu) = gpu() else { return };
    let g = 2.5f32;
    for (seed, (b, c)) in ROWS.into_iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(70 + seed as u64);
        let z = logits(&mut rng, b, c);
        let labels: Vec<usize> = (0..b).map(|_| rng.random_range(0..c)).collect();
        let labels_i32: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        let (zd, ld) = (up(&gpu, &z), gpu.upload(&labels_i32).unwrap());
        let fwd = gpu.cross_entropy_fwd(&zd, &ld, [b, c]).unwrap();
        let dz = gpu
            .cross_entropy_bwd(&fwd.log_p, &ld, &up(&gpu, &[g]), [b, c])
            .unwrap();
        let fused = gpu.cross_entropy_fused(&zd, &ld, g, [b, c]).unwrap();

        let mut t = Tape::new();
        let zv = t.leaf(tensor(&[b, c], &z));
        let loss = t.cross_entropy(zv, &labels).unwrap();
        let gv = t.constant(Tensor::scalar(g));
        let scaled = t.scale(loss, gv).unwrap();
        t.backward(scaled).unwrap();
        let loss_cpu = [t.value(loss).item().unwrap()];
        let dz_cpu = t.grad(zv).unwrap().as_slice();
        let lp = lt::log_softmax_rows(&tensor(&[b, c], &z)).unwrap();
        let lp = lp.as_slice();
        let rows: Vec<f32> = labels
            .iter()
            .enumerate()
            .map(|(r, &y)| -lp[r * c + y])
            .collect();

        let what = format!("B={b} C={c}");
        assert_close(&format!("log_p {what}"), &down(&gpu, &fwd.log_p, b * c), lp);
        assert_close(
            &format!("row loss {what}"),
            &down(&gpu, &fwd.row_loss, b),
            &rows,
        );
        assert_close(
            &format!("loss {what}"),
            &down(&gpu, &fwd.loss, 1),
            &loss_cpu,
        );
        assert_close(&format!("dz {what}"), &down(&gpu, &dz, b * c), dz_cpu);
        let fused_rows = down(&gpu, &fused.row_loss, b);
        assert_close(&format!("fused row loss {what}"), &fused_rows, &rows);
        assert_close(
            &format!("fused loss {what}"),
            &down(&gpu, &fused.loss, 1),
            &loss_cpu,
        );
        assert_close(
            &format!("fused dz {what}"),
            &down(&gpu, &fused.dz, b * c),
            dz_cpu,
        );
    }
}
