//! The CUDA arms (a build with the `cuda` feature): launchers of `lucir-cuda` on the
//! storage of device tensors.

use crate::conv2d::InputGrad;
use crate::device::{CudaIndices, CudaStorage, Gpu};
use crate::{BatchNormStats, MaxPoolArgmax, MaxPoolGeometry, SgdHyper};
use crate::{Error, Float, Result, Tensor, Transpose};

/// A device tensor of `shape` holding the f32 elements `v`.
pub(crate) fn upload<T: Float>(gpu: &Gpu, shape: &[usize], v: &[f32]) -> Result<Tensor<T>> {
    let buf = gpu.upload(v)?;
    Ok(Tensor::from_cuda(shape, CudaStorage::new(gpu.clone(), buf)))
}

/// The elements of a device tensor, in host memory.
pub(crate) fn download<T: Float>(shape: &[usize], c: &CudaStorage) -> Result<Tensor<T>> {
    let n = shape.iter().product();
    let v = if n == 0 {
        Vec::new()
    } else {
        c.gpu.download(&c.buf, n)?
    };
    let v = T::from_f32_vec(v).ok_or(Error::Device {
        op: "Tensor::to_cpu",
        detail: format!("a device tensor read back as {}", T::NAME),
    })?;
    Tensor::from_vec(shape, v)
}

/// Wraps an output buffer of `like`'s GPU as a tensor of `shape`.
pub(super) fn wrap<T: Float>(
    like: &CudaStorage,
    shape: &[usize],
    buf: lucir_cuda::Buffer,
) -> Tensor<T> {
    Tensor::from_cuda(shape, CudaStorage::new(like.gpu.clone(), buf))
}

/// A device tensor of `shape` filled with `value` (uploaded: for small tensors such as a
/// loss's seed gradient).
pub(crate) fn full<T: Float>(gpu: &Gpu, shape: &[usize], value: f32) -> Result<Tensor<T>> {
    upload(gpu, shape, &vec![value; shape.iter().product()])
}

/// A device tensor of zeros on `gpu`.
pub(crate) fn zeros<T: Float>(gpu: &Gpu, shape: &[usize]) -> Result<Tensor<T>> {
    let buf = gpu.zeros::<f32>(shape.iter().product())?;
    Ok(Tensor::from_cuda(shape, CudaStorage::new(gpu.clone(), buf)))
}

/// `a += b` (same shape, both on the device).
pub(crate) fn add_assign<T: Float>(a: &mut Tensor<T>, b: &Tensor<T>) -> Result<()> {
    let n = a.len();
    let cb = CudaStorage::of("Tensor::add_assign", b)?;
    let ca = a.cuda_mut().ok_or(Error::Device {
        op: "Tensor::add_assign",
        detail: "operand is on the cpu, the other on cuda".into(),
    })?;
    let gpu = ca.gpu.clone();
    gpu.axpy(1.0, &cb.buf, ca.buf_mut()?, n)?;
    Ok(())
}

/// `a + b` (same shape).
pub(crate) fn add<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    let (ca, cb) = (CudaStorage::of("add", a)?, CudaStorage::of("add", b)?);
    Ok(wrap(ca, a.shape(), ca.gpu.add(&ca.buf, &cb.buf, a.len())?))
}

/// `max(a + b, 0)` (same shape).
pub(crate) fn add_relu<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>> {
    let (ca, cb) = (
        CudaStorage::of("add_relu", a)?,
        CudaStorage::of("add_relu", b)?,
    );
    Ok(wrap(
        ca,
        a.shape(),
        ca.gpu.add_relu(&ca.buf, &cb.buf, a.len())?,
    ))
}

/// `max(x, 0)`.
pub(crate) fn relu<T: Float>(x: &Tensor<T>) -> Result<Tensor<T>> {
    let c = CudaStorage::of("relu", x)?;
    Ok(wrap(c, x.shape(), c.gpu.relu(&c.buf, x.len())?))
}

