//! Convolutions on the device through cuDNN (docs/design.md §5, "Training on the GPU"): the
//! forward pass, the input gradient (optionally added into an existing gradient) and the weight
//! gradient of an NCHW f32 convolution, one plan per shape.
//!
//! A plan holds the shape's descriptors and its three algorithms, chosen once: cuDNN's
//! heuristic pick, except that the algorithms cuDNN documents as non-deterministic (backward
//! data `ALGO_0`, backward filter `ALGO_0` and `ALGO_3`, which add with atomics) are replaced
//! by the deterministic `ALGO_1`, so that a run repeats bit for bit. The math type is
//! `CUDNN_FMA_MATH`: true f32 products, as on the CPU, never TF32. One workspace buffer, grown
//! to the largest plan's need, serves every call. cuDNN is opened at the first convolution;
//! where it cannot be loaded ([`Gpu::cudnn_status`] says why), or where
//! [`Gpu::use_im2col_convolutions`] asks for it, the convolutions run through im2col and
//! cuBLAS instead (`im2col.rs`): slower, as exact.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgo_t as DataAlgo, cudnnConvolutionBwdFilterAlgo_t as FilterAlgo,
    cudnnConvolutionFwdAlgo_t as FwdAlgo, cudnnConvolutionMode_t, cudnnMathType_t,
    cudnnTensorFormat_t,
};
use cudarc::cudnn::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, CudnnError,
    FilterDescriptor, TensorDescriptor,
};
use cudarc::driver::CudaSlice;

use crate::device::i32_of;
use crate::{Error, Gpu, Result};

/// The shape of a 2-D convolution: `x` N×Ci×H×W, `w` Co×Ci×KH×KW, square stride and padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    /// Images.
    pub n: usize,
    /// Input channels.
    pub ci: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub co: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes).
    pub pad: usize,
}

impl ConvShape {
    /// Output height and width.
    pub fn out_hw(&self) -> [usize; 2] {
        let o = |i: usize, k: usize| (i + 2 * self.pad - k) / self.stride + 1;
        [o(self.h, self.kh), o(self.w, self.kw)]
    }

    /// Elements of `x`, `w` and `y`.
    pub fn lens(&self) -> [usize; 3] {
        let [ho, wo] = self.out_hw();
        [
            self.n * self.ci * self.h * self.w,
            self.co * self.ci * self.kh * self.kw,
            self.n * self.co * ho * wo,
        ]
    }

    fn check(&self, op: &'static str, x: usize, w: usize, y: usize) -> Result<()> {
        let fits =
            self.stride > 0 && self.h + 2 * self.pad >= self.kh && self.w + 2 * self.pad >= self.kw;
        let [lx, lw, ly] = if fits { self.lens() } else { [0; 3] };
        if !fits || x < lx || w < lw || y < ly {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "{self:?} needs x {lx}, w {lw}, y {ly} elements (and a kernel that fits), \
                     got {x}, {w}, {y}"
                ),
            });
        }
        Ok(())
    }
}

fn cudnn_err(op: &'static str) -> impl Fn(CudnnError) -> Error {
    move |e| Error::Driver {
        op,
        detail: e.to_string(),
    }
}

/// One shape's descriptors and algorithms.
#[derive(Debug)]
struct Plan {
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
    conv: ConvDescriptor<f32>,
    fwd: FwdAlgo,
    data: DataAlgo,
    filter: FilterAlgo,
    /// Bytes of workspace the largest of the three needs.
    workspace: usize,
}

/// cuDNN's state: the handle, the plans by shape, the shared workspace.
#[derive(Debug)]
pub(crate) struct CudnnState {
    handle: Arc<Cudnn>,
    plans: HashMap<ConvShape, Plan>,
    workspace: Option<CudaSlice<u8>>,
}

// SAFETY: cuDNN handles and descriptors may be used from any host thread, one thread at a
// time; the state lives behind a mutex (`Gpu::cudnn`), which serialises every use.
unsafe impl Send for CudnnState {}

fn dims(op: &'static str, v: [usize; 4]) -> Result<[i32; 4]> {
    Ok([
        i32_of(op, v[0])?,
        i32_of(op, v[1])?,
        i32_of(op, v[2])?,
        i32_of(op, v[3])?,
    ])
}

