//! Elementwise ops and the matrix product on the device — the launchers of
//! `kernels/elementwise.cu` and the cuBLAS `sgemm` behind [`Gpu::gemm`]. Inputs and outputs are
//! device buffers; nothing crosses to the host.

use std::sync::Arc;

use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, DevicePtr, DevicePtrMut, PushKernelArg,
};

use crate::device::{driver, grid_stride, i32_of, load};
use crate::kernels::ELEMENTWISE;
use crate::{check_at_least, Error, Gpu, Result};

/// The module's functions, resolved once when the device is opened.
#[derive(Debug)]
pub(crate) struct Kernels {
    add: CudaFunction,
    add_relu: CudaFunction,
    relu: CudaFunction,
    relu_bwd: CudaFunction,
    axpy: CudaFunction,
}

impl Kernels {
    pub(crate) fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let [add, add_relu, relu, relu_bwd, axpy] = load(ctx, &ELEMENTWISE)?;
        Ok(Self {
            add,
            add_relu,
            relu,
            relu_bwd,
            axpy,
        })
    }
}

/// cuBLAS's configuration of the row-major `C = op(A)·op(B)` of [`Gpu::gemm`] (`A` M×K, `B`
/// K×N as used): cuBLAS is column-major, so it computes `Cᵀ = op(B)ᵀ·op(A)ᵀ`, with our `B` as
/// its first operand.
fn gemm_config(
    op: &'static str,
    [m, n, k]: [usize; 3],
    (ta, tb): (bool, bool),
    accumulate: bool,
) -> Result<GemmConfig<f32>> {
    let (mi, ni, ki) = (i32_of(op, m)?, i32_of(op, n)?, i32_of(op, k)?);
    Ok(GemmConfig {
        transa: op_of(tb),
        transb: op_of(ta),
        m: ni,
        n: mi,
        k: ki,
        alpha: 1.0f32,
        // Leading dimensions of the stored (row-major) matrices.
        lda: if tb { ki } else { ni },
        ldb: if ta { mi } else { ki },
        beta: if accumulate { 1.0f32 } else { 0.0 },
        ldc: ni,
    })
}