/// `dy · [y > 0]`, in `dy`'s buffer.
pub(crate) fn relu_bwd<T: Float>(y: &Tensor<T>, mut dy: Tensor<T>) -> Result<Tensor<T>> {
    let n = y.len();
    let cy = CudaStorage::of("relu_bwd", y)?;
    let g = dy.cuda_mut().ok_or(Error::Device {
        op: "relu_bwd",
        detail: "the gradient is on the cpu, the output on cuda".into(),
    })?;
    cy.gpu.relu_bwd(&cy.buf, g.buf_mut()?, n)?;
    Ok(dy)
}

/// `op(A)·op(B)` of 2-D device tensors, `[m, n, k]` checked by the caller.
pub(crate) fn matmul<T: Float>(
    mnk: [usize; 3],
    a: &Tensor<T>,
    ta: Transpose,
    b: &Tensor<T>,
    tb: Transpose,
) -> Result<Tensor<T>> {
    let (ca, cb) = (CudaStorage::of("matmul", a)?, CudaStorage::of("matmul", b)?);
    let [m, n, _] = mnk;
    let mut c = ca.gpu.output::<f32>(m * n)?;
    ca.gpu.gemm(
        mnk,
        &ca.buf,
        ta == Transpose::Yes,
        &cb.buf,
        tb == Transpose::Yes,
        &mut c,
        false,
    )?;
    Ok(wrap(ca, &[m, n], c))
}

/// The `lucir-cuda` shape of `[N, Ci, H, W, Co, KH, KW, stride, pad]`.
fn conv_shape([n, ci, h, w, co, kh, kw, stride, pad]: [usize; 9]) -> lucir_cuda::ConvShape {
    lucir_cuda::ConvShape {
        n,
        ci,
        h,
        w,
        co,
        kh,
        kw,
        stride,
        pad,
    }
}

/// A convolution's forward pass through cuDNN (sizes validated by the caller).
pub(crate) fn conv2d<T: Float>(
    sizes: [usize; 9],
    x: &Tensor<T>,
    w: &Tensor<T>,
) -> Result<Tensor<T>> {
    let (cx, cw) = (CudaStorage::of("conv2d", x)?, CudaStorage::of("conv2d", w)?);
    let s = conv_shape(sizes);
    let [ho, wo] = s.out_hw();
    let y = cx.gpu.conv2d_fwd(s, &cx.buf, &cw.buf)?;
    Ok(wrap(cx, &[s.n, s.co, ho, wo], y))
}

/// A convolution's backward pass through cuDNN: the input gradient as `want` says (new, or
/// added into the gradient gathered so far) and the weight gradient when `want_dw` (else
/// an empty tensor, as the CPU arm's zeros are never read).
pub(crate) fn conv2d_bwd<T: Float>(
    sizes: [usize; 9],
    [x, w, dy]: [&Tensor<T>; 3],
    want: InputGrad<'_, Tensor<T>>,
    want_dw: bool,
) -> Result<(Option<Tensor<T>>, Tensor<T>)> {
    let op = "conv2d_bwd";
    let (cx, cw, cdy) = (
        CudaStorage::of(op, x)?,
        CudaStorage::of(op, w)?,
        CudaStorage::of(op, dy)?,
    );
    let (gpu, s) = (&cx.gpu, conv_shape(sizes));
    let dx = match want {
        InputGrad::Skip => None,
        InputGrad::New => {
            let mut dx = gpu.output::<f32>(x.len())?;
            gpu.conv2d_bwd_data(s, &cw.buf, &cdy.buf, &mut dx, false)?;
            Some(wrap(cx, x.shape(), dx))
        }
        InputGrad::AddTo(acc) => {
            let ca = acc.cuda_mut().ok_or(Error::Device {
                op,
                detail: "the gradient so far is on the cpu, the operands on cuda".into(),
            })?;
            gpu.conv2d_bwd_data(s, &cw.buf, &cdy.buf, ca.buf_mut()?, true)?;
            None
        }
    };
    let dw = if want_dw {
        wrap(cx, w.shape(), gpu.conv2d_bwd_filter(s, &cx.buf, &cdy.buf)?)
    } else {
        Tensor::zeros(&[0])
    };
    Ok((dx, dw))
}