impl CudnnState {
    /// Opens cuDNN on the device's stream, or says that its library is missing.
    pub(crate) fn open(gpu: &Gpu) -> Result<Self> {
        // SAFETY: only checks whether the library can be loaded (cudarc panics on first use of
        // a library it cannot load).
        if !unsafe { cudarc::cudnn::sys::is_culib_present() } {
            return Err(Error::MissingLibrary {
                lib: "cuDNN 9 (libcudnn.so.9)",
                hint: "put the folder that holds it (a PyTorch install's \
                       site-packages/nvidia/cudnn/lib, or a cuDNN install's lib) on \
                       LD_LIBRARY_PATH",
            });
        }
        let handle = Cudnn::new(gpu.stream.clone()).map_err(cudnn_err("cudnnCreate"))?;
        Ok(Self {
            handle,
            plans: HashMap::new(),
            workspace: None,
        })
    }

    /// The plan of `s`, made on first use, with a workspace large enough for it.
    fn plan(&mut self, gpu: &Gpu, s: ConvShape) -> Result<(&Plan, Option<&mut CudaSlice<u8>>)> {
        if !self.plans.contains_key(&s) {
            let plan = self.make_plan(s)?;
            self.plans.insert(s, plan);
        }
        let plan = &self.plans[&s];
        let have = self.workspace.as_ref().map_or(0, |w| w.len());
        if plan.workspace > have {
            self.workspace = None; // free the old one first
                                   // SAFETY: a workspace is scratch memory cuDNN writes before it reads.
            let ws = unsafe { gpu.stream.alloc::<u8>(plan.workspace) }
                .map_err(crate::device::driver("alloc workspace"))?;
            self.workspace = Some(ws);
        }
        Ok((plan, self.workspace.as_mut().filter(|w| !w.is_empty())))
    }

    fn make_plan(&self, s: ConvShape) -> Result<Plan> {
        let op = "conv2d plan";
        let nchw = cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let [ho, wo] = s.out_hw();
        let h = &self.handle;
        let x = h
            .create_4d_tensor::<f32>(nchw, dims(op, [s.n, s.ci, s.h, s.w])?)
            .map_err(cudnn_err(op))?;
        let w = h
            .create_4d_filter::<f32>(nchw, dims(op, [s.co, s.ci, s.kh, s.kw])?)
            .map_err(cudnn_err(op))?;
        let y = h
            .create_4d_tensor::<f32>(nchw, dims(op, [s.n, s.co, ho, wo])?)
            .map_err(cudnn_err(op))?;
        let (pad, stride) = (i32_of(op, s.pad)?, i32_of(op, s.stride)?);
        let mut conv = h
            .create_conv2d::<f32>(
                [pad, pad],
                [stride, stride],
                [1, 1],
                cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(cudnn_err(op))?;
        conv.set_math_type(cudnnMathType_t::CUDNN_FMA_MATH)
            .map_err(cudnn_err(op))?;
        let fwd_op = ConvForward {
            conv: &conv,
            x: &x,
            w: &w,
            y: &y,
        };
        let fwd = fwd_op.pick_algorithm().map_err(cudnn_err(op))?;
        let data_op = ConvBackwardData {
            conv: &conv,
            dx: &x,
            w: &w,
            dy: &y,
        };
        let data = match data_op.pick_algorithm().map_err(cudnn_err(op))? {
            DataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 => {
                DataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1
            }
            a => a,
        };
        let filter_op = ConvBackwardFilter {
            conv: &conv,
            x: &x,
            dw: &w,
            dy: &y,
        };
        let filter = match filter_op.pick_algorithm().map_err(cudnn_err(op))? {
            FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0
            | FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3 => {
                FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1
            }
            a => a,
        };
        let workspace = [
            fwd_op.get_workspace_size(fwd),
            data_op.get_workspace_size(data),
            filter_op.get_workspace_size(filter),
        ]
        .into_iter()
        .map(|r| r.map_err(cudnn_err(op)))
        .try_fold(0, |m, r| r.map(|b| m.max(b)))?;
        Ok(Plan {
            x,
            w,
            y,
            conv,
            fwd,
            data,
            filter,
            workspace,
        })
    }
}

impl Gpu {
    /// cuDNN, opened on first use (an error naming the library when it cannot be loaded).
    fn cudnn(&self) -> Result<MutexGuard<'_, CudnnState>> {
        let state = self
            .cudnn
            .get_or_init(|| CudnnState::open(self).map(Mutex::new));
        match state {
            Ok(m) => Ok(m.lock().unwrap_or_else(|p| p.into_inner())),
            Err(e) => Err(e.clone()),
        }
    }