/// Whether an operand of [`Gpu::gemm`] is used as stored or transposed.
fn op_of(transposed: bool) -> cublasOperation_t {
    if transposed {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

impl Gpu {
    /// `a ∘ b` elementwise into a new buffer of `n` elements, by `func` (`add` or `add_relu`).
    fn zip(
        &self,
        op: &'static str,
        func: &CudaFunction,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        check_at_least(op, n, &[a.len(), b.len()])?;
        let mut out = self.output::<f32>(n)?;
        let n64 = n as i64;
        let mut l = self.stream.launch_builder(func);
        l.arg(a).arg(b).arg(&n64).arg(&mut out);
        // SAFETY: `a`, `b` hold at least n floats (checked), `out` n; each thread touches its
        // own elements below n.
        unsafe { l.launch(grid_stride(n)) }.map_err(driver(op))?;
        Ok(out)
    }

    /// `a + b` over the first `n` elements.
    pub fn add(&self, a: &CudaSlice<f32>, b: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
        self.zip("add", &self.elementwise.add, a, b, n)
    }

    /// `max(a + b, 0)` over the first `n` elements.
    pub fn add_relu(
        &self,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        n: usize,
    ) -> Result<CudaSlice<f32>> {
        self.zip("add_relu", &self.elementwise.add_relu, a, b, n)
    }

    /// `max(x, 0)` over the first `n` elements.
    pub fn relu(&self, x: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
        check_at_least("relu", n, &[x.len()])?;
        let mut out = self.output::<f32>(n)?;
        let n64 = n as i64;
        let mut l = self.stream.launch_builder(&self.elementwise.relu);
        l.arg(x).arg(&n64).arg(&mut out);
        // SAFETY: `x` holds at least n floats (checked), `out` n.
        unsafe { l.launch(grid_stride(n)) }.map_err(driver("relu"))?;
        Ok(out)
    }

    /// `g = g · [y > 0]` in place over the first `n` elements: the ReLU's backward from its
    /// output `y`.
    pub fn relu_bwd(&self, y: &CudaSlice<f32>, g: &mut CudaSlice<f32>, n: usize) -> Result<()> {
        check_at_least("relu_bwd", n, &[y.len(), g.len()])?;
        let n64 = n as i64;
        let mut l = self.stream.launch_builder(&self.elementwise.relu_bwd);
        l.arg(y).arg(&n64).arg(g);
        // SAFETY: `y` and `g` hold at least n floats (checked).
        unsafe { l.launch(grid_stride(n)) }.map_err(driver("relu_bwd"))?;
        Ok(())
    }

    /// `y += alpha·x` in place over the first `n` elements (`alpha = 1` adds exactly as the
    /// CPU does).
    pub fn axpy(
        &self,
        alpha: f32,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        n: usize,
    ) -> Result<()> {
        check_at_least("axpy", n, &[x.len(), y.len()])?;
        let n64 = n as i64;
        let mut l = self.stream.launch_builder(&self.elementwise.axpy);
        l.arg(x).arg(&n64).arg(&alpha).arg(y);
        // SAFETY: `x` and `y` hold at least n floats (checked).
        unsafe { l.launch(grid_stride(n)) }.map_err(driver("axpy"))?;
        Ok(())
    }

    /// `C = op(A)·op(B)` (or `C += …` when `accumulate`), row-major like lucir-tensor's
    /// `gemm`: `A` holds M×K (K×M when `ta`), `B` K×N (N×K when `tb`), `C` M×N. cuBLAS is
    /// column-major, so this computes `Cᵀ = op(B)ᵀ·op(A)ᵀ`, which is the same memory.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        [m, n, k]: [usize; 3],
        a: &CudaSlice<f32>,
        ta: bool,
        b: &CudaSlice<f32>,
        tb: bool,
        c: &mut CudaSlice<f32>,
        accumulate: bool,
    ) -> Result<()> {
        let op = "gemm";
        if a.len() < m * k || b.len() < k * n || c.len() < m * n {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "M={m} N={n} K={k} needs A {} B {} C {} elements, got {} {} {}",
                    m * k,
                    k * n,
                    m * n,
                    a.len(),
                    b.len(),
                    c.len()
                ),
            });
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            // An empty sum: C = 0 (or C unchanged when accumulating), without asking cuBLAS.
            if !accumulate {
                self.stream
                    .memset_zeros(c)
                    .map_err(driver("memset_zeros"))?;
            }
            return Ok(());
        }
        let cfg = gemm_config(op, [m, n, k], (ta, tb), accumulate)?;
        // SAFETY: the buffers hold at least the elements the shapes need (checked above), and
        // the leading dimensions are those of the stored matrices.
        unsafe { self.blas.gemm(cfg, b, a, c) }.map_err(|e| Error::Driver {
            op: "cublasSgemm",
            detail: e.to_string(),
        })
    }

    /// `batches` products as [`Gpu::gemm`] (`accumulate` false) in one call: product `i` reads
    /// `A` at element `i·stride_a` of `a`, `B` at `i·stride_b`, and writes `C` at `i·stride_c`
    /// (a stride of 0 shares `A` or `B` between the products; the `C`s must not overlap). With
    /// K = 0 every product is an empty sum, and all of `c` is zeroed. Buffers or views.
    pub fn gemm_batched<A: DevicePtr<f32>, B: DevicePtr<f32>, C: DevicePtrMut<f32>>(
        &self,
        [m, n, k]: [usize; 3],
        (a, ta, stride_a): (&A, bool, usize),
        (b, tb, stride_b): (&B, bool, usize),
        (c, stride_c): (&mut C, usize),
        batches: usize,
    ) -> Result<()> {
        let op = "gemm_batched";
        let last = batches.saturating_sub(1);
        let reach = |stride: usize, size: usize| {
            let r = last.checked_mul(stride).and_then(|s| s.checked_add(size));
            r.ok_or_else(|| Error::Shape {
                op,
                detail: format!("{batches} products with a stride of {stride}: too large"),
            })
        };
        let need = [
            reach(stride_a, m * k)?,
            reach(stride_b, k * n)?,
            reach(stride_c, m * n)?,
        ];
        if batches > 1 && stride_c < m * n {
            return Err(Error::Shape {
                op,
                detail: format!("products of {m}×{n} a stride of {stride_c} apart overlap"),
            });
        }
        if batches > 0 && (a.len() < need[0] || b.len() < need[1] || c.len() < need[2]) {
            return Err(Error::Shape {
                op,
                detail: format!(
                    "{batches} products of M={m} N={n} K={k} with strides {stride_a}, \
                     {stride_b}, {stride_c} need A {} B {} C {} elements, got {} {} {}",
                    need[0],
                    need[1],
                    need[2],
                    a.len(),
                    b.len(),
                    c.len()
                ),
            });
        }
        if batches == 0 || m == 0 || n == 0 || k == 0 {
            if batches > 0 && m * n > 0 {
                // Empty sums: every C is zero.
                self.stream
                    .memset_zeros(c)
                    .map_err(driver("memset_zeros"))?;
            }
            return Ok(());
        }
        let stride = |s: usize| {
            i64::try_from(s).map_err(|_| Error::Shape {
                op,
                detail: format!("stride {s} is too large for cuBLAS"),
            })
        };
        let cfg = StridedBatchedConfig {
            gemm: gemm_config(op, [m, n, k], (ta, tb), false)?,
            batch_size: i32_of(op, batches)?,
            // cuBLAS's A is our B and its B our A (see `gemm_config`).
            stride_a: stride(stride_b)?,
            stride_b: stride(stride_a)?,
            stride_c: stride(stride_c)?,
        };
        // SAFETY: every product's matrices lie inside the buffers (checked above), and the
        // leading dimensions are those of the stored matrices.
        unsafe { self.blas.gemm_strided_batched(cfg, b, a, c) }.map_err(|e| Error::Driver {
            op: "cublasSgemmStridedBatched",
            detail: e.to_string(),
        })
    }

    /// The first `na` elements of `a` then the first `nb` of `b`, in a new buffer (two
    /// device-to-device copies).
    pub fn concat(
        &self,
        (a, na): (&CudaSlice<f32>, usize),
        (b, nb): (&CudaSlice<f32>, usize),
    ) -> Result<CudaSlice<f32>> {
        check_at_least("concat", na, &[a.len()])?;
        check_at_least("concat", nb, &[b.len()])?;
        let mut out = self.output::<f32>(na + nb)?;
        if na > 0 {
            let mut dst = out.slice_mut(..na);
            self.stream
                .memcpy_dtod(&a.slice(..na), &mut dst)
                .map_err(driver("memcpy_dtod"))?;
        }
        if nb > 0 {
            let mut dst = out.slice_mut(na..na + nb);
            self.stream
                .memcpy_dtod(&b.slice(..nb), &mut dst)
                .map_err(driver("memcpy_dtod"))?;
        }
        Ok(out)
    }

    /// Elements `[0, na)` and `[na, na + nb)` of `x`, in two new buffers.
    pub fn split(
        &self,
        x: &CudaSlice<f32>,
        (na, nb): (usize, usize),
    ) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        check_at_least("split", na + nb, &[x.len()])?;
        let (mut a, mut b) = (self.output::<f32>(na)?, self.output::<f32>(nb)?);
        if na > 0 {
            let mut dst = a.slice_mut(..na);
            self.stream
                .memcpy_dtod(&x.slice(..na), &mut dst)
                .map_err(driver("memcpy_dtod"))?;
        }
        if nb > 0 {
            let mut dst = b.slice_mut(..nb);
            self.stream
                .memcpy_dtod(&x.slice(na..na + nb), &mut dst)
                .map_err(driver("memcpy_dtod"))?;
        }
        Ok((a, b))
    }
}