/// The buffer of a device tensor, or the error naming `op` for a CPU one.
pub(super) fn buf<'a, T: Float>(
    op: &'static str,
    t: &'a Tensor<T>,
) -> Result<&'a lucir_cuda::Buffer> {
    Ok(&CudaStorage::of(op, t)?.buf)
}

/// The N×C×H×W sizes of a 4-D tensor (checked by the caller).
fn dims4<T: Float>(x: &Tensor<T>) -> [usize; 4] {
    let s = x.shape();
    [s[0], s[1], s[2], s[3]]
}

/// Device statistics as C-element tensors beside `like`.
fn stats_of<T: Float>(like: &CudaStorage, s: lucir_cuda::BatchNormStats) -> BatchNormStats<T> {
    let c = [s.mean.len()];
    let shared = |buf| Tensor::from_cuda(&c, CudaStorage::shared(like.gpu.clone(), buf));
    BatchNormStats {
        mean: shared(s.mean),
        var: shared(s.var),
        inv_std: shared(s.inv_std),
        count: s.count,
    }
}

/// The launchers' view of statistics held as tensors (the buffers shared, not copied).
fn stats_view<T: Float>(
    op: &'static str,
    s: &BatchNormStats<T>,
) -> Result<lucir_cuda::BatchNormStats> {
    Ok(lucir_cuda::BatchNormStats {
        mean: CudaStorage::of(op, &s.mean)?.buf.clone(),
        var: CudaStorage::of(op, &s.var)?.buf.clone(),
        inv_std: CudaStorage::of(op, &s.inv_std)?.buf.clone(),
        count: s.count,
    })
}

/// The backward pass's ReLU: recomputed from `x` when fused, none otherwise.
fn relu_gate(relu: bool) -> lucir_cuda::BatchNormRelu<'static> {
    if relu {
        lucir_cuda::BatchNormRelu::Fused
    } else {
        lucir_cuda::BatchNormRelu::Off
    }
}

/// The launchers' view of running statistics held as tensors.
fn running_stats<'a, T: Float>(
    op: &'static str,
    (mean, var): (&'a Tensor<T>, &'a Tensor<T>),
    eps: T,
) -> Result<lucir_cuda::RunningStats<'a>> {
    Ok(lucir_cuda::RunningStats {
        mean: buf(op, mean)?,
        var: buf(op, var)?,
        eps: eps.as_f64() as f32,
    })
}

/// Training-mode batch norm (plus a residual, then a ReLU) with its batch statistics.
pub(crate) fn batch_norm_train<T: Float>(
    x: &Tensor<T>,
    [gamma, beta]: [&Tensor<T>; 2],
    eps: T,
    residual: Option<&Tensor<T>>,
    relu: bool,
) -> Result<(Tensor<T>, BatchNormStats<T>)> {
    let op = "batch_norm_train";
    let cx = CudaStorage::of(op, x)?;
    let res = residual.map(|r| buf(op, r)).transpose()?;
    let (y, stats) = cx.gpu.batch_norm_train_fwd(
        &cx.buf,
        (buf(op, gamma)?, buf(op, beta)?),
        eps.as_f64() as f32,
        res,
        relu,
        dims4(x),
    )?;
    Ok((wrap(cx, x.shape(), y), stats_of(cx, stats)))
}

/// Batch statistics alone.
pub(crate) fn batch_norm_stats<T: Float>(x: &Tensor<T>, eps: T) -> Result<BatchNormStats<T>> {
    let cx = CudaStorage::of("batch_norm_stats", x)?;
    let stats = cx
        .gpu
        .batch_norm_stats(&cx.buf, eps.as_f64() as f32, dims4(x))?;
    Ok(stats_of(cx, stats))
}