    /// cuDNN's state for a convolution, or `None` where the convolutions run through im2col
    /// and cuBLAS (asked for, or cuDNN missing); another failure to open cuDNN is an error.
    fn conv_engine(&self) -> Result<Option<MutexGuard<'_, CudnnState>>> {
        if self.im2col_forced.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match self.cudnn() {
            Ok(st) => Ok(Some(st)),
            Err(Error::MissingLibrary { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether cuDNN runs the convolutions: `Ok` once it is open, else the error that says why
    /// not (the convolutions then run through im2col and cuBLAS). Opens it if need be.
    pub fn cudnn_status(&self) -> Result<()> {
        self.cudnn().map(drop)
    }

    /// `y = conv(x, w)` for shape `s`, into a new buffer.
    pub fn conv2d_fwd(
        &self,
        s: ConvShape,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let [_, _, ly] = s.lens();
        s.check("conv2d_fwd", x.len(), w.len(), ly)?;
        if s.lens().contains(&0) {
            return self.zeros::<f32>(ly); // no output, or an empty sum over no input channel
        }
        let mut y = self.output::<f32>(ly)?;
        let Some(mut st) = self.conv_engine()? else {
            self.conv2d_fwd_im2col(s, x, w, &mut y)?;
            return Ok(y);
        };
        let (p, ws) = st.plan(self, s)?;
        let op = ConvForward {
            conv: &p.conv,
            x: &p.x,
            w: &p.w,
            y: &p.y,
        };
        // SAFETY: the buffers hold at least the elements of the plan's descriptors (checked),
        // all f32 NCHW; the workspace holds at least the plan's need.
        unsafe { op.launch(p.fwd, ws, (1.0, 0.0), x, w, &mut y) }
            .map_err(cudnn_err("cudnnConvolutionForward"))?;
        Ok(y)
    }

    /// The input gradient of shape `s` from `dy`: written into `dx`, or added into it when
    /// `accumulate`.
    pub fn conv2d_bwd_data(
        &self,
        s: ConvShape,
        w: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        dx: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        s.check("conv2d_bwd_data", dx.len(), w.len(), dy.len())?;
        if s.lens().contains(&0) {
            // An empty batch or channel set: nothing to add, or an input gradient of zeros.
            if !accumulate {
                self.stream
                    .memset_zeros(dx)
                    .map_err(crate::device::driver("memset_zeros"))?;
            }
            return Ok(());
        }
        let Some(mut st) = self.conv_engine()? else {
            return self.conv2d_bwd_data_im2col(s, w, dy, dx, accumulate);
        };
        let (p, ws) = st.plan(self, s)?;
        let op = ConvBackwardData {
            conv: &p.conv,
            dx: &p.x,
            w: &p.w,
            dy: &p.y,
        };
        let beta = if accumulate { 1.0 } else { 0.0 };
        // SAFETY: as in `conv2d_fwd`.
        unsafe { op.launch(p.data, ws, (1.0, beta), dx, w, dy) }
            .map_err(cudnn_err("cudnnConvolutionBackwardData"))
    }

    /// The weight gradient of shape `s` from `x` and `dy`, into a new buffer.
    pub fn conv2d_bwd_filter(
        &self,
        s: ConvShape,
        x: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let [_, lw, _] = s.lens();
        s.check("conv2d_bwd_filter", x.len(), lw, dy.len())?;
        if s.lens().contains(&0) {
            return self.zeros::<f32>(lw); // a sum over no image
        }
        let mut dw = self.output::<f32>(lw)?;
        let Some(mut st) = self.conv_engine()? else {
            self.conv2d_bwd_filter_im2col(s, x, dy, &mut dw)?;
            return Ok(dw);
        };
        let (p, ws) = st.plan(self, s)?;
        let op = ConvBackwardFilter {
            conv: &p.conv,
            x: &p.x,
            dw: &p.w,
            dy: &p.y,
        };
        // SAFETY: as in `conv2d_fwd`.
        unsafe { op.launch(p.filter, ws, (1.0, 0.0), x, &mut dw, dy) }
            .map_err(cudnn_err("cudnnConvolutionBackwardFilter"))?;
        Ok(dw)
    }
}
