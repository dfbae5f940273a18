//! Tensors and ops of lucir-rs: row-major f32/f64 storage on the CPU (f32 on a CUDA device,
//! [`Device`]), NCHW images, no autograd.
//!
//! Shape legend used by every op in this crate:
//! - `N` images in a batch, `C` channels, `H`×`W` spatial size (NCHW, row-major);
//! - `B` rows of a feature matrix, `D` feature width, `M`, `K`, `N` for gemm operands;
//! - `Co`/`Ci` output/input channels and `KH`×`KW` the kernel of a convolution.
//!
//! Every fast op has a naive `_ref` twin beside it that tests compare against. Ops are
//! generic over [`Float`] (f32 for training, f64 for gradient checks) and return
//! [`Error`] on shape mismatches instead of panicking. Work is spread over the images
//! of a batch with rayon; reductions are split into a fixed number of chunks and summed in
//! order, so a result depends only on the inputs and the rayon thread count.

mod alloc;
mod batch_norm;
mod conv2d;
mod cpu;
mod cuda_ops;
mod device;
mod elementwise;
mod error;
mod float;
mod gemm;
mod head_losses;
mod images;
mod linear;
mod normalize;
mod pool;
mod rows;
mod sgd;
mod simd;
pub use simd::kernel_path;
mod softmax;
mod tensor;
mod topk;
mod workers;

pub use alloc::{retain_freed_memory, HugePages};
pub use batch_norm::{
    batch_norm_bwd_ref, batch_norm_eval, batch_norm_eval_add, batch_norm_eval_bwd, batch_norm_ref,
    batch_norm_stats, batch_norm_train, batch_norm_train_add, batch_norm_train_bwd,
    batch_norm_update_running, channel_map, channel_map_add, BatchNormStats, ChannelMap,
};
pub use conv2d::{
    conv2d, conv2d_bwd, conv2d_bwd_add, conv2d_bwd_data, conv2d_bwd_ref, conv2d_bwd_weight,
    conv2d_mapped, conv2d_mapped_bwd, conv2d_ref, conv3x3, force_avx2_convolutions,
    force_position_tiles, precision, set_conv3x3, set_precision, Conv2dGeometry, Conv3x3,
    Precision,
};
pub use cpu::{Avx2Fma, Avx512, Avx512Bf16};
pub use device::{CudaIndices, CudaStorage, Device, Gpu};
pub use elementwise::{add, add_relu, relu, relu_bwd};
pub use error::{Error, Result};
pub use float::Float;
pub use gemm::{gemm, gemm_ref, matmul, Transpose};
pub use head_losses::{
    feature_distill, feature_distill_bwd, kd, kd_bwd, margin_rank, margin_rank_bwd, MarginRankPairs,
};
pub use images::{DeviceImages, ImagePick, RenderArgs};
pub use linear::{add_row_bias, column_sums};
pub use normalize::{l2_normalize_rows, l2_normalize_rows_bwd, NORM_EPS};
pub use pool::{
    global_avg_pool, global_avg_pool_bwd, max_pool2d, max_pool2d_bwd, max_pool2d_ref,
    MaxPoolArgmax, MaxPoolGeometry,
};
pub use rows::{concat_rows, dot, scale_by, slice_cols, slice_cols_bwd, split_rows};
pub use sgd::{sgd_update, sgd_update_many, SgdHyper, SgdTarget};
pub use softmax::{cross_entropy, cross_entropy_bwd, log_softmax_rows, log_softmax_rows_bwd};
pub use tensor::Tensor;
pub use topk::{topk_rows, topk_rows_ref};
pub use workers::{with_workers_awake, with_workers_awake_on};

/// Number of chunks a batch reduction is split into: one per rayon thread, at most one per item.
///
/// Keeping this a pure function of the thread count makes the summation order, and so the
/// floating-point result, repeatable for a given thread count.
pub fn reduction_chunks(items: usize) -> usize {
    rayon::current_num_threads().clamp(1, items.max(1))
}