/// Training-mode backward: `(dx, dγ, dβ)` (the ReLU's mask recomputed from `x`).
pub(crate) fn batch_norm_train_bwd<T: Float>(
    x: &Tensor<T>,
    [gamma, beta]: [&Tensor<T>; 2],
    stats: &BatchNormStats<T>,
    dy: &Tensor<T>,
    relu: bool,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    let op = "batch_norm_train_bwd";
    let cx = CudaStorage::of(op, x)?;
    let view = stats_view(op, stats)?;
    let relu = relu_gate(relu);
    let g = cx.gpu.batch_norm_bwd(
        &cx.buf,
        (buf(op, gamma)?, buf(op, beta)?),
        lucir_cuda::BatchNormMode::Train(&view),
        buf(op, dy)?,
        relu,
        dims4(x),
    )?;
    Ok(grads(cx, x, g))
}

fn grads<T: Float>(
    cx: &CudaStorage,
    x: &Tensor<T>,
    g: lucir_cuda::BatchNormGrads,
) -> (Tensor<T>, Tensor<T>, Tensor<T>) {
    let c = [x.shape()[1]];
    (
        wrap(cx, x.shape(), g.dx),
        wrap(cx, &c, g.dgamma),
        wrap(cx, &c, g.dbeta),
    )
}

/// Evaluation-mode batch norm (plus a residual, then a ReLU).
pub(crate) fn batch_norm_eval<T: Float>(
    x: &Tensor<T>,
    [gamma, beta]: [&Tensor<T>; 2],
    (mean, var): (&Tensor<T>, &Tensor<T>),
    eps: T,
    residual: Option<&Tensor<T>>,
    relu: bool,
) -> Result<Tensor<T>> {
    let op = "batch_norm_eval";
    let cx = CudaStorage::of(op, x)?;
    let running = running_stats(op, (mean, var), eps)?;
    let res = residual.map(|r| buf(op, r)).transpose()?;
    let y = cx.gpu.batch_norm_eval_fwd(
        &cx.buf,
        (buf(op, gamma)?, buf(op, beta)?),
        running,
        res,
        relu,
        dims4(x),
    )?;
    Ok(wrap(cx, x.shape(), y))
}

/// Evaluation-mode backward: `(dx, dγ, dβ)`.
pub(crate) fn batch_norm_eval_bwd<T: Float>(
    x: &Tensor<T>,
    [gamma, beta]: [&Tensor<T>; 2],
    (mean, var): (&Tensor<T>, &Tensor<T>),
    eps: T,
    dy: &Tensor<T>,
    relu: bool,
) -> Result<(Tensor<T>, Tensor<T>, Tensor<T>)> {
    let op = "batch_norm_eval_bwd";
    let cx = CudaStorage::of(op, x)?;
    let running = running_stats(op, (mean, var), eps)?;
    let relu = relu_gate(relu);
    let g = cx.gpu.batch_norm_bwd(
        &cx.buf,
        (buf(op, gamma)?, buf(op, beta)?),
        lucir_cuda::BatchNormMode::Eval(running),
        buf(op, dy)?,
        relu,
        dims4(x),
    )?;
    Ok(grads(cx, x, g))
}

/// The running-statistics update, in place on the device.
pub(crate) fn batch_norm_update_running<T: Float>(
    (mean, var): (&mut Tensor<T>, &mut Tensor<T>),
    stats: &BatchNormStats<T>,
    momentum: f64,
) -> Result<()> {
    let op = "batch_norm_update_running";
    let view = stats_view(op, stats)?;
    let gpu = CudaStorage::of(op, &stats.mean)?.gpu.clone();
    let missing = || Error::Device {
        op,
        detail: "the running statistics are on the cpu, the batch's on cuda".into(),
    };
    let m = mean.cuda_mut().ok_or_else(missing)?.buf_mut()?;
    let v = var.cuda_mut().ok_or_else(missing)?.buf_mut()?;
    gpu.batch_norm_update_running(&view, momentum as f32, m, v)?;
    Ok(())
}

/// Mean over H×W per image and channel.
pub(crate) fn global_avg_pool<T: Float>(x: &Tensor<T>, dims: [usize; 4]) -> Result<Tensor<T>> {
    let c = CudaStorage::of("global_avg_pool", x)?;
    let y = c.gpu.global_avg_pool_fwd(&c.buf, dims)?;
    Ok(wrap(c, &dims[..2], y))
}

