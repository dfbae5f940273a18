//! The CUDA arms of the ops: each takes device tensors (the caller matched on the storage
//! enum, [`crate::device`]), calls its `lucir-cuda` launcher, and wraps the output buffer as a
//! device tensor. In a build without the `cuda` feature no device tensor can exist, and these
//! functions are stubs that return `Error::Cuda(NotCompiled)`.

#[cfg(feature = "cuda")]
pub(crate) use real::*;
#[cfg(not(feature = "cuda"))]
pub(crate) use stub::*;

#[cfg(feature = "cuda")]
mod real {
    use crate::conv2d::InputGrad;
    use crate::device::{CudaStorage, Gpu};
    use crate::{Error, Float, Result, Tensor, Transpose};

    /// A device tensor of `shape` holding the f32 elements `v`.
    pub(crate) fn upload<T: Float>(gpu: &Gpu, shape: &[usize], v: &[f32]) -> Result<Tensor<T>> {
        let buf = gpu.upload(v)?;
        Ok(Tensor::from_cuda(
            shape,
            CudaStorage {
                gpu: gpu.clone(),
                buf,
            },
        ))
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
    fn wrap<T: Float>(like: &CudaStorage, shape: &[usize], buf: lucir_cuda::Buffer) -> Tensor<T> {
        Tensor::from_cuda(
            shape,
            CudaStorage {
                gpu: like.gpu.clone(),
                buf,
            },
        )
    }

    /// A device tensor of zeros on `gpu`.
    pub(crate) fn zeros<T: Float>(gpu: &Gpu, shape: &[usize]) -> Result<Tensor<T>> {
        let buf = gpu.zeros::<f32>(shape.iter().product())?;
        Ok(Tensor::from_cuda(
            shape,
            CudaStorage {
                gpu: gpu.clone(),
                buf,
            },
        ))
    }

    /// `a += b` (same shape, both on the device).
    pub(crate) fn add_assign<T: Float>(a: &mut Tensor<T>, b: &Tensor<T>) -> Result<()> {
        let n = a.len();
        let cb = CudaStorage::of("Tensor::add_assign", b)?;
        let CudaStorage { gpu, buf } = a.cuda_mut().ok_or(Error::Device {
            op: "Tensor::add_assign",
            detail: "operand is on the cpu, the other on cuda".into(),
        })?;
        gpu.axpy(1.0, &cb.buf, buf, n)?;
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
        cy.gpu.relu_bwd(&cy.buf, &mut g.buf, n)?;
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
                gpu.conv2d_bwd_data(s, &cw.buf, &cdy.buf, &mut ca.buf, true)?;
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
}

#[cfg(not(feature = "cuda"))]
mod stub {
    use crate::conv2d::InputGrad;
    use crate::device::{CudaStorage, Gpu};
    use crate::{Error, Float, Result, Tensor, Transpose};

    fn not_compiled<R>() -> Result<R> {
        Err(Error::Cuda(lucir_cuda::Error::NotCompiled))
    }

    pub(crate) fn upload<T: Float>(_: &Gpu, _: &[usize], _: &[f32]) -> Result<Tensor<T>> {
        not_compiled()
    }

    pub(crate) fn download<T: Float>(_: &[usize], c: &CudaStorage) -> Result<Tensor<T>> {
        match *c {}
    }

    pub(crate) fn zeros<T: Float>(_: &Gpu, _: &[usize]) -> Result<Tensor<T>> {
        not_compiled()
    }

    pub(crate) fn add_assign<T: Float>(_: &mut Tensor<T>, _: &Tensor<T>) -> Result<()> {
        not_compiled()
    }

    pub(crate) fn add<T: Float>(_: &Tensor<T>, _: &Tensor<T>) -> Result<Tensor<T>> {
        not_compiled()
    }

    pub(crate) fn add_relu<T: Float>(_: &Tensor<T>, _: &Tensor<T>) -> Result<Tensor<T>> {
        not_compiled()
    }

    pub(crate) fn relu<T: Float>(_: &Tensor<T>) -> Result<Tensor<T>> {
        not_compiled()
    }

    pub(crate) fn relu_bwd<T: Float>(_: &Tensor<T>, _: Tensor<T>) -> Result<Tensor<T>> {
        not_compiled()
    }

    pub(crate) fn matmul<T: Float>(
        _: [usize; 3],
        _: &Tensor<T>,
        _: Transpose,
        _: &Tensor<T>,
        _: Transpose,
    ) -> Result<Tensor<T>> {
        not_compiled()
    }

    pub(crate) fn conv2d<T: Float>(
        _: [usize; 9],
        _: &Tensor<T>,
        _: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        not_compiled()
    }

    pub(crate) fn conv2d_bwd<T: Float>(
        _: [usize; 9],
        _: [&Tensor<T>; 3],
        _: InputGrad<'_, Tensor<T>>,
        _: bool,
    ) -> Result<(Option<Tensor<T>>, Tensor<T>)> {
        not_compiled()
    }
}