/// Its backward: each plane gets its gradient over H·W.
pub(crate) fn global_avg_pool_bwd<T: Float>(dy: &Tensor<T>, dims: [usize; 4]) -> Result<Tensor<T>> {
    let c = CudaStorage::of("global_avg_pool_bwd", dy)?;
    let dx = c.gpu.global_avg_pool_bwd(&c.buf, dims)?;
    Ok(wrap(c, &dims, dx))
}

/// Row-wise log-softmax.
pub(crate) fn log_softmax_rows<T: Float>(z: &Tensor<T>, bc: [usize; 2]) -> Result<Tensor<T>> {
    let c = CudaStorage::of("log_softmax_rows", z)?;
    Ok(wrap(c, &bc, c.gpu.log_softmax_rows_fwd(&c.buf, bc)?))
}

/// Its backward from the forward output.
pub(crate) fn log_softmax_rows_bwd<T: Float>(
    y: &Tensor<T>,
    dy: &Tensor<T>,
    bc: [usize; 2],
) -> Result<Tensor<T>> {
    let op = "log_softmax_rows_bwd";
    let c = CudaStorage::of(op, y)?;
    Ok(wrap(
        c,
        &bc,
        c.gpu.log_softmax_rows_bwd(&c.buf, buf(op, dy)?, bc)?,
    ))
}

/// The labels as the kernels read them (B int32 on the device).
pub(super) fn labels_on(gpu: &Gpu, labels: &[usize]) -> Result<lucir_cuda::IndexBuffer> {
    let v: Vec<i32> = labels
        .iter()
        .map(|&l| i32::try_from(l).unwrap_or(i32::MAX))
        .collect();
    Ok(gpu.upload(&v)?)
}

/// Mean cross-entropy and the log-probabilities.
pub(crate) fn cross_entropy<T: Float>(
    z: &Tensor<T>,
    labels: &[usize],
    bc: [usize; 2],
) -> Result<(Tensor<T>, Tensor<T>)> {
    let c = CudaStorage::of("cross_entropy", z)?;
    let l = labels_on(&c.gpu, labels)?;
    let fwd = c.gpu.cross_entropy_fwd(&c.buf, &l, bc)?;
    Ok((wrap(c, &[1], fwd.loss), wrap(c, &bc, fwd.log_p)))
}

/// The cross-entropy's backward pass, the upstream gradient read on the device.
pub(crate) fn cross_entropy_bwd<T: Float>(
    log_p: &Tensor<T>,
    labels: &[usize],
    g: &Tensor<T>,
    bc: [usize; 2],
) -> Result<Tensor<T>> {
    let op = "cross_entropy_bwd";
    let c = CudaStorage::of(op, log_p)?;
    let l = labels_on(&c.gpu, labels)?;
    let dz = c.gpu.cross_entropy_bwd(&c.buf, &l, buf(op, g)?, bc)?;
    Ok(wrap(c, &bc, dz))
}

/// `y[r, j] += b[j]` in place.
pub(crate) fn add_row_bias<T: Float>(
    y: &mut Tensor<T>,
    b: &Tensor<T>,
    rc: [usize; 2],
) -> Result<()> {
    let op = "add_row_bias";
    let bb = buf(op, b)?;
    let cy = y.cuda_mut().ok_or(Error::Device {
        op,
        detail: "the output is on the cpu, the bias on cuda".into(),
    })?;
    let gpu = cy.gpu.clone();
    gpu.linear_bias_fwd(cy.buf_mut()?, bb, rc)?;
    Ok(())
}

/// Column sums of a matrix, in row order.
pub(crate) fn column_sums<T: Float>(g: &Tensor<T>, rc: [usize; 2]) -> Result<Tensor<T>> {
    let c = CudaStorage::of("column_sums", g)?;
    Ok(wrap(c, &[rc[1]], c.gpu.linear_bias_bwd(&c.buf, rc)?))
}

/// One SGD update in place; returns the velocity.
pub(crate) fn sgd_update<T: Float>(
    p: &mut Tensor<T>,
    g: &Tensor<T>,
    v: Option<Tensor<T>>,
    h: SgdHyper,
) -> Result<Tensor<T>> {
    let op = "sgd_update";
    let n = p.len();
    let first = v.is_none();
    let gb = buf(op, g)?;
    let gpu = CudaStorage::of(op, g)?.gpu.clone();
    let mut v = match v {
        Some(v) => v,
        None => zeros(&gpu, p.shape())?,
    };
    let missing = || Error::Device {
        op,
        detail: "the parameter or its velocity is on the cpu, the gradient on cuda".into(),
    };
    let pb = p.cuda_mut().ok_or_else(missing)?.buf_mut()?;
    let vb = v.cuda_mut().ok_or_else(missing)?.buf_mut()?;
    let step = lucir_cuda::SgdStep {
        lr: h.lr as f32,
        weight_decay: h.weight_decay as f32,
        momentum: h.momentum as f32,
        first,
    };
    gpu.sgd_update(pb, gb, vb, n, step)?;
    Ok(v)
}

/// Every target's SGD update in one launch; returns the velocities.
pub(crate) fn sgd_update_many<T: Float>(
    mut targets: Vec<crate::SgdTarget<'_, T>>,
    h: SgdHyper,
) -> Result<Vec<Tensor<T>>> {
    let op = "sgd_update_many";
    let Some(first) = targets.first() else {
        return Ok(Vec::new());
    };
    let gpu = CudaStorage::of(op, first.g)?.gpu.clone();
    let mut firsts = Vec::with_capacity(targets.len());
    let mut velocities = Vec::with_capacity(targets.len());
    for t in &mut targets {
        firsts.push(t.v.is_none());
        velocities.push(match t.v.take() {
            Some(v) => v,
            None => zeros(&gpu, t.p.shape())?,
        });
    }
    let missing = || Error::Device {
        op,
        detail: "a parameter or its velocity is on the cpu, the gradients on cuda".into(),
    };
    let mut slots = Vec::with_capacity(targets.len());
    for ((t, v), first) in targets.iter_mut().zip(&mut velocities).zip(firsts) {
        let n = t.p.len();
        slots.push(lucir_cuda::SgdSlot {
            p: t.p.cuda_mut().ok_or_else(missing)?.buf_mut()?,
            g: buf(op, t.g)?,
            v: v.cuda_mut().ok_or_else(missing)?.buf_mut()?,
            n,
            first,
        });
    }
    gpu.sgd_update_many(
        &mut slots,
        h.lr as f32,
        h.weight_decay as f32,
        h.momentum as f32,
    )?;
    Ok(velocities)
}

fn window(g: MaxPoolGeometry) -> lucir_cuda::MaxPoolWindow {
    lucir_cuda::MaxPoolWindow {
        kernel: g.kernel,
        stride: g.stride,
        pad: g.pad,
    }
}

/// Max pool and the positions of the maxima (kept on the device).
pub(crate) fn max_pool2d<T: Float>(
    x: &Tensor<T>,
    g: MaxPoolGeometry,
    dims: [usize; 4],
) -> Result<(Tensor<T>, MaxPoolArgmax)> {
    let c = CudaStorage::of("max_pool2d", x)?;
    let p = c.gpu.max_pool2d_fwd(&c.buf, window(g), dims)?;
    let y = wrap(c, &p.dims, p.y);
    Ok((y, MaxPoolArgmax::Cuda(CudaIndices(p.argmax))))
}

/// The max pool's backward pass: each input element gathers the gradients of the windows it
/// won.
pub(crate) fn max_pool2d_bwd<T: Float>(
    shape: &[usize],
    argmax: &CudaIndices,
    g: MaxPoolGeometry,
    dy: &Tensor<T>,
) -> Result<Tensor<T>> {
    let c = CudaStorage::of("max_pool2d_bwd", dy)?;
    let dims: [usize; 4] = shape.try_into().map_err(|_| Error::Device {
        op: "max_pool2d_bwd",
        detail: format!("input shape {shape:?} is not 4-D"),
    })?;
    let dx = c.gpu.max_pool2d_bwd(&argmax.0, &c.buf, window(g), dims)?;
    Ok(wrap(c, shape, dx))
}
